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

#[test]
fn read_header_gives_the_daemon_its_fields_without_pixels() {
    let p = data_dir().join("series/explicit_vr_le/IM0005.dcm");
    let h = ldae::dicom::read_header(&p).expect("header");
    assert_eq!(h.sop_instance_uid, "2.25.40393987762525732637201666486877479830");
    assert_eq!(h.series_instance_uid, "2.25.144642483842452152952603952631205656302");
    assert_eq!(h.instance_number, Some(5));
    assert_eq!(h.patient_id.as_deref(), Some("SYNTH-TS_EXPLICIT_VR_LE"));
    assert_eq!(h.modality.as_deref(), Some("MR"));
    assert_eq!(h.series_description.as_deref(), Some("TS_EXPLICIT_VR_LE"));
    assert_eq!(h.acquisition_date.as_deref(), Some("20260101"));
    assert_eq!(h.transfer_syntax, "1.2.840.10008.1.2.1");
    assert_eq!((h.rows, h.columns, h.number_of_frames), (Some(48), Some(48), 1));
    assert_eq!(h.frames.len(), 1);
    assert_eq!(h.frames[0].position, Some([-94.0, -68.8224089185, -47.6443345836]));
    // Enhanced MR: one FrameInfo per frame from the functional groups, each with its own position.
    let e = ldae::dicom::read_header(&data_dir().join("series/enhanced_multiframe/ENH0001.dcm")).expect("enhanced");
    assert_eq!(e.frames.len(), 40);
    assert!(e.frames.iter().all(|f| f.position.is_some() && f.orientation.is_some() && f.pixel_spacing.is_some()));
    assert_ne!(e.frames[0].position, e.frames[1].position);
    // Errors name the file.
    let bad = data_dir().join("bad/random_bytes.dcm");
    let err = ldae::dicom::read_header(&bad).expect_err("random bytes");
    assert!(err.to_string().contains("random_bytes.dcm"), "{err}");
}
