//! The crash test: 24 series (made from the test series under new UIDs) arrive file by file, interleaved, some
//! written in chunks, while `ldae serve` is killed with SIGKILL at random moments and restarted. At the end every
//! file must be accounted for exactly once (one instance row, its file in the archive, nothing left in the drop
//! folder, nothing quarantined or duplicated) and every series must have finished with one volume.
//!
//! A second run kills it while series are registered and encoded (the whole chain, demo model): every series
//! ends encoded with exactly one embedding.
//!
//! The seed is printed; `LDAE_CRASH_SEED=<n>` replays a run.

mod daemon_util;

use std::path::PathBuf;
use std::time::Duration;

use daemon_util::*;
use rand::{Rng, SeedableRng};

const SERIES: u32 = 24;
const PER_SERIES: usize = 8;
const KILLS: usize = 10;

#[test]
fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    let seed: u64 = std::env::var("LDAE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("LDAE_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // kill -9 may land during a header parse; only a file in flight at 3 deaths counts as a poison pill here.
    let env = Env::with_intake(1.5, 0.4, "min_free_mib = 1\nmax_parse_crashes = 3", "");
    let src = axial_files();

    // Interleaved arrival: slice 0 of every series, then slice 1, ... with some local shuffling.
    let mut items: Vec<(PathBuf, Vec<u8>, bool)> = Vec::new();
    for (i, slice) in src.iter().take(PER_SERIES).enumerate() {
        for tag in 0..SERIES {
            let dst = env.path(&format!("incoming/sender{}/series{tag:02}/IM{i:04}.dcm", tag % 3));
            items.push((dst, rewrite_uids(slice, tag, i), rng.random_range(0..5) == 0));
        }
    }
    for k in 0..items.len() {
        let j = (k + rng.random_range(0..6)).min(items.len() - 1);
        items.swap(k, j);
    }
    let pauses: Vec<u64> = (0..items.len()).map(|_| rng.random_range(0..25)).collect();
    let writer = std::thread::spawn(move || {
        for ((dst, bytes, chunked), pause) in items.into_iter().zip(pauses) {
            if chunked {
                write_slowly(&dst, &bytes, 3, Duration::from_millis(60));
            } else {
                write_slowly(&dst, &bytes, 1, Duration::ZERO);
            }
            std::thread::sleep(Duration::from_millis(pause));
        }
    });

    let mut daemon = env.start(0);
    for n in 1..=KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1300)));
        daemon.kill().expect("SIGKILL");
        let _ = daemon.wait();
        daemon = env.start(n);
    }
    writer.join().expect("writer");

    let total = SERIES as i64 * PER_SERIES as i64;
    let finished = wait_for(90.0, || {
        let st = env.status()?;
        let series = st["series"].as_array()?;
        let all_done = series.len() == SERIES as usize
            // 8-slice slabs: stored, and skipped by [select] (too few slices for a brain volume).
            && series.iter().all(|s| s["state"] == "skipped" && s["volumes"] == 1);
        let busy = st["jobs"].as_array()?.iter().any(|j| j["state"] == "pending" || j["state"] == "running");
        (all_done && !busy && st["instances"] == total).then_some(st)
    });
    let Some(st) = finished else {
        panic!("not every series finished (seed {seed}); status {:?}\n{}", env.status(), env.logs())
    };
    assert_eq!(st["duplicates"], 0, "seed {seed}");
    assert_eq!(st["quarantined"], 0, "seed {seed}: {:?}", env.ldae(&["quarantine", "list"]));
    for s in st["series"].as_array().expect("series") {
        assert_eq!(s["instances"], PER_SERIES as i64, "seed {seed}: {s}");
    }
    assert!(
        st["jobs"].as_array().expect("jobs").iter().all(|j| j["state"] != "dead"),
        "seed {seed}: dead jobs {:?}",
        st["jobs"]
    );
    for tag in 0..SERIES {
        assert!(st["series"].as_array().expect("series").iter().any(|s| s["series_uid"] == series_uid(tag)));
    }

    // Every instance exactly once: one row per SOP UID, its file in the archive, nothing left in the drop folder.
    let db = rusqlite::Connection::open(env.path("state/ldae.sqlite")).expect("open db");
    let (rows, distinct): (i64, i64) = db
        .query_row("SELECT COUNT(*), COUNT(DISTINCT sop_uid) FROM instances", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("count");
    assert_eq!((rows, distinct), (total, total), "seed {seed}");
    let mut st = db.prepare("SELECT path FROM instances").expect("prepare");
    let paths: Vec<String> = st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect();
    for p in &paths {
        assert!(p.starts_with(&env.path("archive").display().to_string()), "seed {seed}: {p} not archived");
        assert!(std::path::Path::new(p).exists(), "seed {seed}: {p} missing");
    }
    let archived = files_under(&env.path("archive"));
    assert_eq!(archived.len() as i64, total, "seed {seed}");
    let left = files_under(&env.path("incoming"));
    assert!(left.is_empty(), "seed {seed}: left in the drop folder: {left:?}");
    assert_eq!(terminate(&mut daemon, 20.0), Some(0), "seed {seed}");
}

