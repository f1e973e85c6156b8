//! Hostile NIfTI, `.pth` and safetensors files against the real `ldae` binary, one process per file.
//!
//! tests/hostile/make_nifti_pth.py writes the corpus (huge vox_offset, huge/negative/overflowing dims, a gzip
//! bomb, truncated data, lying datatype/bitpix, bad magic, NaN affines; pickles that call os.system, nest
//! 100 000 deep, index the memo at 2³²−1, claim a 4 GiB string, multiply themselves through the memo; safetensors
//! with lying header lengths and offsets). Each file must be refused with exit code ≠ 0 and one error line that
//! names the file, no panic, at most 256 MiB peak resident memory (the child's `ru_maxrss` from `wait4`) and 5 s.

use std::path::{Path, PathBuf};
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// What part of the reason each file's error must carry (beyond its name).
fn expected_reason(name: &str) -> &'static str {
    match name {
        "nifti_huge_vox_offset.nii" | "nifti_vox_offset_f32_max.nii" => "vox_offset",
        "nifti_huge_vox_offset.nii.gz" => "inflated size",
        "nifti_huge_dims.nii" | "nifti_dims_product_overflow.nii" => "voxel count",
        "nifti_dim_over_max.nii" => "dimension",
        "nifti_negative_dims.nii" => "dim[2] = -5",
        "nifti_gzip_bomb.nii.gz" | "nifti_unknown_datatype.nii" | "nifti_complex_datatype.nii" => "datatype",
        "nifti_gzip_claims_more.nii.gz" => "gzip",
        "nifti_lying_bitpix.nii" => "bitpix",
        "nifti_four_volumes.nii" => "4 volumes",
        "nifti_nan_pixdim.nii" | "nifti_nan_sform.nii" | "nifti_inf_qform.nii" => "non-finite",
        "nifti_truncated.nii" | "nifti_truncated.nii.gz" | "nifti_gz_trailer_cut.nii.gz" => "truncated",
        "weights_os_system.pth" => "refusing global os.system",
        "weights_stack_global_exec.pth" => "refusing global builtins.exec",
        "weights_deep_nesting.pth" | "weights_deep_tuples.pth" => "nest",
        "weights_huge_memo_index.pth" => "memo",
        "weights_memo_bomb.pth" => "larger than",
        "weights_binunicode_4gib.pth" | "weights_binunicode8_huge.pth" | "weights_binbytes_4gib.pth" => "truncated",
        "weights_storage_numel_huge.pth" => "storage",
        "weights_zero_stride_huge.pth" => "max_element_bytes",
        _ => "",
    }
}

#[test]
fn every_hostile_file_is_one_clear_error_within_bounds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let made = Command::new("python3").arg(root.join("tests/hostile/make_nifti_pth.py")).arg(&corpus).status();
    match made {
        Ok(s) => assert!(s.success(), "make_nifti_pth.py failed"),
        Err(e) => {
            assert!(!require_all(), "python3 is needed for the hostile corpus: {e}");
            eprintln!("SKIPPED: python3 not runnable ({e})");
            return;
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 50, "only {} hostile files", names.len());
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for name in &names {
        let src = corpus.join(name);
        let work = tmp.path().join(format!("work-{name}"));
        std::fs::create_dir_all(&work).expect("work dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ldae"));
        cmd.current_dir(&root);
        let named: PathBuf = if name.starts_with("nifti_") {
            cmd.args(["register"]).arg(&src).arg("-o").arg(work.join("out.nii.gz"));
            cmd.arg("--transform").arg(work.join("t.json"));
            src.clone()
        } else if let Some(stem) = name.strip_prefix("weights_") {
            let ext = if stem.ends_with(".pth") { "pth" } else { "safetensors" };
            let dest = work.join(format!("autoencoderkl.{ext}"));
            std::fs::copy(&src, &dest).expect("copy");
            cmd.args(["weights", "convert"]).arg(&work);
            dest
        } else {
            let dest = work.join(name.replace(".st", ".safetensors"));
            std::fs::copy(&src, &dest).expect("copy");
            cmd.arg("decode").arg(&dest).arg("--model").arg(&work).arg("-o").arg(work.join("out.nii.gz"));
            dest
        };
        let Measured { code, stderr, rss_kib: rss, seconds: secs } =
            run_measured(cmd, Duration::from_secs_f64(MAX_SECONDS * 4.0));
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let shown = named.display().to_string();
        table.push(format!("{name}: exit {code}, {} KiB, {secs:.2} s: {}", rss, lines.join(" | ")));
        let reason = expected_reason(name);
        if code <= 0 {
            failures.push(format!("{name}: exit code {code}"));
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked"));
        }
        if lines.len() != 1 || !lines[0].contains(&shown) || !lines[0].contains(reason) {
            failures.push(format!("{name}: want one line naming {shown} and {reason:?}, got {lines:?}"));
        }
        if rss > MAX_RSS_KIB {
            failures.push(format!("{name}: peak RSS {rss} KiB"));
        }
        if secs > MAX_SECONDS {
            failures.push(format!("{name}: {secs:.1} s"));
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {} hostile files misbehaved:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

#[test]
fn the_corpus_is_deterministic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tmp");
    let mut digests = Vec::new();
    for run in ["a", "b"] {
        let dir = tmp.path().join(run);
        match Command::new("python3").arg(root.join("tests/hostile/make_nifti_pth.py")).arg(&dir).status() {
            Ok(s) => assert!(s.success()),
            Err(e) => {
                assert!(!require_all(), "python3 is needed: {e}");
                eprintln!("SKIPPED: python3 not runnable ({e})");
                return;
            }
        }
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| {
                let p = e.expect("entry").path();
                (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), read(&p))
            })
            .collect();
        files.sort();
        digests.push(files);
    }
    assert!(digests[0] == digests[1], "two runs of make_nifti_pth.py differ");
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read")
}
