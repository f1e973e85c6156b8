//! Durable moves and deletes, with the real binary on real files:
//! - destructive file steps wait for a durable commit, and folders are fsynced after renames (seen in an
//!   `strace` of the daemon: the WAL is synced after its last write and before the first archive rename);
//! - a late instance is taken in and converted in every `intake.after_commit` mode (archive, keep, delete);
//! - the low-disk watermark pauses intake when any configured folder (here outputs) runs short, not only state;
//! - operator commands never migrate the database, and refuse a schema older or newer than they know.
//!
//! A missing tool or data file goes through `common::require` (`tool`, `shared_data`, `python_modules`), which
//! fails the test under `LDAE_REQUIRE_ALL=1` (CI) and only skips, loudly, without it.

mod common;
mod daemon_util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_util::*;

fn series_of(st: &serde_json::Value, uid: &str) -> Option<serde_json::Value> {
    st["series"].as_array()?.iter().find(|s| s["series_uid"] == uid).cloned()
}

fn idle(st: &serde_json::Value) -> bool {
    st["jobs"].as_array().is_some_and(|j| j.iter().all(|j| j["state"] != "pending" && j["state"] != "running"))
}

fn write_slices(env: &Env, sub: &str, tag: u32, range: std::ops::Range<usize>) {
    let src = axial_files();
    std::fs::create_dir_all(env.path(&format!("incoming/{sub}"))).expect("mkdir");
    for i in range {
        std::fs::write(env.path(&format!("incoming/{sub}/{i}.dcm")), rewrite_uids(&src[i], tag, i)).expect("write");
    }
}

/// Slices of the series' current volume (the one of its current content key).
fn current_slices(env: &Env, uid: &str) -> usize {
    let db = rusqlite::Connection::open(env.path("state/ldae.sqlite")).expect("db");
    let path: String = db
        .query_row(
            "SELECT v.path FROM volumes v JOIN series s ON s.id = v.series_ref AND v.series_key = s.content_key \
             WHERE s.series_uid = ?1",
            [uid],
            |r| r.get(0),
        )
        .expect("current volume");
    let v = ldae::nifti::read_nifti(Path::new(&path)).expect("read volume");
    *v.shape().iter().min().expect("shape")
}

#[test]
fn a_late_instance_is_converted_in_every_after_commit_mode() {
    for (n, mode) in ["archive", "keep", "delete"].into_iter().enumerate() {
        let env = Env::with_intake(1.0, 0.3, &format!("min_free_mib = 1\nafter_commit = \"{mode}\""), "");
        let mut daemon = env.start(0);
        let tag = 80 + n as u32;
        let uid = series_uid(tag);
        write_slices(&env, "first", tag, 0..8);
        let first = wait_for(40.0, || {
            let st = env.status()?;
            let s = series_of(&st, &uid)?;
            (s["state"] == "skipped" && s["volumes"] == 1 && idle(&st)).then_some(())
        });
        assert!(first.is_some(), "{mode}: first part not finished: {:?}\n{}", env.status(), env.logs());
        let left = files_under(&env.path("incoming")).len();
        assert_eq!(left, if mode == "keep" { 8 } else { 0 }, "{mode}");
        // Late arrivals: the next 8 slices of the same series.
        write_slices(&env, "late", tag, 8..16);
        let late = wait_for(40.0, || {
            let st = env.status()?;
            let s = series_of(&st, &uid)?;
            (s["instances"] == 16 && s["state"] == "skipped" && s["volumes"] == 1 && idle(&st)).then_some((st, s))
        });
        let Some((st, s)) = late else {
            panic!("{mode}: late instances not converted: {:?}\n{}", env.status(), env.logs())
        };
        assert!(st["jobs"].as_array().expect("jobs").iter().all(|j| j["state"] != "dead"), "{mode}: {st}");
        let volumes = db_count(&env, "SELECT COUNT(*) FROM volumes");
        if mode == "delete" {
            // The first 8 files are gone: the late 8 form a new split; the first volume stays recorded.
            assert_eq!(current_slices(&env, &uid), 8, "{mode}");
            assert_eq!(volumes, 2, "{mode}");
            assert!(s["note"].as_str().unwrap_or("").contains("late split"), "{s}");
            assert!(files_under(&env.path("incoming")).is_empty());
        } else {
            assert_eq!(current_slices(&env, &uid), 16, "{mode}: one volume of all 16 slices");
            assert_eq!(volumes, 2, "{mode}: the 8-slice volume of the first commit and the 16-slice one");
        }
        assert_eq!(terminate(&mut daemon, 20.0), Some(0), "{mode}");
    }
}

