//! Deformable registration: ldae's SyN-style stage against antspyx's SyN (ANTs), the same problem, one run each.
//!
//! Problem: the shipped MNI ICBM152 T1 at 3 mm, moved by a smooth random diffeomorphic warp (a smoothed random
//! velocity field, exponentiated; max 7 mm over the brain), registered back to the original (identity affine, so
//! both do the deformable stage only: antspyx `type_of_transform="SyNOnly"`). Both: local CC (radius 2), three
//! levels (shrink 4/2/1 of the 3 mm grid = 12/6/3 mm), 40/30/20 iterations at most, Gaussian update smoothing
//! σ = 3 voxels, total field smoothing 0.5 voxels (ldae) / 0 (ANTs' default), gradient step 0.25.
//!
//! Timing: ldae = registration in process; ANTs = `ants.registration` inside python (the image reads excluded).
//! Error: mean / max displacement of each forward field against the true warp over the template's brain mask.
//!
//! Run: `cargo bench --bench deformable` (python with antspyx: `$LDAE_ANTS_PYTHON`, else
//! `~/.cache/ldae-ants-venv/bin/python`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use ldae::limits::Limits;
use ldae::nifti::{read_nifti, write_nifti};
use ldae::preprocess::deformable::itk_field::read_field;
use ldae::preprocess::deformable::{register_syn, Chain, Field, Step, SynOptions};
use ldae::preprocess::pyramid::downsample_to;
use ldae::preprocess::resample::{Grid, Interp};
use ldae::volume::{Affine, Volume};

const SCRIPT: &str = r#"
import sys, time, shutil, ants
fixed, moving, out = sys.argv[1:4]
f = ants.image_read(fixed); m = ants.image_read(moving)
t = time.time()
r = ants.registration(fixed=f, moving=m, type_of_transform="SyNOnly", syn_metric="CC", syn_sampling=2,
                      reg_iterations=(40, 30, 20), grad_step=0.25, flow_sigma=3, total_sigma=0)
print("ANTS_SECONDS", time.time() - t)
warp = [p for p in r["fwdtransforms"] if p.endswith(".nii.gz")][0]
shutil.copy(warp, out)
"#;

fn random_warp(grid: Grid, mask: &Volume, l: &Limits) -> (Field, Field) {
    let mut s = 0x5EED_1234u64;
    let mut unit = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let n = grid.shape.iter().product::<usize>() * 3;
    let noise: Vec<f64> = (0..n).map(|_| (0..4).map(|_| unit()).sum::<f64>() - 2.0).collect();
    let [_, ny, nz] = grid.shape;
    let mut v = Field::fill_with(grid, l, |i, j, k| {
        let at = 3 * ((i * ny + j) * nz + k);
        [noise[at], noise[at + 1], noise[at + 2]]
    })
    .expect("field");
    v.smooth(12.0);
    let (_, max) = v.difference_over(&Field::zeros(grid, l).expect("field"), mask);
    v.scale(7.0 / max);
    let phi = Field::exp(&v, 7, l).expect("exp");
    v.scale(-1.0);
    (phi, Field::exp(&v, 7, l).expect("exp"))
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("LDAE_ANTS_PYTHON").unwrap_or_else(|_| {
        let p = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ldae-ants-venv/bin/python");
        if p.exists() {
            p.to_string_lossy().into_owned()
        } else {
            "python3".into()
        }
    });
    let out = root.join("bench-out/deformable");
    std::fs::create_dir_all(&out).expect("bench-out is writable");
    let l = Limits::default();
    let tdir = root.join("weights/templates");
    let fixed =
        downsample_to(&read_nifti(&tdir.join("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).expect("t1"), 3.0);
    let mut mask = downsample_to(&read_nifti(&tdir.join("mni152_brain_mask_nilearn_res1.nii.gz")).expect("mask"), 3.0);
    mask.data.mapv_inplace(|v| (v > 0.5) as u8 as f32);
    let grid = Grid::of(&fixed);
    let (truth, truth_inv) = random_warp(grid, &mask, &l);
    let moving = Chain { steps: vec![Step::Field(Box::new(truth_inv))] }
        .resample(&fixed, &grid, Interp::Linear, 0.0)
        .expect("moving");
    let (fp, mp, wp) = (out.join("fixed.nii.gz"), out.join("moving.nii.gz"), out.join("ants_warp.nii.gz"));
    write_nifti(&fp, &fixed).expect("write");
    write_nifti(&mp, &moving).expect("write");
    let (before, _) = Field::zeros(grid, &l).expect("field").difference_over(&truth, &mask);
    println!("problem: {:?} voxels at 3 mm, true warp mean {before:.2} mm over the brain", grid.shape);

    let opts = SynOptions { levels_mm: vec![12.0, 6.0, 3.0], iterations: vec![40, 30, 20], ..SynOptions::default() };
    let start = Instant::now();
    let r = register_syn(&fixed, &moving, &Affine::identity(), &opts, &l).expect("ldae registration");
    let ldae_s = start.elapsed().as_secs_f64();
    let (lm, lx) = r.forward.difference_over(&truth, &mask);
    println!("ldae:  {ldae_s:.2} s, iterations {:?}, error mean {lm:.3} mm max {lx:.2} mm", r.iterations);

    let o = Command::new(&python).args(["-c", SCRIPT]).arg(&fp).arg(&mp).arg(&wp).output();
    match o {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let ants_s: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("ANTS_SECONDS "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f64::NAN);
            let w = read_field(&wp, &l).expect("ANTs warp");
            let (am, ax) = w.difference_over(&truth, &mask);
            println!("antspyx SyN: {ants_s:.2} s, error mean {am:.3} mm max {ax:.2} mm");
            println!("time ratio ldae / ANTs: {:.2}×", ldae_s / ants_s);
        }
        Ok(o) => println!("antspyx failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("no python for antspyx ({python}): {e}"),
    }
}
