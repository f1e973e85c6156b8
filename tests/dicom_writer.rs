//! The synthetic-series DICOM writer against real readers: a small oblique volume is written as Multi-frame
//! Grayscale Word SC (with functional groups) and as MR Image Storage, with the patient, study and technique of
//! a real source series (snapshots taken from tests/data/shared/testdata/longitudinal), and then
//! - Debian's `dciodvfy` checks every file: no `Error` line except the one about (0008,001C) Synthetic Data,
//!   an attribute the 2022 build's dictionary predates (it reports it as an unrecognised even-group attribute);
//!   dciodvfy exits 0 even with errors, so its stderr is parsed;
//! - `dcmdump +P 0008,001c` prints YES;
//! - `dcm2niix` converts the series back onto the same world grid (both classes: v1.0.20220720 reads the SC's
//!   per-frame Plane Position and shared Plane Orientation / Pixel Measures like an enhanced MR, and keeps the
//!   series-wide slope/intercept in scl_slope/scl_inter);
//! - ldae's own converter reads both back to the same voxels (within half the quantisation step) and affine;
//! - a rerun writes byte-identical files under identical UIDs.
//!
//! Early returns go through common::require (`tool`, `shared_data`), which fails under LDAE_REQUIRE_ALL=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::NaiveDate;
use common::*;
use ldae::config::ConvertConfig;
use ldae::dicom::convert_paths;
use ldae::dicom::snapshot::SourceSnapshot;
use ldae::dicom::writer::{
    write_series, SourceSide, SyntheticContent, SyntheticInput, SyntheticRequest, SyntheticSopClass, WrittenSeries,
};
use ldae::limits::Limits;
use ldae::nifti::read_nifti;
use ldae::volume::{Affine, Volume};
use ndarray::Array3;

const SHAPE: (usize, usize, usize) = (40, 48, 36);

/// A right-handed oblique grid (rotated 12°, −17°, 23°), anisotropic voxels, RAS affine.
fn oblique_affine() -> Affine {
    let (a, b, c) = (12f64.to_radians(), (-17f64).to_radians(), 23f64.to_radians());
    let rx = [[1.0, 0.0, 0.0], [0.0, a.cos(), -a.sin()], [0.0, a.sin(), a.cos()]];
    let ry = [[b.cos(), 0.0, b.sin()], [0.0, 1.0, 0.0], [-b.sin(), 0.0, b.cos()]];
    let rz = [[c.cos(), -c.sin(), 0.0], [c.sin(), c.cos(), 0.0], [0.0, 0.0, 1.0]];
    let mul = |p: [[f64; 3]; 3], q: [[f64; 3]; 3]| {
        let mut m = [[0.0; 3]; 3];
        for r in 0..3 {
            for k in 0..3 {
                m[r][k] = (0..3).map(|t| p[r][t] * q[t][k]).sum();
            }
        }
        m
    };
    let rot = mul(rz, mul(ry, rx));
    let spacing = [1.1, 1.3, 2.0];
    let col = |k: usize| [rot[0][k] * spacing[k], rot[1][k] * spacing[k], rot[2][k] * spacing[k]];
    Affine::from_columns(col(0), col(1), col(2), [-21.5, 33.0, -17.25])
}

