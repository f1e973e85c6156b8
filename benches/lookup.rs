//! The researcher look-ups at hospital scale: 100 000 stored embeddings of 768 values (synthetic, in a temporary
//! SQLite store filled through the store API, one series per embedding, 2 000 patients, dates over ten years).
//!
//! Timed, through the same code `ldae similar` / `ldae export` run ([`ldae::cli::lookup::Session`]):
//! - cold first query: the matrix cache is missing, so it is rebuilt from SQLite (and written), then one top-10;
//! - first query after a restart: a new session opens the cache file (mmap) and runs one top-10;
//! - per query: top-10 over the in-memory matrix, unfiltered and with filters (a patient; a date range);
//! - export of all rows: read from SQLite with vectors, then NPY + index CSV, and CSV with the 768 values.
//!
//! Targets (issue 14): ≤ 50 ms per query on the 2-core machine; export ≤ 2 s.
//!
//! Run: `cargo bench --bench lookup` (`LDAE_BENCH_ROWS=20000` for a smaller store).
//!
//! Recorded 2026-12-02 on the 2-core development machine while four other builds ran (load average ≈ 7), ldae
//! built with `CARGO_PROFILE_DEV_OPT_LEVEL=3` (dependencies at opt-level 3 as always; a full release build did
//! not finish in time on the loaded machine): filling 932 s (494 MB database); cold first query 6.7 s (cache
//! rebuilt from SQLite, 343 MB written); first query after a restart 1.23 s (mostly parsing the rows' JSON
//! header); top-10 per query median 70 ms unfiltered (max 114), 15 ms `--patient`, 33 ms `--since/--until`;
//! export: reading 100 000 rows with vectors from SQLite 2.18 s, NPY 1.56 s + index CSV 0.14 s (3.9 s in all),
//! CSV with the 768 values 10.6 s (868 MB). The dev profile (ldae at opt-level 1) gave 72 ms per query, 1.0 s
//! after a restart and 2.44 s for the NPY export. Both targets (≤ 50 ms per query, ≤ 2 s export) are missed on
//! this loaded machine; the unloaded in-memory scan measured for the design note was 9.3 ms (1 thread).
//! The scan kernel alone (first line printed), same machine with nothing else running: median 39.1 ms and
//! 57.6 ms in two runs (2 threads) — at the edge of the target.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use ldae::cli::lookup::Session;
use ldae::lookup::export::{write_csv, write_npy};
use ldae::store::{
    ArrivedFile, Completion, EmbeddingFilter, InstanceFacts, NewEmbedding, NewJob, NewRegistration, NewVolume, Store,
};

const DIM: usize = 768;

/// A deterministic stream of numbers in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn fill(store: &Store, n: usize, rng: &mut Rng) {
    let lease = ldae::store::Lease { owner: "bench".into(), secs: 3600.0 };
    for i in 0..n {
        let series = format!("2.25.{}", 1_000_000 + i);
        let year = 2015 + (i % 10);
        let date = format!("{year}{:02}{:02}", 1 + i % 12, 1 + i % 28);
        let facts = InstanceFacts {
            sop_uid: format!("{series}.1"),
            series_uid: series.clone(),
            study_uid: format!("{series}.0"),
            patient_id: Some(format!("P{:05}", i % 2000)),
            issuer_of_patient_id: None,
            modality: Some("MR".into()),
            instance_number: Some(1),
            expected_count: None,
            study_date: Some(date.clone()),
            series_description: Some("T1 MPRAGE".into()),
            acquisition_date: Some(date),
            patient_age_years: Some(60.0 + (i % 30) as f64),
        };
        let file = ArrivedFile {
            path: format!("/in/{i}.dcm").into(),
            drop_folder: "/in".into(),
            size: 1,
            mtime_ns: 1,
            sha256: format!("{i:064x}"),
        };
        store.record_instance(&file, &facts).expect("record");
        let series_ref = store.series_id(&series).expect("series ref").expect("series");
        let job = NewJob {
            key: format!("e{i}"),
            series_ref: Some(series_ref),
            payload: ldae::store::Payload::Encode(ldae::store::EncodeJob {
                content_key: format!("k{i}"),
                volume: format!("/o/{i}.nii.gz"),
                preprocess_hash: "ph".into(),
                model_input: "/o/m.nii.gz".into(),
            }),
            priority: 0,
        };
        store.enqueue(&job).expect("enqueue");
        let j = store.claim(&[ldae::store::JobKind::Encode], &lease).expect("claim").expect("a job");
        let vol = format!("/o/{i}.nii.gz");
        let c = Completion {
            volumes: vec![NewVolume {
                series_ref,
                content_key: format!("k{i}"),
                series_key: format!("s{i}"),
                file_stem: "v".into(),
                path: vol.clone(),
                sidecar: None,
                sha256: "s".into(),
            }],
            registration: Some(NewRegistration {
                volume_path: vol.clone(),
                preprocess_hash: "ph".into(),
                transform_path: "/o/t.txt".into(),
                model_input_path: "/o/m.nii.gz".into(),
                metric: -0.5,
                brain_coverage: 1.0,
            }),
            embedding: Some(NewEmbedding {
                volume_path: vol,
                preprocess_hash: "ph".into(),
                model_id: "bench".into(),
                model_version: "0123456789abcdef".into(),
                path: format!("/o/{i}.safetensors"),
                steps: Some(100),
                y_sem: (0..DIM).map(|_| rng.next()).collect(),
            }),
            ..Completion::default()
        };
        let _ = store.complete(&j, &c).expect("complete");
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn file_mb(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0)
}

