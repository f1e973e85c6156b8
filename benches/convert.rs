//! Benchmark: `ldae convert` against dcm2niix (with pigz for `-z y`) on the 1 mm MNI series (189 files of
//! 197×233, explicit VR LE, int16), uncompressed and gzip output, then throughput on a folder of 20 such series
//! (3 780 files) converted in one call by each tool. Alternating runs on the same disk (a folder under the
//! target directory); prints each median, the ratio dcm2niix / ldae from the same run, files/s, output sizes
//! and the load average before and after (the ratios are what compare across noisy machines).
//!
//! Run with `cargo bench --bench convert` (release). Needs python3 with numpy, nibabel and pydicom to build the
//! series from ../shared (shared/testdata/scripts/make_bench_series.py), dcm2niix on PATH and pigz (checked:
//! dcm2niix must report that it compresses with pigz, else the gzip rows say so).
//!
//! Recorded 2026-11-25 (before issue 17), shared 2-core machine, load ~10-13: ldae 453 ms vs dcm2niix 147 ms
//! uncompressed (0.32x). Issue 17's quiet-machine baseline: ldae 186 ms vs dcm2niix 37 ms, float32 output.
//! Recorded 2026-12-02 after issue 17's int16 output / single pixel read / parallel assembly and gzip, same
//! shared 2-core machine, load average 6.8 before, 8.0 after (ldae's own CPU for one series: 0.11 s user +
//! 0.11 s sys, 0.57 s wall: it waits for a core). Ratio dcm2niix / ldae:
//!   1 series .nii     ldae  412 ms vs  286 ms  0.69x    1 series .nii.gz   ldae  526 ms vs  1562 ms  2.97x
//!   20 series .nii    ldae 8355 ms vs 6266 ms  0.75x    20 series .nii.gz  ldae 8130 ms vs 25295 ms  3.11x
//!   (452 vs 603 files/s uncompressed, 465 vs 149 files/s gzip). Output: int16 17.4 MB per series for both
//!   (float32 was 34.7 MB); .nii.gz ldae 2.2 MB (level 1, parallel members) vs dcm2niix/pigz -6 1.9 MB.
//! Recorded 2026-12-03 after huge-page advice for large buffers and the vectorised range pass, same 2-core
//! machine, load 1.3 before / 1.7 after, dcm2niix with pigz:
//!   1 series .nii     ldae 34.7 ms vs 64.9 ms  1.87x    1 series .nii.gz   ldae   57.5 ms vs  365.0 ms  6.35x
//!   20 series .nii    ldae 1470 ms vs 1959 ms  1.33x    20 series .nii.gz  ldae 1718.8 ms vs 7599.8 ms  4.42x
//!   (the folder still holds every converted volume in memory before the first is written: the next step).
//! Recorded 2026-12-03 (later) after per-series streaming to a writer thread, SSE2 narrowing, positioned parallel
//! .nii writes, one header open and one pixel read per file; same 2-core machine, load 1.5-1.8, two runs:
//!   1 series .nii     ldae 30.2 ms vs 70.8 ms  2.34x  |  22.3 ms vs 49.3 ms  2.21x
//!   1 series .nii.gz  ldae 48.8 ms vs 349 ms   7.16x  |  51.0 ms vs 399 ms   7.81x
//!   20 series .nii    ldae  360 ms vs 1522 ms  4.23x  |   307 ms vs 1096 ms 3.57x   (12 303 vs 3 450 files/s)
//!   20 series .nii.gz ldae  855 ms vs 6965 ms  8.15x  |   786 ms vs 6926 ms 8.81x
//! In a worktree whose ../shared is absent, run it with LDAE_SHARED=/work/shared.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Runs per tool for the single series (after one warm-up run each).
const RUNS: usize = 7;
/// Runs per tool for the 20-series folder.
const FOLDER_RUNS: usize = 5;
/// Series in the throughput folder.
const FOLDER_SERIES: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(cmd: &mut Command) -> Result<(f64, String), String> {
    let t = Instant::now();
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok((s, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Total size of the `.nii` / `.nii.gz` files in `dir` (recursively).
fn nifti_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            n.ends_with(".nii") || n.ends_with(".nii.gz")
        })
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum()
}

fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()).count()
}

fn main() {
    if let Err(e) = run() {
        println!("convert bench: {e}");
    }
}

