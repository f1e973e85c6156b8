//! Delivery of synthetic series to a real PACS (Orthanc on 127.0.0.1) by the real daemon, in one run that shares
//! the expensive part (encoding two sessions of the simulated patient): the two synthetic timepoints the policy
//! makes arrive in Orthanc exactly once, marked, and `ldae synthetic list` says delivered, with the
//! `synthetic_written` and `synthetic_delivered` hooks raised; then with `sop_class = "mr"` an explicit fill
//! arrives as one instance per slice although the daemon is SIGKILLed during its delivery (restart: one copy per
//! instance), and `ldae synthetic resend` adds nothing to Orthanc; last, a PACS that refuses our calling AE title
//! ends the delivery after one attempt, the timepoint `failed` with the rejection as its reason; a port where
//! nothing listens is retried by the job queue and given up after `jobs.max_attempts`; resent to the real PACS,
//! the failed timepoint is delivered.
//! Needs Orthanc and the longitudinal test series (tests/data/shared); tests/common `tool`/`shared_data` fail the
//! test under LDAE_REQUIRE_ALL=1 when they are missing.

mod common;
mod daemon_util;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::orthanc::Orthanc;
use daemon_util::*;

const MR_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

fn synthetic_on(env: &Env, date: &str) -> Option<serde_json::Value> {
    synthetic_list(env).into_iter().find(|s| s["target_date"] == date)
}

/// The `[delivery]` and `[hooks]` sections of the config.
fn extra(pacs: &str, sop_class: &str, hook: &Path) -> String {
    format!(
        "[delivery]\npacs = \"{pacs}\"\nsop_class = \"{sop_class}\"\n\
         [delivery.retry]\nmax_attempts = 2\ninitial_delay = 200\nmax_delay = 400\n[hooks]\ncommands = [\"{}\"]\n",
        hook.display()
    )
}

/// Orthanc's series with this SeriesInstanceUID: its instance ids.
fn orthanc_series(o: &Orthanc, uid: &str) -> Vec<String> {
    let all = o.get("/series?expand").expect("/series");
    let s = all.as_array().expect("series").iter().find(|s| s["MainDicomTags"]["SeriesInstanceUID"] == uid);
    let Some(s) = s else { return vec![] };
    s["Instances"].as_array().expect("instances").iter().filter_map(|i| i.as_str().map(String::from)).collect()
}

fn delivery_secs(env: &Env) -> Vec<f64> {
    let mut out = Vec::new();
    for n in 0..6 {
        let log = std::fs::read_to_string(env.path(&format!("serve-{n}.log"))).unwrap_or_default();
        // Strip ANSI styling (the log's fields may be coloured).
        let mut plain = String::with_capacity(log.len());
        let mut esc = false;
        for c in log.chars() {
            match (esc, c) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => plain.push(c),
            }
        }
        for l in plain.lines().filter(|l| l.contains("synthetic series delivered")) {
            if let Some(v) = l.split("secs=").nth(1).and_then(|v| v.split_whitespace().next()) {
                out.extend(v.parse::<f64>().ok());
            }
        }
    }
    out
}

