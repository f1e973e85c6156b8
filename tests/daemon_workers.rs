//! Several `ldae serve` processes on one store (issue 18): one `--role intake` and three `--role worker`s share
//! one state folder and one database — SQLite in WAL mode, and a real PostgreSQL server on 127.0.0.1
//! (tests/common/postgres.rs) through `[store] url`. While the series go through, one worker is killed with SIGKILL while it
//! holds a job (a live worker releases that job at once: the dead process's owner lock is free), and another is
//! paused with SIGSTOP past its lease while it holds a job, then resumed (its lease expired meanwhile, another
//! worker ran the job: the paused one must record nothing). At the end every instance is stored once, every
//! series finished once, every volume written once, and every job done (by exactly one owner: one `job_done`
//! audit event each) or dead with a reason.
//!
//! Size: 24 series of 8 slices each, without a model or template (convert + archive + one hook per series, the
//! hook sleeping 1 s so that workers hold jobs long enough to be killed or paused mid-job). Registration and
//! encoding in a debug build take seconds per series and are covered by `daemon_crash`; the queue's rules do not
//! depend on the stage.

mod common;
mod daemon_util;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use daemon_util::*;

const SERIES: u32 = 24;
const SLICES: usize = 8;
const LEASE_SECS: f64 = 2.0;

/// The database every process shares.
enum Db {
    Sqlite(PathBuf),
    Postgres { url: String, _server: common::postgres::Postgres },
}

impl Db {
    /// `[store]` TOML for the config (empty for the SQLite default under `paths.state`).
    fn toml(&self) -> String {
        match self {
            Db::Sqlite(_) => String::new(),
            Db::Postgres { url, .. } => format!("\n[store]\nurl = \"{url}\"\n"),
        }
    }

    /// The one number `sql` selects (-1 when the query fails: the database may not exist yet).
    fn count(&self, sql: &str) -> i64 {
        match self {
            Db::Sqlite(path) => {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
                let Ok(c) = rusqlite::Connection::open_with_flags(path, flags) else { return -1 };
                let _ = c.busy_timeout(Duration::from_secs(10));
                c.query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
            }
            Db::Postgres { url, .. } => {
                let Ok(mut c) = postgres::Client::connect(url, postgres::NoTls) else { return -1 };
                c.query_one(sql, &[]).ok().and_then(|r| r.try_get::<_, i64>(0).ok()).unwrap_or(-1)
            }
        }
    }

    /// Whether a writer could start now. A process frozen inside a SQLite write transaction holds the database's
    /// one write lock, and no other process can write until it runs again — SQLite's nature, not a queue rule —
    /// so the pause below must catch the worker between transactions. PostgreSQL has no such lock.
    fn writable(&self) -> bool {
        match self {
            Db::Sqlite(path) => {
                let Ok(c) = rusqlite::Connection::open(path) else { return false };
                let _ = c.busy_timeout(Duration::from_millis(500));
                c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_ok()
            }
            Db::Postgres { .. } => true,
        }
    }

    /// Rows of (text, count) that `sql` selects.
    fn text_counts(&self, sql: &str) -> Vec<(String, i64)> {
        match self {
            Db::Sqlite(path) => {
                let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .expect("open the store");
                let mut st = c.prepare(sql).expect("prepare");
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query");
                rows.map(|r| r.expect("row")).collect()
            }
            Db::Postgres { url, .. } => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
                c.query(sql, &[]).expect("query").iter().map(|r| (r.get(0), r.get(1))).collect()
            }
        }
    }

    /// The expression for a JSON text column's `owner` field.
    fn owner_of(&self, column: &str) -> String {
        match self {
            Db::Sqlite(_) => format!("json_extract({column}, '$.owner')"),
            Db::Postgres { .. } => format!("({column}::json ->> 'owner')"),
        }
    }
}

/// Running jobs held by the worker process `pid` (its owner token is `<host>-<pid>-<random>`).
fn held_by(db: &Db, pid: u32) -> i64 {
    db.count(&format!("SELECT COUNT(*) FROM jobs WHERE state = 'running' AND owner LIKE '%-{pid}-%'")).max(0)
}

/// Wait until worker `child` holds a running job; None if it never does within `secs`.
fn wait_holding(db: &Db, child: &Child, secs: f64) -> Option<()> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if held_by(db, child.id()) > 0 {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    None
}

#[test]
fn one_intake_three_workers_one_killed_one_paused_every_job_recorded_once() {
    one_intake_three_workers(|env| Db::Sqlite(env.path("state/ldae.sqlite")));
}