/// Build `out` with make_bench_series.py (`repeat` series) unless it already holds `files` files.
fn build_series(testdata: &Path, out: &Path, repeat: usize, files: usize) -> Result<(), String> {
    if out.is_dir() && count_files(out) == files {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(out);
    let mut cmd = Command::new("python3");
    cmd.arg(testdata.join("scripts/make_bench_series.py")).arg(out).current_dir(testdata);
    if repeat > 1 {
        cmd.args(["--repeat", &repeat.to_string()]);
    }
    let st = cmd.output().map_err(|e| format!("python3: {e}"))?;
    if !st.status.success() {
        return Err(format!(
            "building the series failed (pip install numpy nibabel pydicom): {}",
            String::from_utf8_lossy(&st.stderr)
        ));
    }
    Ok(())
}

/// One comparison: medians, ratio, files/s and output sizes.
struct Row {
    label: String,
    files: usize,
    ldae: f64,
    dcm2niix: f64,
    ldae_bytes: u64,
    dcm2niix_bytes: u64,
}

impl Row {
    fn print(&self) {
        println!(
            "  {:<34} ldae {:>8.1} ms  dcm2niix {:>8.1} ms  ratio dcm2niix/ldae = {:.2}x (goal >= 2)",
            self.label,
            self.ldae * 1e3,
            self.dcm2niix * 1e3,
            self.dcm2niix / self.ldae
        );
        println!(
            "  {:<34} ldae {:>8.0} files/s  dcm2niix {:>8.0} files/s;  output ldae {:.1} MB, dcm2niix {:.1} MB",
            "",
            self.files as f64 / self.ldae,
            self.files as f64 / self.dcm2niix,
            self.ldae_bytes as f64 / 1e6,
            self.dcm2niix_bytes as f64 / 1e6
        );
    }
}

/// Alternate `runs` timed runs of each tool (after one warm-up each) on `input`, fresh output folders each run.
fn compare(work: &Path, label: &str, input: &Path, gz: bool, runs: usize) -> Result<(Row, String), String> {
    let ldae = env!("CARGO_BIN_EXE_ldae");
    let files = count_files(input);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let out_l = work.join("out_ldae");
    let out_d = work.join("out_dcm2niix");
    let mut dcm_log = String::new();
    for run in 0..=runs {
        for d in [&out_l, &out_d] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        let mut l = Command::new(ldae);
        l.args(["--config", "/nonexistent/ldae.toml", "--log", "warn", "convert"]);
        if !gz {
            l.arg("--uncompressed");
        }
        let (tl, _) = time(l.arg("-o").arg(&out_l).arg(input))?;
        let (td, log) = time(
            Command::new("dcm2niix").args(["-z", if gz { "y" } else { "n" }, "-b", "n", "-o"]).arg(&out_d).arg(input),
        )?;
        if run == 0 {
            dcm_log = log; // run 0 warms the page cache for both
        } else {
            ours.push(tl);
            theirs.push(td);
        }
    }
    let row = Row {
        label: label.to_string(),
        files,
        ldae: median(ours),
        dcm2niix: median(theirs),
        ldae_bytes: nifti_bytes(&out_l),
        dcm2niix_bytes: nifti_bytes(&out_d),
    };
    Ok((row, dcm_log))
}

fn run() -> Result<(), String> {
    let shared = std::env::var_os("LDAE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let testdata = shared.join("testdata");
    if !testdata.is_dir() {
        return Err(format!("shared corpus not found at {} (set LDAE_SHARED): skipped", shared.display()));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let work = target.join("bench-convert");
    let series = work.join("series");
    let folder = work.join("folder20");
    build_series(&testdata, &series, 1, 189)?;
    build_series(&testdata, &folder, FOLDER_SERIES, 189 * FOLDER_SERIES)?;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("convert bench: {cpus} CPUs, load average before: {}", load());
    let mut rows = Vec::new();
    let (r, _) = compare(&work, "1 series (189 files), .nii", &series, false, RUNS)?;
    r.print();
    rows.push(r);
    let (r, log) = compare(&work, "1 series (189 files), .nii.gz", &series, true, RUNS)?;
    match log.lines().find(|l| l.contains("pigz")) {
        Some(line) => println!("  (dcm2niix compresses with pigz: {})", line.trim()),
        None => println!("  (dcm2niix did NOT report pigz: its gzip rows use its internal compressor)"),
    }
    r.print();
    rows.push(r);
    let label = format!("{FOLDER_SERIES} series ({} files), .nii", 189 * FOLDER_SERIES);
    let (r, _) = compare(&work, &label, &folder, false, FOLDER_RUNS)?;
    r.print();
    rows.push(r);
    let label = format!("{FOLDER_SERIES} series ({} files), .nii.gz", 189 * FOLDER_SERIES);
    let (r, _) = compare(&work, &label, &folder, true, FOLDER_RUNS)?;
    r.print();
    rows.push(r);
    println!(
        "convert bench: medians of {RUNS} (1 series) / {FOLDER_RUNS} (folder) runs; load average after: {}",
        load()
    );
    let worst = rows.iter().map(|r| r.dcm2niix / r.ldae).fold(f64::INFINITY, f64::min);
    println!("convert bench: lowest ratio {worst:.2}x (goal >= 2 everywhere)");
    Ok(())
}