#[test]
fn synthetic_series_reach_the_pacs_once_across_a_kill_a_resend_and_a_refusal() {
    let Some(root) = common::shared_data("testdata/longitudinal/dicom/sub-01") else { return };
    if !common::tool("Orthanc", &["--version"]) {
        return;
    }
    let t0 = Instant::now();
    let pacs = Orthanc::start(serde_json::json!({}));
    let to = format!("ORTHANC@127.0.0.1:{}", pacs.dicom);
    let mut env = Env::with_model_extra(1.0, 0.3, "");
    let hook = env.path("hook.sh");
    let events = env.path("events.jsonl");
    std::fs::write(&hook, format!("#!/bin/sh\ncat >> '{}'\n", events.display())).expect("hook");
    let mut perms = std::fs::metadata(&hook).expect("hook").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).expect("chmod hook");
    env.set_extra(&extra(&to, "sc", &hook));
    copy_session(&root.join("ses-20190314"), &env.path("incoming/a"));
    copy_session(&root.join("ses-20220310"), &env.path("incoming/c"));
    let mut daemon = env.start(0);

    // (a) The policy's two timepoints (one multi-frame SC each) arrive, once, and are marked.
    let delivered = wait_for(400.0, || {
        let s = synthetic_list(&env);
        (s.len() == 2 && s.iter().all(|x| x["state"] == "delivered")).then_some(s)
    });
    let Some(auto) = delivered else {
        panic!("not delivered: {:?}\n{}\n{}", synthetic_list(&env), env.logs(), pacs.log())
    };
    println!("two timepoints encoded, filled and delivered after {:.1} s", t0.elapsed().as_secs_f64());
    assert_eq!(pacs.count("/series"), 2);
    assert_eq!(pacs.count("/instances"), 2);
    for s in &auto {
        let uid = s["dicom_series_uid"].as_str().expect("series uid");
        let ids = orthanc_series(&pacs, uid);
        assert_eq!(ids.len(), 1, "{uid}: {ids:?}");
        let tags = pacs.get(&format!("/instances/{}/tags?short", ids[0])).expect("tags");
        assert!(tags["0008,103e"].as_str().is_some_and(|d| d.starts_with("SYNTHETIC")), "{}", tags["0008,103e"]);
        // Orthanc 1.10.1 keeps Synthetic Data (sent in Explicit VR, so with its CS value).
        assert_eq!(tags["0008,001c"].as_str().map(str::trim), Some("YES"), "Synthetic Data");
        assert!(s["state_note"].as_str().is_some_and(|n| n.contains(&to)), "{s}");
    }
    assert_eq!(db_count(&env, "SELECT COUNT(*) FROM deliveries"), 2);
    let (code, out, _) = env.ldae(&["synthetic", "list"]);
    assert_eq!((code, out.matches("delivered").count()), (0, 2), "{out}");
    let hooks = wait_for(30.0, || {
        let t = std::fs::read_to_string(&events).unwrap_or_default();
        let n = |e: &str| t.matches(&format!("\"event\":\"{e}\"")).count();
        (n("synthetic_written") == 2 && n("synthetic_delivered") == 2).then_some(())
    });
    assert!(hooks.is_some(), "hook events: {}", std::fs::read_to_string(&events).unwrap_or_default());
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());

    // (b) + (d) MR Image Storage, one file per slice; SIGKILL once the first instance is confirmed. Orthanc takes
    // ≈ 25 ms per instance here (88 slices ≈ 2–2.5 s) and the test polls every 5 ms, so the kill lands inside the
    // association; the assertion below checks that it did.
    env.set_extra(&extra(&to, "mr", &hook));
    let mut daemon = env.start(1);
    let (code, _, err) = env.ldae(&["fill", "SIMLDAE01", "--date", "2020-09-01"]);
    assert_eq!(code, 0, "{err}");
    let mr_rows = format!(
        "SELECT COUNT(*) FROM deliveries d JOIN synthetic_scans s ON s.id = d.synthetic_ref WHERE s.sop_class = '{MR_IMAGE}'"
    );
    let end = Instant::now() + std::time::Duration::from_secs(300);
    while db_count(&env, &mr_rows) == 0 {
        assert!(Instant::now() < end, "no MR delivery began: {}", env.logs());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    signal(&daemon, libc::SIGKILL);
    let _ = daemon.wait();
    let at_kill = db_count(&env, &mr_rows);
    let mr = synthetic_on(&env, "2020-09-01").expect("the MR timepoint");
    let slices = files_under(&PathBuf::from(mr["dicom_dir"].as_str().expect("dicom_dir"))).len();
    println!("killed with {at_kill} of {slices} MR instances confirmed");
    assert!(slices > 10 && (at_kill as usize) < slices, "the kill landed inside the delivery: {at_kill}/{slices}");
    assert_eq!(mr["state"], "written");

    let mut daemon = env.start(2);
    let done = wait_for(120.0, || synthetic_on(&env, "2020-09-01").filter(|s| s["state"] == "delivered"));
    assert!(done.is_some(), "not delivered after the restart: {}", env.logs());
    let uid = mr["dicom_series_uid"].as_str().expect("series uid");
    let ids = orthanc_series(&pacs, uid);
    assert_eq!(ids.len(), slices, "one instance per slice, each once");
    assert_eq!(pacs.count("/instances"), 2 + slices);
    assert_eq!(pacs.count("/series"), 3);
    let tags = pacs.get(&format!("/instances/{}/tags?short", ids[0])).expect("tags");
    assert_eq!(tags["0008,0016"], MR_IMAGE);
    assert_eq!(db_count(&env, &mr_rows), slices as i64, "one confirmation per instance");

    // `ldae synthetic resend`: a new job that sends everything again; Orthanc keeps its one copy.
    let id = mr["id"].as_i64().expect("id");
    let (code, out, err) = env.ldae(&["synthetic", "resend", &id.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("resend json");
    assert_eq!(r["enqueued"], true, "{r}");
    let key = r["job"]["key"].as_str().expect("job key").to_string();
    assert!(key.ends_with(":resend-1"), "{key}");
    let resent = format!("SELECT COUNT(*) FROM jobs WHERE key = '{key}' AND state = 'done'");
    assert!(wait_for(60.0, || (db_count(&env, &resent) == 1).then_some(())).is_some(), "{}", env.logs());
    let again = format!("SELECT COUNT(*) FROM deliveries WHERE delivery_key = '{key}'");
    assert_eq!(db_count(&env, &again), slices as i64, "everything sent again");
    assert_eq!(pacs.count("/instances"), 2 + slices, "no second copy");
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());

    // (c) A PACS that does not know our calling AE title rejects the association: one attempt, then failed.
    let strict = Orthanc::start(serde_json::json!({
        "DicomAlwaysAllowStore": false, "DicomAlwaysAllowEcho": false, "DicomAlwaysAllowFind": false,
        "DicomAlwaysAllowMove": false,
        "DicomModalities": {"other": {"AET": "OTHER", "Host": "127.0.0.1", "Port": 11112, "AllowStore": true}},
    }));
    env.set_extra(&extra(&format!("ORTHANC@127.0.0.1:{}", strict.dicom), "sc", &hook));
    let mut daemon = env.start(3);
    // `ldae fill --wait` waits for the delivery too, and says it failed.
    let (code, _, err) = env.ldae(&["fill", "SIMLDAE01", "--date", "2021-09-01", "--wait", "--timeout", "120"]);
    assert_eq!(code, 2, "an error: {err}");
    assert!(err.contains("written but not delivered") && err.contains("association rejected"), "{err}");
    let failed = wait_for(120.0, || synthetic_on(&env, "2021-09-01").filter(|s| s["state"] == "failed"));
    let Some(failed) = failed else { panic!("not failed: {:?}\n{}", synthetic_on(&env, "2021-09-01"), env.logs()) };
    let note = failed["state_note"].as_str().expect("a reason");
    assert!(note.contains("association rejected") && note.to_lowercase().contains("calling ae title"), "{note}");
    let dead = "SELECT COUNT(*) FROM jobs WHERE kind = 'deliver' AND state = 'dead' AND attempts = 1";
    assert_eq!(db_count(&env, dead), 1, "dead after one attempt");
    // No retry follows (the job stays dead), and nothing reached the strict PACS.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(db_count(&env, dead), 1, "still dead after one attempt");
    assert_eq!(
        db_count(&env, "SELECT COUNT(*) FROM jobs WHERE kind = 'deliver' AND state <> 'done' AND state <> 'dead'"),
        0
    );
    assert_eq!(strict.count("/instances"), 0);
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());

    // (e) Nothing listening is transient: the job queue retries it after [delivery.retry]'s backoff, and its
    // last attempt (max_attempts = 2, below jobs.max_attempts = 3) marks the timepoint failed. (f) Resent to the real PACS, it is delivered.
    let silent = format!("ORTHANC@127.0.0.1:{}", common::orthanc::free_port());
    env.set_extra(&extra(&silent, "sc", &hook));
    let mut daemon = env.start(4);
    let id = failed["id"].as_i64().expect("id").to_string();
    let (code, _, err) = env.ldae(&["synthetic", "resend", &id]);
    assert_eq!(code, 0, "{err}");
    let gave_up = wait_for(60.0, || {
        synthetic_on(&env, "2021-09-01").filter(|s| s["state_note"].as_str().is_some_and(|n| n.contains("gave up")))
    });
    let Some(gave_up) = gave_up else { panic!("no give-up: {}", env.logs()) };
    let note = gave_up["state_note"].as_str().unwrap_or_default();
    assert!(note.contains("after 2 attempt(s)") && note.contains("cannot connect"), "{note}");
    assert_eq!(gave_up["state"], "failed");
    let retried = "SELECT COUNT(*) FROM jobs WHERE key LIKE '%:resend-1' AND state = 'dead' AND attempts = 2";
    assert_eq!(db_count(&env, retried), 1, "two attempts, then dead");
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());
    env.set_extra(&extra(&to, "sc", &hook));
    let mut daemon = env.start(5);
    let (code, out, err) = env.ldae(&["synthetic", "resend", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(":resend-2"), "{out}");
    let ok = wait_for(60.0, || synthetic_on(&env, "2021-09-01").filter(|s| s["state"] == "delivered"));
    assert!(ok.is_some(), "{}", env.logs());
    assert_eq!(pacs.count("/series"), 4);
    assert_eq!(pacs.count("/instances"), 3 + slices);
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());
    let secs = delivery_secs(&env);
    println!("delivery times (s): {secs:?}; whole test {:.1} s", t0.elapsed().as_secs_f64());
}
