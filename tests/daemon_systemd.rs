//! systemd integration with the real binary: READY/STATUS/WATCHDOG/RELOADING/STOPPING arrive on a real
//! `NOTIFY_SOCKET` datagram socket; the unit file passes `systemd-analyze verify`; intake pauses below the disk
//! watermark and SIGHUP reloads the config (here: lowering the watermark) without a restart, in polling mode.
//!
//! A missing tool or data file goes through `common::require` (`tool`, `shared_data`, `python_modules`), which
//! fails the test under `LDAE_REQUIRE_ALL=1` (CI) and only skips, loudly, without it.

mod common;
mod daemon_util;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use daemon_util::*;

/// Collect notify messages until `pred` holds for the collected set (or `secs` pass).
fn collect_until(sock: &UnixDatagram, got: &mut Vec<String>, secs: f64, pred: impl Fn(&[String]) -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < end {
        if pred(got) {
            return true;
        }
        if let Ok(n) = sock.recv(&mut buf) {
            got.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string));
        }
    }
    pred(got)
}

fn has(got: &[String], prefix: &str) -> bool {
    got.iter().any(|l| l.starts_with(prefix))
}

#[test]
fn notifies_ready_status_watchdog_reloading_and_stopping() {
    let env = Env::new(2.0, 0.3, "");
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut daemon =
        env.start_with(0, &[("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8")), ("WATCHDOG_USEC", "1000000")]);
    let mut got = Vec::new();
    let ok = collect_until(&sock, &mut got, 20.0, |g| has(g, "READY=1") && has(g, "STATUS=") && has(g, "WATCHDOG=1"));
    assert!(ok, "{got:?}\n{}", env.logs());
    got.clear();
    signal(&daemon, libc::SIGHUP);
    assert!(collect_until(&sock, &mut got, 10.0, |g| has(g, "RELOADING=1") && has(g, "READY=1")), "{got:?}");
    got.clear();
    signal(&daemon, libc::SIGTERM);
    assert!(collect_until(&sock, &mut got, 10.0, |g| has(g, "STOPPING=1")), "{got:?}");
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if !common::tool("systemd-analyze", &["--version"]) {
        return;
    }
    let env = Env::new(2.0, 0.3, "");
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ldae.service")).expect("unit");
    for key in
        ["Type=notify", "WatchdogSec=", "ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=", "User="]
    {
        assert!(unit.contains(key), "unit lacks {key}");
    }
    let local = env.path("ldae.service");
    std::fs::write(&local, unit.replace("/usr/local/bin/ldae", env.bin.to_str().expect("utf-8"))).expect("write");
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&local).output().expect("verify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("ldae.service"), "warnings about the unit: {err}");
}

#[test]
fn low_disk_pauses_intake_until_sighup_lowers_the_watermark_in_poll_mode() {
    // A watermark no disk can meet: nothing may be taken in.
    let env = Env::with_intake(1.0, 0.3, "poll = true\nmin_free_mib = 1000000000", "");
    let mut daemon = env.start(0);
    let files = axial_files();
    std::fs::create_dir_all(env.path("incoming/s")).expect("mkdir");
    for (i, f) in files.iter().take(8).enumerate() {
        std::fs::write(env.path(&format!("incoming/s/{i}.dcm")), rewrite_uids(f, 31, i)).expect("write");
    }
    let paused = wait_for(15.0, || {
        let log = std::fs::read_to_string(env.path("serve-0.log")).ok()?;
        log.contains("intake paused").then_some(())
    });
    assert!(paused.is_some(), "{}", env.logs());
    std::thread::sleep(Duration::from_secs(2));
    let st = env.status().expect("status");
    assert_eq!(st["instances"], 0, "intake must be paused");
    assert_eq!(files_under(&env.path("incoming")).len(), 8);
    env.write_config("poll = true\nmin_free_mib = 1");
    signal(&daemon, libc::SIGHUP);
    let done = wait_for(30.0, || {
        let st = env.status()?;
        let s = st["series"].as_array()?.iter().find(|s| s["series_uid"] == series_uid(31))?.clone();
        (s["state"] == "skipped" && s["instances"] == 8).then_some(())
    });
    assert!(done.is_some(), "{:?}\n{}", env.status(), env.logs());
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
}