/// (pid of the traced ldae, the strace child).
fn start_traced(env: &Env, trace: &Path) -> std::process::Child {
    let log = std::fs::File::create(env.path("serve-0.log")).expect("log");
    Command::new("strace")
        .args(["-f", "-qq", "-y", "-o"])
        .arg(trace)
        .args(["-e", "trace=pwrite64,fsync,fdatasync,rename,renameat,renameat2"])
        .arg(&env.bin)
        .args(["--config", env.config.to_str().expect("utf-8"), "--log", "info", "serve"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start strace")
}

#[test]
fn archive_moves_wait_for_a_synced_wal_and_fsync_their_folders() {
    if Command::new("strace").arg("-V").stdout(Stdio::null()).status().is_err() {
        common::require("strace not installed: durability trace test skipped");
        return;
    }
    let env = Env::new(1.0, 0.3, "");
    let trace = env.path("trace.txt");
    let mut strace = start_traced(&env, &trace);
    let tag = 90;
    write_slices(&env, "s", tag, 0..8);
    let uid = series_uid(tag);
    let done = wait_for(90.0, || {
        let st = env.status()?;
        let s = series_of(&st, &uid)?;
        (s["state"] == "skipped" && idle(&st) && files_under(&env.path("archive")).len() == 8).then_some(())
    });
    // Stop the traced daemon (strace's child) with SIGTERM; strace exits with it.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).unwrap_or_default();
    for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        // SAFETY: signalling the ldae process this test started (under strace).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let exited = wait_for(30.0, || strace.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = strace.kill();
    }
    assert!(done.is_some(), "series not archived: {:?}\n{}", env.status(), env.logs());
    let text = std::fs::read_to_string(&trace).expect("trace");
    let lines: Vec<&str> = text.lines().collect();
    let archive = env.path("archive").display().to_string();
    let needle = format!("\"{archive}/");
    let is_archive_rename = |l: &str| l.contains("rename") && l.contains(&needle);
    let first = lines.iter().position(|l| is_archive_rename(l)).expect("an archive rename in the trace");
    let wal = |l: &&str| l.contains("ldae.sqlite-wal>");
    let sync = |l: &&str| (l.contains("fdatasync(") || l.contains("fsync(")) && wal(l);
    let last_write = lines[..first]
        .iter()
        .rposition(|l| l.contains("pwrite64(") && wal(l))
        .expect("a WAL write before the archive moves");
    assert!(
        lines[last_write + 1..first].iter().any(sync),
        "the WAL was not synced between its last write and the first archive rename (a power loss could roll the \
         conversion back after its source files moved):\n{}",
        lines[last_write.saturating_sub(3)..=first].join("\n")
    );
    let renames = lines.iter().filter(|l| is_archive_rename(l)).count();
    assert_eq!(renames, 8, "one rename per instance");
    let dir_syncs = lines.iter().filter(|l| l.contains("fsync(") && l.contains(&format!("<{archive}/"))).count();
    assert!(dir_syncs >= renames, "archive folders fsynced {dir_syncs} times for {renames} renames");
    let incoming = env.path("incoming/s").display().to_string();
    let src_syncs = lines.iter().filter(|l| l.contains("fsync(") && l.contains(&format!("<{incoming}>"))).count();
    assert!(src_syncs >= renames, "drop folder fsynced {src_syncs} times for {renames} renames");
}

fn free_mib(p: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid path and a zeroed statvfs for the call to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64 / (1024 * 1024)
}

/// A file of `bytes` really allocated (fallocate), or None when the file system cannot.
fn allocate(path: &Path, bytes: u64) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).ok()?;
    let len = libc::off_t::try_from(bytes).ok()?;
    // SAFETY: a valid open file descriptor; fallocate only reserves blocks for it.
    (unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) } == 0).then_some(f)
}

