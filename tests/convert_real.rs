//! Real scanner DICOM from shared/testdata/real_dicom: Siemens mosaics and an enhanced (Philips) MR multi-frame
//! convert with the same geometry and voxels as dcm2niix's reference conversions in reference_dcm2niix/.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::*;
use ldae::config::ConvertConfig;
use ldae::dicom::convert_paths;
use ldae::nifti::read_nifti;

/// A real file, gunzipped into `work` when the package ships it gzipped.
fn real_file(root: &Path, rel: &str, work: &Path) -> PathBuf {
    let p = root.join(rel);
    if rel.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&p).expect("open")).read_to_end(&mut out).expect("gunzip");
        let dst = work.join(rel.replace('/', "_").trim_end_matches(".gz"));
        std::fs::write(&dst, out).expect("write");
        dst
    } else {
        p
    }
}

#[test]
fn mosaics_and_enhanced_mr_match_dcm2niix_reference() {
    let Some(root) = shared_data("testdata/real_dicom") else { return };
    let work = tempfile::tempdir().expect("tempdir");
    // (file, reference, what, compare voxels too)
    // nibabel/0.dcm tiles 48 images 7x7 into 256 columns (256/7 is not whole): geometry agrees with dcm2niix (the
    // corner offset uses 256/7), but dcm2niix's voxels beyond the first tile row match no 36x36 tile of the mosaic
    // at all, so only its geometry is compared.
    let cases = [
        ("dicom3tools/0051.dcm", "dicom3tools/0051.nii.gz", "Siemens mosaic 5x5, 20 slices", true),
        ("heudiconv/axasc35.dcm", "heudiconv/axasc35.nii.gz", "Siemens mosaic 6x6, 35 slices", true),
        ("nibabel/0.dcm", "nibabel/0.nii.gz", "Siemens mosaic 7x7 of 36x36 in 256x256, 48 slices", false),
        ("nibabel/siemens_dwi_0.dcm.gz", "nibabel/siemens_dwi_0.nii.gz", "Siemens DWI mosaic 7x7", true),
        ("nibabel/philips_mprage.dcm.gz", "nibabel/philips_mprage.nii.gz", "Philips enhanced MR, 176 frames", true),
    ];
    let mut fails = Vec::new();
    for (rel, reference, what, voxels) in cases {
        let file = real_file(&root, rel, work.path());
        let report = convert_paths(std::slice::from_ref(&file), &ConvertConfig::default());
        if report.converted.len() != 1 || !report.rejected.is_empty() {
            fails.push(format!("{rel} ({what}): {} volumes, rejected {:?}", report.converted.len(), report.rejected));
            continue;
        }
        let ours = &report.converted[0].volume;
        let theirs = read_nifti(&root.join("reference_dcm2niix").join(reference)).expect("reference");
        match compare(ours, &theirs) {
            // dcm2niix stores its affine in float32 and derives it its own way: 1e-2 mm.
            Ok(d) if d.affine <= 1e-2 && (d.max_abs == 0.0 || !voxels) => {}
            Ok(d) => fails.push(format!("{rel} ({what}): {d:?}")),
            Err(e) => fails.push(format!("{rel} ({what}): {e}; ours {:?}, theirs {:?}", ours.affine, theirs.affine)),
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