/// A smooth head-like blob with some texture, values ≈ 0..1200.
fn volume() -> Volume {
    let (ni, nj, nk) = SHAPE;
    let data = Array3::from_shape_fn((ni, nj, nk), |(i, j, k)| {
        let (x, y, z) = (i as f32 / ni as f32 - 0.5, j as f32 / nj as f32 - 0.5, k as f32 / nk as f32 - 0.5);
        let r2 = x * x / 0.16 + y * y / 0.2 + z * z / 0.18;
        let inside = (1.0 - r2).max(0.0);
        1100.0 * inside + 80.0 * (i as f32 * 0.7).sin() * (j as f32 * 0.3).cos() * inside + 0.37 * k as f32
    });
    Volume::new(data, oblique_affine())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

struct Fixture {
    earlier: SourceSnapshot,
    later: SourceSnapshot,
    volume: Volume,
    request: SyntheticRequest,
    content: SyntheticContent,
}

fn fixture() -> Option<Fixture> {
    let root = shared_data("testdata/longitudinal/dicom/sub-01")?;
    let limits = Limits::default();
    let earlier = SourceSnapshot::from_files(&files_in(&root.join("ses-20190314")), &limits).expect("snapshot a");
    let later = SourceSnapshot::from_files(&files_in(&root.join("ses-20220310")), &limits).expect("snapshot b");
    let (a, b) = (NaiveDate::from_ymd_opt(2019, 3, 14)?, NaiveDate::from_ymd_opt(2022, 3, 10)?);
    let target = NaiveDate::from_ymd_opt(2021, 6, 1)?;
    let alpha = (target - a).num_days() as f64 / (b - a).num_days() as f64;
    let request = SyntheticRequest {
        model_id: "ldae-brain-t1".into(),
        model_version: "1.0".into(),
        model_digest: "9f2c4e".repeat(8),
        alpha,
        target_date: target,
        steps: 100,
        seed: 42,
        code_version: "0.1.0-test".into(),
        created: NaiveDate::from_ymd_opt(2026, 1, 2)?.and_hms_opt(3, 4, 5)?,
        series_number: 9001,
    };
    Some(Fixture { earlier, later, volume: volume(), request, content: SyntheticContent::Image })
}

fn write(f: &Fixture, dir: &Path, class: SyntheticSopClass) -> WrittenSeries {
    let (a, b) = (NaiveDate::from_ymd_opt(2019, 3, 14).unwrap(), NaiveDate::from_ymd_opt(2022, 3, 10).unwrap());
    let earlier = SourceSide { series: f.earlier.reference(), date: a };
    let later = SourceSide { series: f.later.reference(), date: b };
    let input = SyntheticInput {
        volume: &f.volume,
        neighbour: &f.later,
        earlier: &earlier,
        later: &later,
        request: &f.request,
        content: f.content,
    };
    write_series(dir, &input, class, &Limits::default()).expect("write series")
}

#[test]
fn snapshot_of_a_real_series() {
    let Some(f) = fixture() else { return };
    let s = &f.later;
    assert_eq!(s.patient.patient_id.as_deref(), Some("SIMLDAE01"));
    assert_eq!(s.patient.patient_name.as_deref(), Some("SIM^SUBJECT01"));
    assert_eq!(s.patient.birth_date.as_deref(), Some("19500602"));
    assert_eq!(s.series.modality.as_deref(), Some("MR"));
    assert_eq!(s.series.series_description.as_deref(), Some("T1 MPRAGE"));
    assert_eq!(s.mr.scanning_sequence, vec!["GR", "IR"]);
    assert_eq!(s.mr.inversion_time, Some(900.0));
    assert_eq!(s.mr.repetition_time, Some(2300.0));
    assert!(s.frame_of_reference_uid.is_some());
    let n = files_in(&shared_data("testdata/longitudinal/dicom/sub-01/ses-20220310").expect("data")).len();
    assert_eq!(s.instances.len(), n);
    assert!(s.instances.windows(2).all(|w| w[0].sop_instance_uid < w[1].sop_instance_uid), "sorted, unique");
    assert_ne!(f.earlier.series.series_instance_uid, s.series.series_instance_uid);
    // Round trip through JSON (what the store keeps), and the name stays out of Debug.
    let json = serde_json::to_string(s).expect("json");
    let back: SourceSnapshot = serde_json::from_str(&json).expect("parse");
    assert_eq!(&back, s);
    assert!(!format!("{s:?}").contains("SUBJECT01"));
    // A series over the instance limit is refused, not cut.
    let small = Limits { max_series_instances: 10, ..Limits::default() };
    let files = files_in(&shared_data("testdata/longitudinal/dicom/sub-01/ses-20220310").expect("data"));
    assert!(SourceSnapshot::from_files(&files, &small).is_err());
}

/// `Error` lines of dciodvfy for one file (its stderr; the exit status says nothing).
fn dciodvfy_errors(file: &Path) -> (Vec<String>, Vec<String>) {
    let out = Command::new("dciodvfy").arg(file).output().expect("run dciodvfy");
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let errors = text.lines().filter(|l| l.starts_with("Error")).map(str::to_string).collect();
    let warnings = text.lines().filter(|l| l.starts_with("Warning")).map(str::to_string).collect();
    (errors, warnings)
}

#[test]
fn dciodvfy_accepts_both_sop_classes() {
    if !tool("dciodvfy", &["-version"]) {
        return;
    }
    let Some(f) = fixture() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    for class in [SyntheticSopClass::Sc, SyntheticSopClass::Mr] {
        let w = write(&f, &tmp.path().join(format!("{class:?}")), class);
        let mut all_warnings = std::collections::BTreeSet::new();
        for inst in &w.instances {
            let (errors, warnings) = dciodvfy_errors(&inst.path);
            // The 2022 Debian dciodvfy predates Synthetic Data (0008,001C): exactly that one line is allowed.
            let (allowed, other): (Vec<_>, Vec<_>) =
                errors.into_iter().partition(|l| l.to_ascii_lowercase().contains("0x0008,0x001c"));
            assert!(other.is_empty(), "{class:?} {}: dciodvfy errors {other:#?}", inst.path.display());
            assert!(allowed.len() <= 1, "{allowed:?}");
            all_warnings.extend(warnings);
        }
        eprintln!("{class:?}: {} file(s), dciodvfy warnings: {all_warnings:#?}", w.instances.len());
    }
}

#[test]
fn dcmdump_shows_synthetic_yes() {
    if !tool("dcmdump", &["--version"]) {
        return;
    }
    let Some(f) = fixture() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    for class in [SyntheticSopClass::Sc, SyntheticSopClass::Mr] {
        let w = write(&f, tmp.path(), class);
        let out =
            Command::new("dcmdump").args(["+P", "0008,001c"]).arg(&w.instances[0].path).output().expect("dcmdump");
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("[YES]"), "{class:?}: {s}");
        let all = Command::new("dcmdump").arg(&w.instances[0].path).output().expect("dcmdump");
        let all = String::from_utf8_lossy(&all.stdout);
        for needle in
            ["[SYNTHETIC", "[RESEARCH]", "[DERIVED\\SECONDARY", "[109100]", "[121322]", "[121323]", "SIM^SUBJECT01"]
        {
            assert!(all.contains(needle), "{class:?}: {needle} missing");
        }
    }
}

