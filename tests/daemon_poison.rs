//! Poison pills with the real binary: a file whose header parse is in flight when `ldae serve` is killed with
//! SIGKILL is quarantined on restart as `crashed_parser` (once, never read again) while a good series goes through;
//! a parse or a stage that runs past its limit (`[jobs.stage_timeout_secs]`) is ended — the file quarantined as
//! `parser_timeout`, the job retried and dead-lettered — and the daemon keeps serving.
//!
//! The poison is a legal DICOM file with a million private elements, so its header parse lasts long enough to
//! kill the daemon during it (the test polls the store's `parsing` table and kills the moment the row appears).

mod daemon_util;

use std::time::{Duration, Instant};

use daemon_util::*;

fn quarantine(env: &Env) -> Vec<serde_json::Value> {
    let (code, out, err) = env.ldae(&["quarantine", "list", "--all", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).expect("json").as_array().cloned().unwrap_or_default()
}

#[test]
fn a_file_in_flight_at_sigkill_is_quarantined_once_and_the_good_series_goes_through() {
    let env = Env::new(1.0, 0.3, "");
    let src = axial_files();
    let poison = slow_to_parse(&src[0], 71, 1_000_000);
    let mut daemon = env.start(0);
    std::fs::write(env.path("incoming/poison.dcm"), &poison).expect("write");
    let t0 = Instant::now();
    let in_flight = wait_for_fast(60.0, || db_count(&env, "SELECT COUNT(*) FROM parsing") > 0);
    assert!(in_flight, "the parse of the poison file was never recorded as in flight\n{}", env.logs());
    daemon.kill().expect("SIGKILL");
    let _ = daemon.wait();
    println!("killed {:.1} s after the drop, with the parse in flight", t0.elapsed().as_secs_f64());

    let mut daemon = env.start(1);
    std::fs::create_dir_all(env.path("incoming/good")).expect("mkdir");
    for (i, f) in src.iter().take(8).enumerate() {
        std::fs::write(env.path(&format!("incoming/good/{i}.dcm")), rewrite_uids(f, 72, i)).expect("write");
    }
    let uid = series_uid(72);
    let done = wait_for(60.0, || {
        let st = env.status()?;
        let s = st["series"].as_array()?.iter().find(|s| s["series_uid"] == uid)?.clone();
        (s["state"] == "skipped" && s["volumes"] == 1 && st["quarantined"] == 1).then_some(st)
    });
    let Some(st) = done else { panic!("status {:?}\n{}", env.status(), env.logs()) };
    assert_eq!(st["instances"], 8, "the poison file must not have been taken in");
    let q = quarantine(&env);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["reason"], "crashed_parser", "{q:?}");
    assert!(q[0]["detail"].as_str().unwrap_or("").contains("crashed the parser"), "{q:?}");
    assert_eq!(q[0]["original_path"], env.path("incoming/poison.dcm").display().to_string());
    let held = std::path::PathBuf::from(q[0]["path"].as_str().expect("path"));
    assert!(held.starts_with(env.path("quarantine/crashed_parser")), "{held:?}");
    assert_eq!(std::fs::read(&held).expect("held file").len(), poison.len());
    assert!(!env.path("incoming/poison.dcm").exists());
    assert_eq!(db_count(&env, "SELECT COUNT(*) FROM parsing"), 0);
    assert!(env.logs().contains("it crashed the parser"), "{}", env.logs());

    // Another restart: nothing is quarantined twice, nothing re-read.
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
    let mut daemon = env.start(2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(quarantine(&env).len(), 1);
    assert_eq!(env.status().expect("status")["instances"], 8);
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
}

#[test]
fn a_parse_or_a_stage_past_its_time_limit_is_ended_and_the_daemon_keeps_serving() {
    let env = Env::new(1.0, 0.3, "[jobs.stage_timeout_secs]\nparse = 0.05\nconvert = 0.001\n");
    let src = axial_files();
    let mut daemon = env.start(0);
    std::fs::write(env.path("incoming/slow.dcm"), slow_to_parse(&src[0], 73, 1_000_000)).expect("write");
    std::fs::create_dir_all(env.path("incoming/s")).expect("mkdir");
    for (i, f) in src.iter().take(8).enumerate() {
        std::fs::write(env.path(&format!("incoming/s/{i}.dcm")), rewrite_uids(f, 74, i)).expect("write");
    }
    let uid = series_uid(74);
    let done = wait_for(60.0, || {
        let st = env.status()?;
        let s = st["series"].as_array()?.iter().find(|s| s["series_uid"] == uid)?.clone();
        (s["state"] == "failed" && st["quarantined"] == 1).then_some(st)
    });
    let Some(st) = done else { panic!("status {:?}\n{}", env.status(), env.logs()) };
    let q = quarantine(&env);
    assert_eq!(q[0]["reason"], "parser_timeout", "{q:?}");
    assert!(q[0]["detail"].as_str().unwrap_or("").contains("within 0.05 s"), "{q:?}");
    let err = st["last_errors"].as_array().expect("errors").iter().find(|j| j["kind"] == "convert").expect("convert");
    assert_eq!(err["state"], "dead", "{err}");
    assert_eq!(err["attempts"], 3, "retried up to jobs.max_attempts: {err}");
    assert!(err["last_error"].as_str().unwrap_or("").contains("timed out after 0.001 s"), "{err}");
    // No result of an abandoned stage is recorded.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(db_count(&env, "SELECT COUNT(*) FROM volumes"), 0);
    assert!(env.logs().contains("stage timed out"), "{}", env.logs());
    assert_eq!(terminate(&mut daemon, 20.0), Some(0), "{}", env.logs());
}

/// Poll `f` every 5 ms until true or `secs` pass.
fn wait_for_fast(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}