#[test]
fn one_intake_three_workers_on_postgresql() {
    let Some(server) = common::postgres::Postgres::start() else { return };
    let url = server.fresh_database();
    one_intake_three_workers(move |_| Db::Postgres { url, _server: server });
}

/// The crash test on the database `db` makes for the test's folders.
fn one_intake_three_workers(db: impl FnOnce(&Env) -> Db) {
    let t0 = Instant::now();
    let hook_dir = tempfile::tempdir().expect("tempdir");
    let hook = hook_dir.path().join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\nsleep 1\ncat >> {}/events.jsonl\n", hook_dir.path().display()))
        .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let extra =
        format!("lease_secs = {LEASE_SECS}\n[hooks]\ncommands = [\"{}\"]\ntimeout_secs = 10.0\n", hook.display());
    let mut env = Env::new(1.0, 0.3, &extra);
    let db = db(&env);
    env.set_extra(&format!("{extra}{}", db.toml()));
    let intake = env.start_args(0, &[], &["--role", "intake"]);
    let mut workers: Vec<Child> = vec![
        env.start_args(1, &[], &["--role", "worker"]),
        env.start_args(2, &[], &["--role", "worker"]),
        env.start_args(3, &[], &["--role", "worker", "--kinds", "convert,archive,hook"]),
    ];
    let src = axial_files();
    // Each series appears at once (written aside, then its folder renamed in), so that a slow write on a loaded
    // machine cannot split it into an early and a late part (a legitimate second `series_ready`).
    for tag in 0..SERIES {
        let dir = env.path(&format!("staging/s{tag}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (i, f) in src.iter().take(SLICES).enumerate() {
            std::fs::write(dir.join(format!("{i}.dcm")), rewrite_uids(f, 300 + tag, i)).expect("write");
        }
        std::fs::rename(&dir, env.path(&format!("incoming/s{tag}"))).expect("move the series in");
    }

    // SIGKILL worker 1 while it holds a job.
    assert!(wait_holding(&db, &workers[0], 60.0).is_some(), "worker 1 never ran a job\n{}", env.logs());
    let killed_pid = workers[0].id();
    workers[0].kill().expect("SIGKILL");
    let _ = workers[0].wait();
    let killed_at = t0.elapsed().as_secs_f64();

    // SIGSTOP worker 2 while it holds a job, past its lease; SIGCONT.
    let mut paused = false;
    for _ in 0..50 {
        if wait_holding(&db, &workers[1], 30.0).is_none() {
            break;
        }
        signal(&workers[1], libc::SIGSTOP);
        if held_by(&db, workers[1].id()) > 0 && db.writable() {
            paused = true;
            break;
        }
        // It finished the job just before the stop, or was stopped inside a write transaction: try again.
        signal(&workers[1], libc::SIGCONT);
    }
    assert!(paused, "worker 2 never held a job to be paused with\n{}", env.logs());
    let taken_over = wait_for(LEASE_SECS * 2.0 + 20.0, || (held_by(&db, workers[1].id()) == 0).then_some(()));
    assert!(taken_over.is_some(), "the paused worker's lease never expired\n{}", env.logs());
    std::thread::sleep(Duration::from_secs_f64(1.0));
    signal(&workers[1], libc::SIGCONT);

    let finished = wait_for(90.0, || {
        let series = db.count("SELECT COUNT(*) FROM series WHERE finished_at IS NOT NULL");
        let open = db.count("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')");
        (series == i64::from(SERIES) && open == 0).then_some(())
    });
    assert!(finished.is_some(), "not every series finished; jobs:\n{}\n{}", env.ldae(&["jobs", "list"]).1, env.logs());
    println!("{SERIES} series finished in {:.1} s (worker 1 killed at {killed_at:.1} s)", t0.elapsed().as_secs_f64());

    // The paused worker came back to a lost lease and recorded nothing.
    let paused_log = std::fs::read_to_string(env.path("serve-2.log")).expect("log");
    assert!(paused_log.contains("lease lost"), "the paused worker did not see its lease lost\n{}", env.logs());

    let n = i64::from(SERIES);
    assert_eq!(db.count("SELECT COUNT(*) FROM instances"), n * SLICES as i64, "every instance stored once");
    assert_eq!(db.count("SELECT COUNT(DISTINCT sop_uid) FROM instances"), n * SLICES as i64);
    assert_eq!(db.count("SELECT COUNT(*) FROM series"), n);
    // 8 slices is below [select]'s minimum: each series is converted, recorded as skipped, and finished.
    let states = db.text_counts("SELECT state, COUNT(*) FROM series GROUP BY state");
    assert_eq!(states, [("skipped".to_string(), n)], "every series finished once, the same way");
    assert_eq!(db.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'series_ready'"), n, "ready once each");
    assert_eq!(db.count("SELECT COUNT(*) FROM volumes"), n, "one volume per series");
    // Writes go to a hidden temporary name, renamed into place: only the SIGKILLed worker may leave one behind.
    let (temps, on_disk): (Vec<PathBuf>, Vec<PathBuf>) = files_under(&env.path("outputs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .partition(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
    assert_eq!(on_disk.len(), SERIES as usize, "no duplicate outputs on disk: {on_disk:?}");
    let killed_tmp = format!(".ldae-tmp-{killed_pid}-");
    assert!(
        temps.iter().all(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&killed_tmp))),
        "temporary files left by a live worker: {temps:?}"
    );
    // Every job done — by exactly one owner, one `job_done` event — or dead with its reason.
    assert_eq!(db.count("SELECT COUNT(*) FROM jobs WHERE state NOT IN ('done', 'dead')"), 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM jobs WHERE state = 'dead' AND last_error IS NULL"), 0);
    let done = db.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'");
    assert!(done >= n * 3, "convert, archive and a hook per series: {done}");
    let once = "SELECT COUNT(*) FROM (SELECT subject FROM audit_events WHERE kind = 'job_done' \
                GROUP BY subject HAVING COUNT(*) = 1) AS once_done";
    assert_eq!(db.count(once), done, "every done job recorded by exactly one owner");
    assert_eq!(db.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'job_done'"), done);
    let owners = format!("SELECT COUNT(DISTINCT {}) FROM audit_events WHERE kind = 'job_done'", db.owner_of("detail"));
    assert!(db.count(&owners) >= 2, "the work was shared between workers");
    let lost = db.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'job_lease_lost'");
    assert!(lost >= 2, "the killed and the paused worker's jobs were requeued: {lost}");

    for (i, mut w) in workers.into_iter().enumerate().skip(1) {
        assert_eq!(terminate(&mut w, 30.0), Some(0), "worker {}\n{}", i + 1, env.logs());
    }
    let mut intake = intake;
    assert_eq!(terminate(&mut intake, 30.0), Some(0), "intake\n{}", env.logs());
    if matches!(db, Db::Postgres { .. }) {
        assert!(!env.path("state/ldae.sqlite").exists(), "with [store] url set, no process opened SQLite");
    }
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn serve_refuses_unknown_kinds_and_kinds_without_a_worker_role() {
    let env = Env::new(1.0, 0.3, "");
    let (code, _, err) = env.ldae(&["serve", "--role", "worker", "--kinds", "encode,transcode"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown job kind `transcode`"), "{err}");
    let (code, _, err) = env.ldae(&["serve", "--role", "intake", "--kinds", "encode"]);
    assert_ne!(code, 0);
    assert!(err.contains("--kinds needs --role worker or all"), "{err}");
    let (code, _, err) = env.ldae(&["serve", "--role", "cluster"]);
    assert_ne!(code, 0);
    assert!(err.contains("cluster"), "{err}");
    let (code, out, _) = env.ldae(&["serve", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--role") && out.contains("--kinds") && out.contains("lease"), "{out}");
}

#[test]
fn a_second_intake_on_one_state_folder_is_refused_but_workers_share_it() {
    let env = Env::new(1.0, 0.3, "");
    let mut intake = env.start_args(0, &[], &["--role", "intake"]);
    let ready = wait_for(30.0, || env.logs().contains("ldae serve ready").then_some(()));
    assert!(ready.is_some(), "{}", env.logs());
    let (code, _, err) = env.ldae(&["serve", "--role", "intake"]);
    assert_ne!(code, 0);
    assert!(err.contains("another `ldae serve` uses this state folder"), "{err}");
    let mut w1 = env.start_args(1, &[], &["--role", "worker"]);
    let mut w2 = env.start_args(2, &[], &["--role", "worker", "--kinds", "encode,fill"]);
    let both = wait_for(30.0, || {
        let logs = [1, 2].map(|n| std::fs::read_to_string(env.path(&format!("serve-{n}.log"))).unwrap_or_default());
        logs.iter().all(|l| l.contains("ldae serve ready")).then_some(())
    });
    assert!(both.is_some(), "{}", env.logs());
    for c in [&mut w1, &mut w2, &mut intake] {
        assert_eq!(terminate(c, 30.0), Some(0), "{}", env.logs());
    }
}