/// Compare a read-back volume to the input on the world grid: `ours⁻¹ · theirs` must be a signed permutation
/// with an integer offset (within `grid_tol`), and every voxel must agree within `value_tol`.
/// Returns (largest grid deviation, largest value deviation).
fn compare_on_grid(input: &Volume, theirs: &Volume, grid_tol: f64, value_tol: f64) -> (f64, f64) {
    let inv = input.affine.inverse().expect("invertible");
    let m = inv.matmul(&theirs.affine);
    let mut grid_dev: f64 = 0.0;
    for r in 0..3 {
        for c in 0..4 {
            grid_dev = grid_dev.max((m.0[r][c] - m.0[r][c].round()).abs());
        }
    }
    assert!(grid_dev <= grid_tol, "grids differ by {grid_dev} voxel: {m:?}");
    let [ni, nj, nk] = theirs.shape();
    assert_eq!(ni * nj * nk, input.data.len(), "voxel count");
    let mut value_dev: f64 = 0.0;
    for ((i, j, k), &v) in theirs.data.indexed_iter() {
        let p = m.apply([i as f64, j as f64, k as f64]).map(|x| x.round() as usize);
        let w = input.data[(p[0], p[1], p[2])];
        value_dev = value_dev.max((v as f64 - w as f64).abs());
    }
    assert!(value_dev <= value_tol, "voxels differ by {value_dev} (tolerance {value_tol})");
    (grid_dev, value_dev)
}

#[test]
fn ldae_converter_reads_both_back() {
    let Some(f) = fixture() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    for class in [SyntheticSopClass::Sc, SyntheticSopClass::Mr] {
        let dir = tmp.path().join(format!("{class:?}"));
        let w = write(&f, &dir, class);
        let report = convert_paths(&[dir], &ConvertConfig::default());
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        assert_eq!(report.converted.len(), 1);
        let back = &report.converted[0].volume;
        assert_eq!(back.shape(), f.volume.shape());
        let affine_dev = back.affine.max_abs_diff(&f.volume.affine);
        // DS strings keep ≥ 10 significant digits: positions agree to well under a micrometre.
        assert!(affine_dev < 1e-5, "{class:?}: affine differs by {affine_dev}");
        // Half a quantisation step, plus the f32 rounding of the stored value × slope.
        let tol = w.scaling.slope * 0.5 * 1.0001 + 1e-3;
        let (_, dv) = compare_on_grid(&f.volume, back, 1e-6, tol);
        eprintln!(
            "{class:?}: ldae read-back affine max diff {affine_dev:.2e} mm, voxels max diff {dv:.4} (step {})",
            w.scaling.slope
        );
    }
}

