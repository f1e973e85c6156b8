//! The hostile DICOM corpus (tests/hostile/make_dicom.py: lying lengths, counts and dimensions, deep nesting,
//! deflate bombs, codestreams claiming 30000×30000, truncations) through the real `ldae convert` binary, one
//! process per file: each must be refused with exit code 1 and exactly one `rejected: ` line naming the file,
//! never a panic, within 256 MiB of resident memory (the child's peak RSS from `wait4`) and 5 s.

use std::path::{Path, PathBuf};
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Run `ldae convert FILE -o OUT` in its own process and measure it.
fn convert_one(file: &Path, out: &Path) -> Measured {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ldae"));
    cmd.args(["--config", "/nonexistent/ldae.toml", "--log", "warn", "convert"]).arg(file).arg("-o").arg(out);
    run_measured(cmd, Duration::from_secs_f64(MAX_SECONDS * 4.0))
}

fn make_corpus(dir: &Path) -> Option<Vec<PathBuf>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/make_dicom.py");
    let out = match Command::new("python3").arg(&script).arg(dir).output() {
        Ok(o) => o,
        Err(e) => {
            assert!(std::env::var_os("LDAE_REQUIRE_ALL").is_none(), "python3 is required: {e}");
            eprintln!("SKIPPED: python3 not found ({e})");
            return None;
        }
    };
    assert!(out.status.success(), "make_dicom.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("corpus dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    Some(files)
}

#[test]
fn every_hostile_dicom_file_is_rejected_alone_within_memory_and_time() {
    let work = tempfile::tempdir().expect("tempdir");
    let corpus = work.path().join("corpus");
    let Some(files) = make_corpus(&corpus) else { return };
    // The kinds the issue names must all be there (the generator is the corpus's only definition).
    for kind in [
        "frames_4e9.dcm",
        "jpeg_baseline_sof_30000.dcm",
        "jpeg_extended12_sof_30000.dcm",
        "jpeg_lossless_sof_30000.dcm",
        "jpeg_ls_sof_30000.dcm",
        "j2k_siz_30000.dcm",
        "nested_sq_20000.dcm",
        "deflate_bomb_2gib.dcm",
        "no_preamble_element_4gib.dcm",
        "raw_implicit_element_4gib.dcm",
        "mosaic_images_4294967295.dcm",
        "rle_lying_offsets.dcm",
        "encap_100000_fragments.dcm",
    ] {
        assert!(corpus.join(kind).is_file(), "generator did not make {kind}");
    }
    assert!(files.len() >= 100, "expected the whole corpus, got {} files", files.len());
    let mut failures = Vec::new();
    let (mut worst_rss, mut worst_time) = (0i64, 0f64);
    for f in &files {
        let out = work.path().join("out");
        let o = convert_one(f, &out);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let lines: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("rejected: ")).collect();
        let mut why = Vec::new();
        if o.code != 1 {
            why.push(format!("exit code {:?}", o.code));
        }
        if lines.len() != 1 || !lines[0].starts_with(&format!("rejected: {}: ", f.display())) {
            why.push(format!("expected one rejection naming the file, got {lines:?}"));
        }
        if o.stderr.contains("panicked") {
            why.push("panicked".into());
        }
        if o.rss_kib > MAX_RSS_KIB {
            why.push(format!("peak RSS {} MiB", o.rss_kib / 1024));
        }
        if o.seconds > MAX_SECONDS {
            why.push(format!("took {:.2} s", o.seconds));
        }
        if !why.is_empty() {
            let tail: String = o.stderr.chars().take(400).collect();
            failures.push(format!("{name}: {} (stderr: {tail})", why.join("; ")));
        }
        if out.exists() && std::fs::read_dir(&out).map(|mut d| d.next().is_some()).unwrap_or(false) {
            failures.push(format!("{name}: something was written for a hostile file"));
        }
        let _ = std::fs::remove_dir_all(&out);
        worst_rss = worst_rss.max(o.rss_kib);
        worst_time = worst_time.max(o.seconds);
    }
    eprintln!("{} hostile files; worst peak RSS {} MiB, worst time {worst_time:.2} s", files.len(), worst_rss / 1024);
    assert!(
        failures.is_empty(),
        "{} of {} hostile files misbehaved:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
