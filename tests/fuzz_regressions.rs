//! Every input the fuzzers found (tests/data/fuzz/<target>/, see its README) is one clear error within the
//! hostile-input bounds: DICOM files through the real `ldae convert`, one process each (peak RSS from `wait4`);
//! bare 12-bit JPEG streams and bare pickles through the library functions the fuzz targets call, with this
//! process's peak RSS before and after.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz").join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fuzz findings in {}", dir.display());
    v
}

/// This process's peak resident memory so far, KiB.
fn self_peak_kib() -> i64 {
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct for this process.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss
}

#[test]
fn dicom_findings_are_rejected_alone_within_bounds() {
    let out = tempfile::tempdir().expect("tempdir");
    for target in ["dicom_header", "dicom_pixels"] {
        for f in inputs(target) {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ldae"));
            cmd.args(["--config", "/nonexistent/ldae.toml", "--log", "warn", "convert"]).arg(&f).arg("-o");
            cmd.arg(out.path());
            let m = run_measured(cmd, Duration::from_secs_f64(MAX_SECONDS * 4.0));
            let lines: Vec<&str> = m.stderr.lines().filter(|l| l.starts_with("rejected: ")).collect();
            let name = f.display().to_string();
            assert_eq!(m.code, 1, "{name}: exit code\n{}", m.stderr);
            assert!(lines.len() == 1 && lines[0].contains(&name), "{name}: one line naming it\n{}", m.stderr);
            assert!(!m.stderr.contains("panicked"), "{name}\n{}", m.stderr);
            assert!(m.rss_kib <= MAX_RSS_KIB, "{name}: peak RSS {} MiB", m.rss_kib / 1024);
            assert!(m.seconds <= MAX_SECONDS, "{name}: {:.2} s", m.seconds);
        }
    }
}

#[test]
fn jpeg12_and_pickle_findings_are_errors_within_bounds() {
    // One test, so that no other test of this binary allocates while the peak is read.
    for f in inputs("jpeg12") {
        let data = std::fs::read(&f).expect("read");
        let before = self_peak_kib();
        let t = Instant::now();
        // The size the DICOM header would give (the fuzz target's frame is 48×48).
        let r = ldae::dicom::jpeg12::decode(&data, (48, 48));
        let grew = self_peak_kib() - before;
        assert!(r.is_err(), "{}: decoded", f.display());
        assert!(grew <= MAX_RSS_KIB, "{}: peak RSS grew {} MiB", f.display(), grew / 1024);
        assert!(t.elapsed().as_secs_f64() <= MAX_SECONDS, "{}", f.display());
    }
    for f in inputs("pickle") {
        let data = std::fs::read(&f).expect("read");
        let before = self_peak_kib();
        let t = Instant::now();
        let r = ldae::model::pickle::parse_state_dict(&data);
        let grew = self_peak_kib() - before;
        let e = r.err().unwrap_or_else(|| panic!("{}: parsed", f.display()));
        assert!(!e.to_string().is_empty());
        assert!(grew <= MAX_RSS_KIB, "{}: peak RSS grew {} MiB", f.display(), grew / 1024);
        assert!(t.elapsed().as_secs_f64() <= MAX_SECONDS, "{}", f.display());
    }
}
