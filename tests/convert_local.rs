//! The basics without ../shared: `ldae convert` (the real binary) on the small series in tests/data/dicom writes
//! one .nii.gz + .json per series, each equal to its truth by the corpus rule, with a complete sidecar.

mod common;

use std::process::Command;

use common::*;
use ldae::nifti::read_nifti;

#[test]
fn shipped_series_convert_to_their_truths_with_sidecars() {
    let out = tempfile::tempdir().expect("tempdir");
    let r = Command::new(env!("CARGO_BIN_EXE_ldae"))
        .args(["--config", "/nonexistent/ldae.toml", "convert"])
        .arg(data_dir().join("series"))
        .arg("-o")
        .arg(out.path())
        .output()
        .expect("run ldae");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(0), "{stderr}");
    let mut niis: Vec<_> = std::fs::read_dir(out.path())
        .expect("out")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .collect();
    niis.sort();
    // Case folder → the series description its output file is named after (two cases hold identical pixels).
    let cases = [
        ("enhanced_multiframe", "ENHANCED"),
        ("explicit_vr_le", "EXPLICIT_VR_LE"),
        ("jpeg_extended_12bit", "JPEG_EXTENDED_12BIT"),
        ("jpeg_ls_lossless", "JPEG_LS_LOSSLESS"),
    ];
    assert_eq!(niis.len(), cases.len(), "{niis:?}");
    let truth_dir = data_dir().join("truth");
    for (case, stem) in cases {
        let truth = read_nifti(&truth_dir.join(format!("{case}_truth.nii.gz"))).expect("truth");
        let expect = std::fs::read_to_string(truth_dir.join(format!("{case}.expect.txt"))).expect("expect");
        let tol = tolerance(&expect);
        let hits: Vec<_> = niis
            .iter()
            .filter(|p| p.to_string_lossy().contains(stem))
            .filter(|p| {
                let v = read_nifti(p).expect("output");
                compare(&v, &truth).ok().is_some_and(|d| check(&d, &tol).is_ok())
            })
            .collect();
        assert_eq!(hits.len(), 1, "{case}: outputs matching the truth: {hits:?}");
        let json_path = hits[0].to_string_lossy().replace(".nii.gz", ".json");
        let side: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json_path).expect("sidecar")).expect("sidecar json");
        for key in ["SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUIDs", "SeriesDescription", "AcquisitionDate"]
        {
            assert!(!side[key].is_null(), "{case}: sidecar lacks {key}: {side}");
        }
        assert_eq!(side["ConversionSoftwareVersion"], ldae::VERSION);
        let vs = side["VoxelSize"].as_array().expect("VoxelSize");
        let tvs = truth.spacing();
        let mut a: Vec<f64> = vs.iter().filter_map(|v| v.as_f64()).collect();
        let mut b = tvs.to_vec();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-3, "{case}: voxel size {a:?} vs truth {b:?}");
        }
        let name = hits[0].file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(!name.contains("SYNTH"), "no patient name in file names: {name}");
    }
}