#[test]
fn dcm2niix_reads_both_onto_the_same_grid() {
    if !tool("dcm2niix", &["-h"]) {
        return;
    }
    let Some(f) = fixture() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    for class in [SyntheticSopClass::Sc, SyntheticSopClass::Mr] {
        let dir = tmp.path().join(format!("{class:?}"));
        let w = write(&f, &dir, class);
        let out = tmp.path().join(format!("{class:?}_nii"));
        std::fs::create_dir_all(&out).expect("mkdir");
        let run = Command::new("dcm2niix")
            .args(["-z", "n", "-b", "n", "-f", "synthetic", "-o"])
            .arg(&out)
            .arg(&dir)
            .output()
            .expect("run dcm2niix");
        let log = String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
        let niis: Vec<PathBuf> =
            files_in(&out).into_iter().filter(|p| p.extension().is_some_and(|e| e == "nii")).collect();
        assert_eq!(niis.len(), 1, "{class:?}: dcm2niix made {niis:?}: {log}");
        let theirs = read_nifti(&niis[0]).expect("read dcm2niix output");
        // dcm2niix keeps the stored integers and puts slope/intercept in scl_*: read_nifti applies them.
        // Its affine is float32 (≈1e-5 relative): the grid agrees to 1e-4 voxel.
        let tol = w.scaling.slope * 0.5 * 1.0001 + 1e-2;
        let (dg, dv) = compare_on_grid(&f.volume, &theirs, 1e-4, tol);
        eprintln!(
            "{class:?}: dcm2niix grid max deviation {dg:.2e} voxel, voxels max diff {dv:.4} (step {})",
            w.scaling.slope
        );
    }
}

#[test]
fn rerun_is_byte_identical() {
    let Some(f) = fixture() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    for class in [SyntheticSopClass::Sc, SyntheticSopClass::Mr] {
        let a = write(&f, &tmp.path().join(format!("{class:?}_a")), class);
        let b = write(&f, &tmp.path().join(format!("{class:?}_b")), class);
        assert_eq!(a.uids, b.uids);
        assert_eq!(a.instances.len(), b.instances.len());
        for (x, y) in a.instances.iter().zip(&b.instances) {
            assert_eq!(x.path.file_name(), y.path.file_name());
            assert_eq!(std::fs::read(&x.path).expect("a"), std::fs::read(&y.path).expect("b"), "{:?}", x.path);
        }
        // Another seed is another request: new UIDs throughout.
        let mut g = Fixture {
            earlier: f.earlier.clone(),
            later: f.later.clone(),
            volume: f.volume.clone(),
            request: f.request.clone(),
            content: f.content,
        };
        g.request.seed += 1;
        let c = write(&g, &tmp.path().join(format!("{class:?}_c")), class);
        assert_ne!(c.uids.study_instance_uid, a.uids.study_instance_uid);
        assert_ne!(c.uids.series_instance_uid, a.uids.series_instance_uid);
        assert!(c.uids.sop_instance_uids.iter().all(|u| !a.uids.sop_instance_uids.contains(u)));
        // An uncertainty map of the same timepoint: same study, another series, marked in its description.
        g.request.seed -= 1;
        g.content = SyntheticContent::StdDev { samples: 8 };
        let d = write(&g, &tmp.path().join(format!("{class:?}_sd")), class);
        assert_eq!(d.uids.study_instance_uid, a.uids.study_instance_uid);
        assert_ne!(d.uids.series_instance_uid, a.uids.series_instance_uid);
        let h = ldae::dicom::read_header(&d.instances[0].path).expect("header");
        assert_eq!(h.series_description.as_deref(), Some("SYNTHETIC SD T1 MPRAGE a=0.742"));
        let h = ldae::dicom::read_header(&a.instances[0].path).expect("header");
        assert_eq!(h.series_description.as_deref(), Some("SYNTHETIC T1 MPRAGE a=0.742"));
        assert_eq!(h.image_type[..2], ["DERIVED", "SECONDARY"]);
        // File names carry no patient data.
        for i in &a.instances {
            let name = i.path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            assert!(!name.contains("SIM") && name.ends_with(".dcm"), "{name}");
        }
    }
}