/// The scan alone: top-10 over an in-memory 100 000 × 768 matrix of unit rows (what a warm query costs without
/// the store), so the kernel's time is known even when the store part runs with fewer rows.
fn kernel(rng: &mut Rng) {
    const ROWS: usize = 100_000;
    let mut m: Vec<f32> = (0..ROWS * DIM).map(|_| rng.next()).collect();
    m.chunks_exact_mut(DIM).for_each(ldae::lookup::similar::normalise);
    let times: Vec<f64> = (0..30)
        .map(|_| {
            let mut q: Vec<f32> = (0..DIM).map(|_| rng.next()).collect();
            ldae::lookup::similar::normalise(&mut q);
            let t = Instant::now();
            std::hint::black_box(ldae::lookup::similar::top_k(&m, DIM, &q, 10, |_| true));
            ms(t)
        })
        .collect();
    println!(
        "lookup bench: scan kernel, top-10 over {ROWS} × {DIM} in memory ({} threads): median {:.1} ms, max {:.1} ms",
        rayon::current_num_threads(),
        median(times.clone()),
        times.iter().cloned().fold(0.0, f64::max)
    );
}

fn main() {
    kernel(&mut Rng(11));
    let n: usize = std::env::var("LDAE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    // LDAE_BENCH_STORE=DIR keeps the filled store in DIR and reuses it on the next run (filling takes minutes).
    let kept = std::env::var_os("LDAE_BENCH_STORE").map(std::path::PathBuf::from);
    let temp = tempfile::tempdir().expect("tempdir");
    let root = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let dir = &root;
    let state = dir.join("state");
    let config = dir.join("ldae.toml");
    std::fs::create_dir_all(dir).expect("bench folder");
    std::fs::write(
        &config,
        format!("[paths]\nstate = \"{}\"\n[model]\ndir = \"{}/no-model\"\n", state.display(), dir.display()),
    )
    .expect("config");
    let mut rng = Rng(7);
    let reuse = kept.is_some() && state.join("ldae.sqlite").is_file();
    if reuse {
        let _ = std::fs::remove_dir_all(state.join("lookup"));
        println!("lookup bench: reusing the store in {}", dir.display());
        rng = Rng(8);
    } else {
        let t = Instant::now();
        fill(&Store::open_in(&state).expect("store"), n, &mut rng);
        println!("lookup bench: {n} × {DIM} embeddings inserted through the store API in {:.1} s", ms(t) / 1e3);
    }
    let sqlite = state.join("ldae.sqlite");
    println!("  database {:.0} MB", file_mb(&sqlite));
    let query: Vec<f32> = (0..DIM).map(|_| rng.next()).collect();

    // Cold: no cache yet.
    let t = Instant::now();
    let s = Session::open(&config, Some("bench")).expect("session");
    let m = s.matrix().expect("matrix");
    let hits = m.search(&query, 10, |_| true);
    let cold = ms(t);
    assert_eq!(hits.len(), 10);
    println!(
        "  cold first query (cache rebuilt from SQLite, {:.0} MB written): {cold:.0} ms",
        file_mb(&s.cache_path())
    );
    drop((m, s));

    // Restart: a new session maps the cache.
    let t = Instant::now();
    let s = Session::open(&config, Some("bench")).expect("session");
    let m = s.matrix().expect("matrix");
    let again = m.search(&query, 10, |_| true);
    println!("  first query after a restart (cache mapped): {:.1} ms", ms(t));
    assert_eq!(hits, again);

    // Warm queries.
    let queries: Vec<Vec<f32>> = (0..30).map(|_| (0..DIM).map(|_| rng.next()).collect()).collect();
    let patient = EmbeddingFilter { patient: Some("P00042".into()), ..Default::default() };
    let dates =
        EmbeddingFilter { since: Some("20180101".into()), until: Some("20191231".into()), ..Default::default() };
    for (name, f) in [("no filter", EmbeddingFilter::default()), ("--patient", patient), ("--since/--until", dates)] {
        let times: Vec<f64> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                let h = m.search(q, 10, |r| f.matches(r));
                std::hint::black_box(h);
                ms(t)
            })
            .collect();
        println!(
            "  top-10 per query, {name}: median {:.1} ms, max {:.1} ms ({} queries)",
            median(times.clone()),
            times.iter().cloned().fold(0.0, f64::max),
            times.len()
        );
    }
    drop(m);

    // Export.
    let t = Instant::now();
    let rows = s.rows(&EmbeddingFilter::default(), true).expect("rows");
    let read = ms(t);
    let write = |name: &str, f: &dyn Fn(&mut BufWriter<std::fs::File>) -> std::io::Result<()>| -> f64 {
        let p = dir.join(name);
        let t = Instant::now();
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&p).expect("create"));
        f(&mut w).expect("write");
        w.flush().expect("flush");
        let e = ms(t);
        println!("    {name}: {e:.0} ms, {:.0} MB", file_mb(&p));
        let _ = std::fs::remove_file(&p);
        e
    };
    println!("  export of {} rows: read from SQLite {read:.0} ms, then", rows.len());
    let npy = write("out.npy", &|w| write_npy(w, &rows, DIM));
    let index = write("out.csv", &|w| write_csv(w, &rows, 0));
    let csv = write("full.csv", &|w| write_csv(w, &rows, DIM));
    println!(
        "  export totals: npy + index {:.2} s; csv with values {:.2} s (target ≤ 2 s)",
        (read + npy + index) / 1e3,
        (read + csv) / 1e3
    );
}