#[test]
fn low_disk_on_the_outputs_folder_pauses_intake() {
    // Two file systems with clearly different free space: outputs goes on the fuller one, state on the other,
    // and the watermark lies between them.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        common::require("/dev/shm missing: low-disk test skipped");
        return;
    }
    let other = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
    let env_probe = tempfile::tempdir().expect("tempdir");
    let (a, mut b) = (free_mib(env_probe.path()), free_mib(other.path()));
    // Free space that happens to be alike (seen: 24777 and 24048 MiB): a ballast file in /dev/shm (memory, freed
    // with the folder) makes /dev/shm the fuller one by 2.5 GiB.
    let _ballast = if a.abs_diff(b) < 2000 && a > 3000 && b + 2500 > a {
        let f = allocate(&other.path().join("ballast"), (b + 2500 - a) * 1024 * 1024);
        b = free_mib(other.path());
        f
    } else {
        None
    };
    if a.abs_diff(b) < 2000 {
        common::require(&format!("/tmp ({a} MiB free) and /dev/shm ({b} MiB free) too alike: low-disk test skipped"));
        return;
    }
    let mark = (a + b) / 2;
    let env = Env::with_intake(1.0, 0.3, &format!("min_free_mib = {mark}"), "");
    // The folder below the watermark (state never is): outputs on /dev/shm, or outputs beside a state on /dev/shm.
    let short = if b < a {
        std::os::unix::fs::symlink(other.path(), env.path("outputs")).expect("outputs on /dev/shm");
        other.path().canonicalize().expect("canonical")
    } else {
        std::os::unix::fs::symlink(other.path(), env.path("state")).expect("state on /dev/shm");
        env.path("outputs")
    };
    let mut daemon = env.start(0);
    write_slices(&env, "s", 95, 0..3);
    let paused = wait_for(20.0, || env.logs().contains("intake paused").then_some(()));
    assert!(paused.is_some(), "intake not paused with outputs below the watermark\n{}", env.logs());
    let named = format!("{} (", short.display());
    assert!(env.logs().contains(&named), "the log names the folder that is short\n{}", env.logs());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.status().map(|s| s["instances"].clone()), Some(serde_json::json!(0)), "{}", env.logs());
    // The operator frees space (here: lowers the watermark) and reloads: intake resumes.
    env.write_config("min_free_mib = 1");
    signal(&daemon, libc::SIGHUP);
    let resumed = wait_for(30.0, || (env.status()?["instances"] == 3).then_some(()));
    assert!(resumed.is_some(), "intake did not resume\n{}", env.logs());
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
}

#[test]
fn operator_commands_neither_migrate_nor_accept_an_unknown_schema() {
    let env = Env::new(1.0, 0.3, "");
    std::fs::create_dir_all(env.path("state")).expect("mkdir");
    let db = rusqlite::Connection::open(env.path("state/ldae.sqlite")).expect("db");
    db.execute_batch("CREATE TABLE patients (id INTEGER PRIMARY KEY); PRAGMA user_version = 1;").expect("old db");
    for args in [&["status"][..], &["jobs", "list"], &["quarantine", "list"]] {
        let (code, _, err) = env.ldae(args);
        assert_ne!(code, 0, "{args:?} on an old schema must fail");
        assert!(err.contains("run `ldae serve` to migrate"), "{args:?}: {err}");
    }
    let v: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(v, 1, "an operator command migrated the database");
    db.pragma_update(None, "user_version", 999).expect("set version");
    let (code, _, err) = env.ldae(&["status"]);
    assert_ne!(code, 0);
    assert!(err.contains("newer than this ldae"), "{err}");
}
