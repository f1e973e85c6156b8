//! The real `ldae` binary on the tiny fixture model directories (shared/ldae/fixtures/tiny-a and tiny-b used as
//! model dirs: config.json + safetensors weights): encode a model-input NIfTI, decode the codes back to a volume on
//! the same grid, interpolate, manipulate; bad inputs fail with one clear message naming the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use ldae::model::codes::load_codes;
use ldae::nifti::{read_nifti, write_nifti};
use ldae::volume::{Affine, Volume};
use ndarray::Array3;

mod common;

fn fixture(name: &str) -> Option<PathBuf> {
    common::shared_data(&format!("ldae/fixtures/{name}"))
}

fn ldae(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ldae")).args(args).output().expect("run ldae");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tensors(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).expect("fixture")
}

fn write_input(t: &Tensor, affine: Affine, path: &Path) {
    let (_, _, x, y, z) = t.dims5().unwrap();
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    write_nifti(path, &Volume::new(Array3::from_shape_vec((x, y, z), v).unwrap(), affine)).unwrap();
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

#[test]
fn encode_decode_interpolate_manipulate_round_trip() {
    for name in ["tiny-a", "tiny-b"] {
        let Some(dir) = fixture(name) else { return };
        let tmp = tempfile::tempdir().unwrap();
        let p = |f: &str| tmp.path().join(f).to_string_lossy().into_owned();
        let inputs = tensors(&dir.join("inputs.safetensors"));
        let affine = Affine::from_spacing_origin([8.0, 8.0, 8.0], [-90.0, -126.0, -72.0]);
        write_input(&inputs["volume_a"], affine, Path::new(&p("a.nii.gz")));
        write_input(&inputs["volume_b"], affine, Path::new(&p("b.nii")));
        let m = dir.to_string_lossy().into_owned();

        let (ok, err) = ldae(&["encode", "--model", &m, "--steps", "5", &p("a.nii.gz"), "-o", &p("a.safetensors")]);
        assert!(ok, "{name}: encode failed: {err}");
        let codes = load_codes(Path::new(&p("a.safetensors"))).unwrap();
        assert_eq!(codes.steps, Some(5));
        assert_eq!(codes.affine, Some(affine));
        let y = codes.codes.y_sem.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want_y =
            tensors(&dir.join("semantic.safetensors"))["y_sem_a"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(rel_err(&y, &want_y) < 1e-4, "{name}: y_sem from the CLI differs from the reference");

        let (ok, err) = ldae(&["decode", "--model", &m, "--steps", "5", &p("a.safetensors"), "-o", &p("rec.nii.gz")]);
        assert!(ok, "{name}: decode failed: {err}");
        let rec = read_nifti(Path::new(&p("rec.nii.gz"))).unwrap();
        let (_, _, x, yy, z) = inputs["volume_a"].dims5().unwrap();
        assert_eq!(rec.shape(), [x, yy, z]);
        assert!(rec.affine.max_abs_diff(&affine) < 1e-4, "{name}: decoded affine {:?}", rec.affine);
        let want =
            tensors(&dir.join("ddim.safetensors"))["recon_ldae"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got: Vec<f32> = rec.data.iter().copied().collect();
        // Chained encode → decode (see model_parity's chained check for why this bound is looser).
        assert!(rel_err(&got, &want) < 2e-2, "{name}: reconstruction differs from the reference's");

        // Interpolation from a stored code file and a NIfTI.
        let (ok, err) = ldae(&[
            "interpolate",
            "--model",
            &m,
            "--steps",
            "5",
            &p("a.safetensors"),
            &p("b.nii"),
            "--alpha",
            "0.4",
            "-o",
            &p("mid.nii.gz"),
        ]);
        assert!(ok, "{name}: interpolate failed: {err}");
        let mid = read_nifti(Path::new(&p("mid.nii.gz"))).unwrap();
        assert_eq!(mid.shape(), [x, yy, z]);
        assert!(mid.data.iter().all(|v| v.is_finite()));
        assert_ne!(mid.data, rec.data, "{name}: interpolation at 0.4 equals the plain reconstruction");

        // Manipulation with the fixture's direction and statistics.
        let man = tensors(&dir.join("manip.safetensors"));
        let mut dirf = HashMap::new();
        for k in ["direction", "semantic_mean", "semantic_std"] {
            dirf.insert(k.to_string(), man[k].clone());
        }
        candle_core::safetensors::save(&dirf, p("dir.safetensors")).unwrap();
        let (ok, err) = ldae(&[
            "manipulate",
            "--model",
            &m,
            "--steps",
            "5",
            &p("a.safetensors"),
            "--direction",
            &p("dir.safetensors"),
            "--scale",
            "2.0",
            "-o",
            &p("man.nii.gz"),
        ]);
        assert!(ok, "{name}: manipulate failed: {err}");
        let got: Vec<f32> = read_nifti(Path::new(&p("man.nii.gz"))).unwrap().data.iter().copied().collect();
        // Same x_t chain as the reconstruction, different y_sem.
        let want = man["recon_manip"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(rel_err(&got, &want) < 2e-2, "{name}: manipulation differs from the reference's");
    }
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    let Some(dir) = fixture("tiny-a") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let p = |f: &str| tmp.path().join(f).to_string_lossy().into_owned();
    let m = dir.to_string_lossy().into_owned();
    // Garbage instead of a NIfTI.
    std::fs::write(p("junk.nii.gz"), b"\x1f\x8b not really gzip").unwrap();
    let (ok, err) = ldae(&["encode", "--model", &m, "--steps", "5", &p("junk.nii.gz"), "-o", &p("o.safetensors")]);
    assert!(!ok && err.contains("junk.nii.gz"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A volume of the wrong shape.
    let t = Tensor::zeros((1, 1, 10, 10, 10), candle_core::DType::F32, &Device::Cpu).unwrap();
    write_input(&t, Affine::identity(), Path::new(&p("small.nii")));
    let (ok, err) = ldae(&["encode", "--model", &m, "--steps", "5", &p("small.nii"), "-o", &p("o.safetensors")]);
    assert!(!ok && err.contains("model input shape"), "{err}");
    // Codes that are not codes.
    std::fs::write(p("bad.safetensors"), [0u8; 7]).unwrap();
    let (ok, err) = ldae(&["decode", "--model", &m, &p("bad.safetensors"), "-o", &p("x.nii")]);
    assert!(!ok && err.contains("bad.safetensors"), "{err}");
    // A model directory without weights.
    let (ok, err) = ldae(&["encode", "--model", &p(""), "--steps", "5", &p("small.nii"), "-o", &p("o.safetensors")]);
    assert!(!ok && err.contains("loading model"), "{err}");
    // Steps beyond the schedule.
    let (ok, err) = ldae(&["decode", "--model", &m, "--steps", "5000", &p("bad.safetensors"), "-o", &p("x.nii")]);
    assert!(!ok && !err.contains("panicked"), "{err}");
    assert!(!Path::new(&p("o.safetensors")).exists() && !Path::new(&p("x.nii")).exists());
}