#[test]
fn kill_9_during_registration_and_encoding_leaves_one_embedding_per_series() {
    let seed: u64 = std::env::var("LDAE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("LDAE_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let env = Env::with_model(0.5, 0.2);
    let src = axial_files();
    const N: u32 = 3;
    for tag in 0..N {
        let dir = env.path(&format!("incoming/s{tag}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        // The whole brain (46 slices): registration needs it (an 8-slice slab is rightly refused).
        for (i, f) in src.iter().enumerate() {
            std::fs::write(dir.join(format!("{i}.dcm")), rewrite_uids(f, 100 + tag, i)).expect("write");
        }
    }
    let mut daemon = env.start(0);
    // Loading the template takes seconds in a debug build: kill late enough, sometimes, to land in the stages.
    for n in 1..=3 {
        std::thread::sleep(Duration::from_millis(rng.random_range(1500..7000)));
        daemon.kill().expect("SIGKILL");
        let _ = daemon.wait();
        daemon = env.start(n);
    }
    let finished = wait_for(120.0, || {
        let st = env.status()?;
        let series = st["series"].as_array()?;
        let done = series.len() == N as usize && series.iter().all(|s| s["state"] == "encoded" && s["embeddings"] == 1);
        let busy = st["jobs"].as_array()?.iter().any(|j| j["state"] == "pending" || j["state"] == "running");
        (done && !busy).then_some(st)
    });
    let Some(st) = finished else {
        panic!("not every series encoded (seed {seed}); jobs {:?}\n{}", env.ldae(&["jobs", "list"]).1, env.logs())
    };
    assert_eq!(st["instances"], (N as usize * src.len()) as i64);
    let db = rusqlite::Connection::open(env.path("state/ldae.sqlite")).expect("open db");
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert_eq!(count("SELECT COUNT(*) FROM volumes"), N as i64, "seed {seed}");
    assert_eq!(count("SELECT COUNT(*) FROM registrations"), N as i64, "seed {seed}");
    assert_eq!(count("SELECT COUNT(*) FROM embeddings"), N as i64, "seed {seed}");
    let mut q = db.prepare("SELECT path FROM embeddings").expect("prepare");
    for p in q.query_map([], |r| r.get::<_, String>(0)).expect("query") {
        let p = p.expect("row");
        ldae::model::codes::load_codes(std::path::Path::new(&p)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    // The last start may still be starting (the work was finished by an earlier one): SIGTERM before its signal
    // handler is installed would end it by the signal, not by a drain.
    let ready = wait_for(60.0, || {
        std::fs::read_to_string(env.path("serve-3.log")).ok().filter(|t| t.contains("ldae serve ready")).map(|_| ())
    });
    assert!(ready.is_some(), "seed {seed}: last start never ready\n{}", env.logs());
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "seed {seed}\n{}", env.logs());
}
