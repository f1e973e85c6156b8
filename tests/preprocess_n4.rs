//! N4 bias correction with ground truth: a real head (Colin27 with skull, MNI space, resampled to 2.5 mm) is
//! multiplied by a known smooth field (about ±20 %), `ldae n4` (the real binary) estimates the field, and the
//! residual field (estimated / true, normalised) must be nearly flat inside the brain: its coefficient of
//! variation is bounded at about 3× what was measured. Correcting the unbiased head must change it little.

use std::path::{Path, PathBuf};
use std::process::Command;

use ldae::nifti::{read_nifti, write_nifti};
use ldae::preprocess::n4::field_ratio_cv;
use ldae::preprocess::pyramid::downsample_to;
use ldae::preprocess::resample::{resample, Grid, Interp};
use ldae::volume::{Affine, Volume};

mod common;

fn ldae(args: &[&str]) -> serde_json::Value {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/ldae.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_ldae"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("LDAE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "ldae {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The head at 2.5 mm and the MNI brain mask on its grid (both are in MNI space).
fn head_and_mask() -> Option<(Volume, Volume)> {
    let ch2 = common::shared_data("testdata/volumes/mricron/ch2.nii.gz")?;
    let head = downsample_to(&read_nifti(&ch2).unwrap(), 2.5);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/templates");
    let mask = read_nifti(&dir.join("mni152_brain_mask_nilearn_res1.nii.gz")).unwrap();
    let mut m = resample(&mask, &Grid::of(&head), &Affine::identity(), Interp::Linear, 0.0).unwrap();
    m.data.mapv_inplace(|v| if v > 0.5 { 1.0 } else { 0.0 });
    Some((head, m))
}

/// The known field: low-order (linear, one cross term, one quadratic) in coordinates scaled to [-1, 1].
fn true_field(grid: &Volume) -> Volume {
    let n = grid.shape();
    let data = ndarray::Array3::from_shape_fn(n, |(i, j, k)| {
        let c = |x: usize, n: usize| 2.0 * x as f64 / (n - 1) as f64 - 1.0;
        let (x, y, z) = (c(i, n[0]), c(j, n[1]), c(k, n[2]));
        (0.15 * x - 0.12 * y + 0.08 * x * z + 0.10 * (z * z - 0.3)).exp() as f32
    });
    Volume::new(data, grid.affine)
}

fn run_n4(dir: &Path, input: &Volume, mask: &Volume, name: &str) -> (Volume, Volume, serde_json::Value) {
    let (i, m, o, f) = (
        dir.join(format!("{name}.nii.gz")),
        dir.join("mask.nii.gz"),
        dir.join(format!("{name}_n4.nii.gz")),
        dir.join(format!("{name}_field.nii.gz")),
    );
    write_nifti(&i, input).unwrap();
    write_nifti(&m, mask).unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let summary = ldae(&["n4", &s(&i), "-o", &s(&o), "--mask", &s(&m), "--field", &s(&f), "--shrink", "2", "--json"]);
    (read_nifti(&o).unwrap(), read_nifti(&f).unwrap(), summary)
}

#[test]
fn a_known_bias_field_is_recovered_and_an_unbiased_head_changes_little() {
    let Some((head, mask)) = head_and_mask() else { return };
    let truth = true_field(&head);
    let mut biased = head.clone();
    biased.data.zip_mut_with(&truth.data, |v, f| *v *= f);
    let dir = tempfile::tempdir().unwrap();
    let bias_cv = field_ratio_cv(&truth, &Volume::new(truth.data.mapv(|_| 1.0), truth.affine), &mask);
    let (corrected, field, summary) = run_n4(dir.path(), &biased, &mask, "biased");
    let residual_cv = field_ratio_cv(&field, &truth, &mask);
    let corrected_cv = field_ratio_cv(&corrected, &head, &mask);
    eprintln!(
        "true field cv {bias_cv:.4} in the brain; residual (estimated / true) cv {residual_cv:.4}; corrected / clean \
         cv {corrected_cv:.4}; n4 {:.1} s, levels {}",
        summary["seconds"].as_f64().unwrap_or(f64::NAN),
        summary["levels"]
    );
    assert!(bias_cv > 0.05, "the test field is too weak to test anything: {bias_cv}");
    // Measured (2-core dev box, debug): true field cv 0.074, residual 0.037 (antspyx's N4 on the same input:
    // 0.038). The bound must stay well below the uncorrected 0.074, so it is 1.35× the measurement, not 3×.
    assert!(residual_cv < 0.05, "residual field cv {residual_cv} vs the true field's {bias_cv}");
    assert_eq!(summary["levels"].as_array().map(|l| l.len()), Some(3));

    let (clean_corrected, _, _) = run_n4(dir.path(), &head, &mask, "clean");
    let change = field_ratio_cv(&clean_corrected, &head, &mask);
    eprintln!("unbiased head: corrected / original cv {change:.4}");
    // Measured: 0.026 (Colin27 is an average of 27 scans: little bias of its own).
    assert!(change < 0.5 * bias_cv, "n4 changed an unbiased head by cv {change}");
}
