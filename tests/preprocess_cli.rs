//! The real `ldae` binary on real files: `register`, `preprocess` and `unwarp` on the native ITK head T1, and
//! one clear error (naming the file) for truncated, random or wrong inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use ldae::nifti::read_nifti;
use ldae::preprocess::mask::dice;
use ldae::preprocess::transform::Transform;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn native() -> PathBuf {
    root().join("tests/data/preprocess/KmeansTest_T1UCharRaw.nii.gz")
}

/// Run `ldae` from a folder outside the checkout, without --config: it must find the checkout's
/// config/ldae.toml and, through it, the shipped template. Returns (ok, stderr).
fn ldae(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ldae"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("LDAE_CONFIG")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn register_preprocess_unwarp_on_a_real_head() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, tfm) = (dir.path().join("reg.nii.gz"), dir.path().join("t1_to_mni.txt"));
    let (ok, err) = ldae(&["register", s(&native()), "-o", s(&reg), "--transform", s(&tfm)]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&tfm).unwrap();
    assert!(text.starts_with("#Insight Transform File V1.0") && text.contains("AffineTransform_double_3_3"));
    let t = Transform::read(&tfm).unwrap();
    let template =
        read_nifti(&root().join("weights/templates/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    let registered = read_nifti(&reg).unwrap();
    assert_eq!(registered.shape(), template.shape());
    assert!(registered.affine.max_abs_diff(&template.affine) < 1e-4);

    // preprocess: the model input's spacing and shape come from the model directory's config.json.
    let (input, mask, tjson) =
        (dir.path().join("input.nii.gz"), dir.path().join("mask.nii.gz"), dir.path().join("t.json"));
    let model = root().join("weights/demo");
    let (ok, err) = ldae(&[
        "preprocess",
        s(&native()),
        "--model",
        s(&model),
        "-o",
        s(&input),
        "--native-mask",
        s(&mask),
        "--transform",
        s(&tjson),
    ]);
    assert!(ok, "{err}");
    let cfg = ldae::model::config::ModelConfig::load(&model.join("config.json")).unwrap();
    let mi = read_nifti(&input).unwrap();
    assert_eq!(mi.shape(), cfg.data.resize_to);
    assert!((mi.spacing()[0] - cfg.data.pixdim).abs() < 1e-4);
    let (lo, hi) = mi.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    assert!(lo == 0.0 && (hi - 1.0).abs() < 1e-6, "range {lo}..{hi}");
    // The same scan registers to the same transform (deterministic), in JSON this time.
    let t2 = Transform::read(&tjson).unwrap();
    assert!(t2.matrix.max_abs_diff(&t.matrix) < 1e-6);

    // unwarp: the template mask back onto the native grid equals preprocess's native mask.
    let back = dir.path().join("mask_native.nii.gz");
    let tmask = root().join("weights/templates/mni152_brain_mask_nilearn_res1.nii.gz");
    let (ok, err) = ldae(&["unwarp", s(&tmask), "--transform", s(&tfm), "--reference", s(&native()), "-o", s(&back)]);
    assert!(ok, "{err}");
    let back = read_nifti(&back).unwrap();
    let native_mask = read_nifti(&mask).unwrap();
    let mut back_bin = back.clone();
    back_bin.data.mapv_inplace(|v| (v > 0.5) as u8 as f32);
    let d = dice(&back_bin, &native_mask).unwrap();
    assert!(d > 0.99, "unwarped mask vs native mask Dice {d}");
}

#[test]
fn bad_inputs_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(native()).unwrap();
    let truncated = dir.path().join("truncated.nii.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let random = dir.path().join("random.nii");
    std::fs::write(&random, (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    let out = dir.path().join("o.nii.gz");
    let tfm = dir.path().join("o.txt");
    for bad in [&truncated, &random, &dir.path().join("missing.nii.gz")] {
        let (ok, err) = ldae(&["register", s(bad), "-o", s(&out), "--transform", s(&tfm)]);
        assert!(!ok);
        assert!(err.contains(s(bad)) && err.trim().lines().count() == 1, "{err}");
        assert!(!out.exists() && !tfm.exists());
    }
    // A transform that is not one.
    let bad_t = dir.path().join("bad.txt");
    std::fs::write(&bad_t, "#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\n").unwrap();
    let (ok, err) =
        ldae(&["unwarp", s(&native()), "--transform", s(&bad_t), "--reference", s(&native()), "-o", s(&out)]);
    assert!(!ok && err.contains("bad.txt") && err.contains("BSplineTransform"), "{err}");
    // A model directory without config.json.
    let (ok, err) = ldae(&["preprocess", s(&native()), "--model", s(dir.path()), "-o", s(&out)]);
    assert!(!ok && err.contains("config.json"), "{err}");
    // A config whose template does not exist.
    let cfg = dir.path().join("ldae.toml");
    std::fs::write(&cfg, "[preprocess]\ntemplate = \"/nonexistent/t1.nii.gz\"\n").unwrap();
    let (ok, err) = ldae(&["--config", s(&cfg), "register", s(&native()), "-o", s(&out), "--transform", s(&tfm)]);
    assert!(!ok && err.contains("/nonexistent/t1.nii.gz"), "{err}");
}
