//! ANTs reads ldae's transform files: an ITK text affine (`affine.txt`) and an ITK displacement-field NIfTI
//! (`warp.nii.gz`) written by ldae, applied by antspyx's `apply_transforms` to a real image (Colin27 with skull)
//! onto a real reference grid (the MNI template at 3 mm), equal what `ldae apply-transform` makes of the same
//! files (linear and nearest). The python with antspyx is `$LDAE_ANTS_PYTHON`, else
//! `~/.cache/ldae-ants-venv/bin/python` (scripts/test.sh makes it), else `python3`. Without antspyx or Colin27
//! the test returns early through `common::python_modules_in` / `common::shared_data`, which call
//! `common::require`: that fails it under LDAE_REQUIRE_ALL=1 (CI) and skips loudly otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use ldae::limits::Limits;
use ldae::nifti::{read_nifti, write_nifti};
use ldae::preprocess::deformable::itk_field::write_field;
use ldae::preprocess::deformable::Field;
use ldae::preprocess::pyramid::downsample_to;
use ldae::preprocess::transform::Transform;
use ldae::volume::Affine;

mod common;

fn ants_python() -> String {
    if let Ok(p) = std::env::var("LDAE_ANTS_PYTHON") {
        return p;
    }
    let venv = std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache/ldae-ants-venv/bin/python"));
    match venv {
        Ok(p) if p.exists() => p.to_string_lossy().into_owned(),
        _ => "python3".into(),
    }
}

const SCRIPT: &str = r#"
import sys, ants
ref, mov, warp, aff, out_lin, out_nn = sys.argv[1:7]
f = ants.image_read(ref)
m = ants.image_read(mov)
for interp, out in (("linear", out_lin), ("nearestNeighbor", out_nn)):
    w = ants.apply_transforms(fixed=f, moving=m, transformlist=[warp, aff], interpolator=interp)
    ants.image_write(w, out)
"#;

fn ldae_apply(input: &Path, reference: &Path, transforms: &[&Path], interp: &str, out: &Path) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ldae"));
    cmd.arg("apply-transform").arg(input).arg("--reference").arg(reference).args(["--interp", interp]);
    for t in transforms {
        cmd.arg("-t").arg(t);
    }
    let o = cmd.arg("-o").arg(out).output().unwrap();
    assert!(o.status.success(), "ldae apply-transform failed: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn antspyx_applies_our_affine_and_warp_like_we_do() {
    let python = ants_python();
    // Each check calls common::require when it fails (a test failure under LDAE_REQUIRE_ALL=1).
    if !common::python_modules_in(&python, &["ants"]) {
        return;
    }
    let Some(colin) = common::shared_data("testdata/volumes/mricron/ch2.nii.gz") else { return };
    let dir = tempfile::tempdir().unwrap();
    let l = Limits::default();
    let tdir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/templates");
    let template = read_nifti(&tdir.join("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    let reference = downsample_to(&template, 3.0);
    let ref_path = dir.path().join("reference.nii.gz");
    write_nifti(&ref_path, &reference).unwrap();
    // A known affine (template → native: 6° about z, a shear, a shift) and a smooth warp (max 6 mm).
    let (s, c) = 6f64.to_radians().sin_cos();
    let matrix = Affine::from_columns([c, s, 0.0], [-s + 0.05, c, 0.02], [0.0, 0.03, 1.02], [3.0, -4.5, 2.0]);
    let affine = Transform { from: "template".into(), to: "native".into(), matrix };
    let aff_path = dir.path().join("affine.txt");
    affine.write(&aff_path).unwrap();
    let grid = ldae::preprocess::resample::Grid::of(&reference);
    let warp = Field::fill_with(grid, &l, |i, j, k| {
        let (x, y, z) = (i as f64 / 9.0, j as f64 / 11.0, k as f64 / 8.0);
        [4.0 * y.sin(), 3.0 * (x + z).cos(), 2.5 * (x * y).sin()]
    })
    .unwrap();
    let warp_path = dir.path().join("warp.nii.gz");
    write_field(&warp_path, &warp).unwrap();

    let (ants_lin, ants_nn) = (dir.path().join("ants_lin.nii.gz"), dir.path().join("ants_nn.nii.gz"));
    let o = Command::new(&python)
        .args(["-c", SCRIPT])
        .args([&ref_path, &colin, &warp_path, &aff_path, &ants_lin, &ants_nn])
        .output()
        .unwrap();
    assert!(o.status.success(), "antspyx failed: {}", String::from_utf8_lossy(&o.stderr));
    let (ours_lin, ours_nn) = (dir.path().join("ours_lin.nii.gz"), dir.path().join("ours_nn.nii.gz"));
    ldae_apply(&colin, &ref_path, &[&warp_path, &aff_path], "linear", &ours_lin);
    ldae_apply(&colin, &ref_path, &[&warp_path, &aff_path], "nearest", &ours_nn);

    let (a, b) = (read_nifti(&ants_lin).unwrap(), read_nifti(&ours_lin).unwrap());
    assert_eq!(a.shape(), b.shape());
    let range = a.data.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let diffs: Vec<f64> = a.data.iter().zip(b.data.iter()).map(|(x, y)| (*x as f64 - *y as f64).abs()).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64 / range;
    let mut sorted = diffs.clone();
    sorted.sort_by(|x, y| x.total_cmp(y));
    let p99 = sorted[sorted.len() * 99 / 100] / range;
    let (an, bn) = (read_nifti(&ants_nn).unwrap(), read_nifti(&ours_nn).unwrap());
    let same = an.data.iter().zip(bn.data.iter()).filter(|(x, y)| x == y).count() as f64 / an.data.len() as f64;
    eprintln!(
        "antspyx vs ldae apply-transform: linear mean |diff| {mean:.2e}, 99th percentile {p99:.2e} (of the \
         intensity range {range}); nearest: {:.4} of voxels equal",
        same
    );
    assert!(mean < 1e-3 && p99 < 1e-2, "linear: mean {mean:e}, p99 {p99:e}");
    assert!(same > 0.99, "nearest: only {same} of voxels agree");
}