#[test]
fn non_ascii_names_are_written_as_utf8() {
    if !tool("dcmdump", &["--version"]) || !tool("dciodvfy", &["-version"]) {
        return;
    }
    let Some(mut f) = fixture() else { return };
    f.later.patient.patient_name = Some("Müller^Jörg".into());
    let tmp = tempfile::tempdir().expect("tmp");
    let w = write(&f, tmp.path(), SyntheticSopClass::Mr);
    let file = &w.instances[0].path;
    let out = Command::new("dcmdump")
        .args(["+U8", "+P", "0008,0005", "+P", "0010,0010"])
        .arg(file)
        .output()
        .expect("dcmdump");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("ISO_IR 192") && s.contains("Müller^Jörg"), "{s}");
    let (errors, _) = dciodvfy_errors(file);
    assert!(errors.iter().all(|l| l.to_ascii_lowercase().contains("0x0008,0x001c")), "{errors:#?}");
}

#[test]
fn left_handed_grid_lands_on_the_same_world_grid() {
    let Some(mut f) = fixture() else { return };
    // Slices stacked against the plane normal: DICOM order is reversed, the world grid is the same.
    let mut a = f.volume.affine;
    for r in 0..3 {
        a.0[r][2] = -a.0[r][2];
    }
    f.volume.affine = a;
    let tmp = tempfile::tempdir().expect("tmp");
    for class in [SyntheticSopClass::Sc, SyntheticSopClass::Mr] {
        let dir = tmp.path().join(format!("{class:?}"));
        let w = write(&f, &dir, class);
        let report = convert_paths(&[dir], &ConvertConfig::default());
        assert_eq!(report.converted.len(), 1, "{:?}", report.rejected);
        let back = &report.converted[0].volume;
        compare_on_grid(&f.volume, back, 1e-6, w.scaling.slope * 0.5 * 1.0001 + 1e-3);
    }
}

#[test]
fn bad_inputs_are_refused_before_anything_is_written() {
    let Some(f) = fixture() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, b) = (NaiveDate::from_ymd_opt(2019, 3, 14).unwrap(), NaiveDate::from_ymd_opt(2022, 3, 10).unwrap());
    let earlier = SourceSide { series: f.earlier.reference(), date: a };
    let later = SourceSide { series: f.later.reference(), date: b };
    let mut nan = f.volume.clone();
    nan.data[(3, 4, 5)] = f32::NAN;
    let mut sheared = f.volume.clone();
    sheared.affine.0[0][2] += 0.5;
    let mut stranger = f.later.clone();
    stranger.series.series_instance_uid = "1.2.3.4".into();
    let cases: [(&Volume, &SourceSnapshot, &str); 3] =
        [(&nan, &f.later, "non-finite"), (&sheared, &f.later, "normal"), (&f.volume, &stranger, "neither")];
    for (i, (volume, neighbour, why)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        let input = SyntheticInput {
            volume,
            neighbour,
            earlier: &earlier,
            later: &later,
            request: &f.request,
            content: SyntheticContent::Image,
        };
        let err = write_series(&dir, &input, SyntheticSopClass::Mr, &Limits::default()).expect_err("refused");
        assert!(err.to_string().contains(why), "{err}");
        assert!(!dir.exists(), "nothing written for {why}");
    }
    let tiny = Limits { max_frames: 10, ..Limits::default() };
    let input = SyntheticInput {
        volume: &f.volume,
        neighbour: &f.later,
        earlier: &earlier,
        later: &later,
        request: &f.request,
        content: SyntheticContent::Image,
    };
    let err = write_series(&tmp.path().join("x"), &input, SyntheticSopClass::Sc, &tiny).expect_err("over max_frames");
    assert!(err.to_string().contains("NumberOfFrames"), "{err}");
}
