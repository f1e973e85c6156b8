//! Benchmark: `ldae convert` against dcm2niix on the 1 mm MNI series (189 files of 197×233, explicit VR LE),
//! both writing uncompressed NIfTI to the same disk. Several alternating runs; prints each median and the ratio.
//!
//! Run with `cargo bench --bench convert` (release). Needs python3 with numpy, nibabel and pydicom to build the
//! series from ../shared (shared/testdata/scripts/make_bench_series.py), and dcm2niix on PATH.
//!
//! Recorded 2026-11-25 on the shared 2-core project machine under load average ~10-13 (six engineers building):
//! ldae 453 ms vs dcm2niix 147 ms (ratio 0.32x); after dropping the sidecar fsync, 527 ms vs 185 ms (0.35x).
//! The ≥2x goal is not met there; ldae used ~0.25 s CPU (user+sys) against dcm2niix's ~0.1 s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(cmd: &mut Command) -> Result<f64, String> {
    let t = Instant::now();
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(s)
}

fn main() {
    if let Err(e) = run() {
        println!("convert bench: {e}");
    }
}

fn run() -> Result<(), String> {
    let shared = std::env::var_os("LDAE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let testdata = shared.join("testdata");
    if !testdata.is_dir() {
        return Err(format!("shared corpus not found at {} (set LDAE_SHARED): skipped", shared.display()));
    }
    // Same disk as the build: a folder under the target directory.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let work = target.join("bench-convert");
    let series = work.join("series");
    if !series.join("IM0189.dcm").exists() && std::fs::read_dir(&series).map(|d| d.count()).unwrap_or(0) < 189 {
        let _ = std::fs::remove_dir_all(&series);
        let st = Command::new("python3")
            .arg(testdata.join("scripts/make_bench_series.py"))
            .arg(&series)
            .current_dir(&testdata)
            .output()
            .map_err(|e| format!("python3: {e}"))?;
        if !st.status.success() {
            return Err(format!(
                "building the series failed (pip install numpy nibabel pydicom): {}",
                String::from_utf8_lossy(&st.stderr)
            ));
        }
    }
    let n = std::fs::read_dir(&series).map_err(|e| e.to_string())?.count();
    let ldae = env!("CARGO_BIN_EXE_ldae");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..=RUNS {
        let out_l = work.join("out_ldae");
        let out_d = work.join("out_dcm2niix");
        for d in [&out_l, &out_d] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        let l = time(
            Command::new(ldae)
                .args(["--config", "/nonexistent/ldae.toml", "--log", "warn", "convert", "--uncompressed", "-o"])
                .arg(&out_l)
                .arg(&series),
        )?;
        let d = time(Command::new("dcm2niix").args(["-z", "n", "-b", "n", "-o"]).arg(&out_d).arg(&series))?;
        if run > 0 {
            // run 0 warms the page cache for both
            ours.push(l);
            theirs.push(d);
        }
    }
    let (mo, mt) = (median(ours), median(theirs));
    println!("convert bench: {n} files (1 mm MNI T1 series), {RUNS} runs each, uncompressed output, same disk");
    println!("  ldae convert    median {:.1} ms", mo * 1e3);
    println!("  dcm2niix -z n   median {:.1} ms", mt * 1e3);
    println!("  ratio dcm2niix / ldae = {:.2}x (goal >= 2)", mt / mo);
    Ok(())
}
