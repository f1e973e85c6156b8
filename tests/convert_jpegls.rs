//! ldae's own JPEG-LS decoder (src/dicom/jpegls.rs) against independent decoders and encoders:
//! - real JPEG-LS files shipped by pydicom (lossless, signed 16-bit; near-lossless, 16-bit): the decoded stored
//!   values must hash to what pydicom's plugins and GDCM decoded (shared/testdata/real_dicom/decoded_truth.json);
//! - dcmtk's `dcmcjpls` (CharLS inside) encoding the explicit-VR corpus series near-lossless at NEAR = 3: every
//!   voxel within NEAR of the truth, and equal, voxel for voxel, to dcmtk's own decode (`dcmdjpls`).
//!
//! The lossless synthetic series are covered by convert_oracle (transfer_syntaxes/jpeg_ls_lossless, exact).
//!
//! A missing tool or data file goes through `common::require` (`tool`, `shared_data`, `python_modules`), which
//! fails the test under `LDAE_REQUIRE_ALL=1` (CI) and only skips, loudly, without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use dicom_dictionary_std::tags;
use ldae::config::ConvertConfig;
use ldae::dicom::convert_paths;
use ldae::dicom::jpegls;
use ldae::dicom::pixels::{decode_slices, open_full, SliceRequest};
use ldae::dicom::read_header;
use ldae::limits::Limits;
use ldae::nifti::read_nifti;
use sha2::{Digest, Sha256};

/// Stored values of a single-frame file through ldae's pixel path, little-endian in the file's sample type.
fn stored_values(path: &Path) -> Vec<u8> {
    let h = read_header(path).expect("header");
    let req = SliceRequest { frame: 0, tile: None, slope: 1.0, intercept: 0.0 };
    let v = decode_slices(&h, &[req], &Limits::default()).expect("decode").remove(0);
    let mut bytes = Vec::with_capacity(v.len() * 2);
    for x in v {
        if h.pixel_representation == Some(1) {
            bytes.extend_from_slice(&(x as i16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&(x as u16).to_le_bytes());
        }
    }
    bytes
}

/// The JPEG-LS decoder alone on a file's fragments (for a file without the series attributes the converter
/// needs, such as pydicom's JPEGLSNearLossless_16.dcm).
fn decoder_values(path: &Path, rows: usize, cols: usize) -> Vec<u8> {
    let obj = open_full(path, &Limits::default()).expect("open");
    let px = obj.get(tags::PIXEL_DATA).expect("pixel data");
    let dicom_core::value::Value::PixelSequence(seq) = px.value() else { panic!("{path:?}: not encapsulated") };
    jpegls::decode_fragments(seq.fragments(), 1, rows, cols, 2).expect("decode")
}

#[test]
fn real_jpeg_ls_files_decode_to_the_reference_values() {
    let Some(root) = shared_data("testdata/real_dicom") else { return };
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("decoded_truth.json")).expect("truth")).expect("json");
    let lossless = "pydicom/MR_small_jpeg_ls_lossless.dcm";
    let near = "pydicom/JPEGLSNearLossless_16.dcm";
    for (rel, ts, values) in [
        (lossless, "1.2.840.10008.1.2.4.80", stored_values(&root.join(lossless))),
        (near, "1.2.840.10008.1.2.4.81", decoder_values(&root.join(near), 50, 10)),
    ] {
        let t = &truth[rel];
        assert_eq!(t["transfer_syntax"], ts, "{rel}");
        assert_eq!(t["decoders_agree"], true, "{rel}");
        assert_eq!(hex::encode(Sha256::digest(&values)), t["sha256_le"].as_str().expect("sha"), "{rel}: values differ");
    }
}

/// Run a dcmtk tool on every file of `files` into `out`.
fn dcmtk(tool: &str, args: &[&str], files: &[PathBuf], out: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(out).expect("mkdir");
    files
        .iter()
        .enumerate()
        .map(|(n, f)| {
            let dst = out.join(format!("f{n:04}.dcm"));
            let o = Command::new(tool).args(args).arg(f).arg(&dst).output().expect("run dcmtk");
            assert!(o.status.success(), "{tool} {f:?}: {}", String::from_utf8_lossy(&o.stderr));
            dst
        })
        .collect()
}

#[test]
fn dcmtk_near_lossless_decodes_within_near_and_equal_to_dcmtk() {
    let Some(case) = shared_data("testdata/synthetic/transfer_syntaxes/explicit_vr_le") else { return };
    if !tool("dcmcjpls", &["--version"]) || !tool("dcmdjpls", &["--version"]) {
        return;
    }
    const NEAR: f64 = 3.0;
    let work = tempfile::tempdir().expect("tmp");
    let src = dicom_files(&case);
    let near = dcmtk("dcmcjpls", &["+en", "+md", "3"], &src, &work.path().join("near"));
    let back = dcmtk("dcmdjpls", &[], &near, &work.path().join("back"));
    let ours = convert_paths(&near, &ConvertConfig::default());
    let theirs = convert_paths(&back, &ConvertConfig::default());
    assert!(ours.rejected.is_empty() && ours.converted.len() == 1, "{:?}", ours.rejected);
    assert!(theirs.rejected.is_empty() && theirs.converted.len() == 1, "{:?}", theirs.rejected);
    let truth = read_nifti(&truths(&case)[0]).expect("truth");
    let d = compare(&ours.converted[0].volume, &truth).expect("grid");
    println!("near-lossless NEAR=3: max |ours - truth| {}, rmse {:.3}", d.max_abs, d.rmse);
    assert!(d.affine <= 1e-3 && d.max_abs <= NEAR, "{d:?}");
    assert!(d.max_abs > 0.0, "NEAR=3 coding changed nothing: was it really near-lossless?");
    let e = compare(&ours.converted[0].volume, &theirs.converted[0].volume).expect("grid");
    assert_eq!(e.max_abs, 0.0, "ours and dcmtk's decode differ: {e:?}");
}
