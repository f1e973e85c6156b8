//! Affine registration: ldae against elastix (Debian `elastix`), the same problem, several runs each.
//!
//! Problem: a real volume (the shipped MNI ICBM152 T1; Colin27 with skull when shared/ is present) moved by a
//! known affine (rotations up to 15°, shifts up to 30 mm, scaling up to 10 %) onto an oblique, anisotropic grid,
//! registered back to the original with its brain mask as the fixed mask. Both tools: Mattes mutual information
//! (32 bins), affine transform, 3-level pyramid at 4/2/1 mm (ldae's default `[preprocess] pyramid`; elastix:
//! recursive pyramid with shrink factors 4/2/1 of the 1 mm template — a schedule whose finest level is still
//! shrunk, e.g. 6/3/2, leaves elastix half a moving voxel off, ~1.4 mm here), centre-of-gravity initialisation. ldae: regular-step gradient ascent, ≤ 100
//! iterations per level and stage, 20 000 samples. elastix: adaptive stochastic gradient descent, 250 iterations
//! per level, 4 096 random samples per iteration (its usual affine setting).
//!
//! Timing: ldae = reading the three NIfTI files + registration (in process, release build); elastix = the whole
//! `elastix` process (reads the same files, writes only its transform). Error: mean / max displacement against the
//! true transform over the brain mask. Prints one line per run and the ratio of median times.
//!
//! Run: `cargo bench --bench register` (`LDAE_BENCH_RUNS=5` for more runs).
//!
//! Recorded 2026-11-25 on the 2-core development machine (shared, load ~9), release build, elastix 5.0.1,
//! 3 runs each, median times: MNI affine ldae 2.47 s / elastix 6.44 s (0.38×), MNI rigid 2.71 / 7.72 s (0.35×),
//! Colin27 with skull 1.97 / 6.87 s (0.29×); overall 0.35×. Mean error ldae 0.121 / 0.120 / 0.035 mm,
//! elastix 0.117 / 0.123 / 0.027 mm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ldae::nifti::{read_nifti, write_nifti};
use ldae::preprocess::register::{register_affine, RegisterOptions};
use ldae::preprocess::resample::{resample, Grid, Interp};
use ldae::preprocess::transform::Transform;
use ldae::volume::{Affine, Volume};

const ELASTIX_PARAMS: &str = r#"(FixedInternalImagePixelType "float")
(MovingInternalImagePixelType "float")
(FixedImageDimension 3)
(MovingImageDimension 3)
(UseDirectionCosines "true")
(Registration "MultiResolutionRegistration")
(Interpolator "BSplineInterpolator")
(BSplineInterpolationOrder 1)
(ResampleInterpolator "FinalBSplineInterpolator")
(FinalBSplineInterpolationOrder 1)
(Resampler "DefaultResampler")
(FixedImagePyramid "FixedRecursiveImagePyramid")
(MovingImagePyramid "MovingRecursiveImagePyramid")
(NumberOfResolutions 3)
(ImagePyramidSchedule 4 4 4 2 2 2 1 1 1)
(Optimizer "AdaptiveStochasticGradientDescent")
(Transform "AffineTransform")
(AutomaticScalesEstimation "true")
(AutomaticTransformInitialization "true")
(AutomaticTransformInitializationMethod "CenterOfGravity")
(HowToCombineTransforms "Compose")
(Metric "AdvancedMattesMutualInformation")
(NumberOfHistogramBins 32)
(ErodeMask "false")
(MaximumNumberOfIterations 250)
(ImageSampler "RandomCoordinate")
(NumberOfSpatialSamples 4096)
(NewSamplesEveryIteration "true")
(CheckNumberOfSamples "true")
(DefaultPixelValue 0)
(WriteResultImage "false")
(WriteTransformParametersEachIteration "false")
(WriteTransformParametersEachResolution "false")
"#;

fn rot(ax: f64, ay: f64, az: f64) -> [[f64; 3]; 3] {
    let (ax, ay, az) = (ax.to_radians(), ay.to_radians(), az.to_radians());
    let rx = [[1.0, 0.0, 0.0], [0.0, ax.cos(), -ax.sin()], [0.0, ax.sin(), ax.cos()]];
    let ry = [[ay.cos(), 0.0, ay.sin()], [0.0, 1.0, 0.0], [-ay.sin(), 0.0, ay.cos()]];
    let rz = [[az.cos(), -az.sin(), 0.0], [az.sin(), az.cos(), 0.0], [0.0, 0.0, 1.0]];
    let m = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| {
        let mut o = [[0.0; 3]; 3];
        for (r, row) in o.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
            }
        }
        o
    };
    m(rz, m(ry, rx))
}

/// Template → native truth about the point `c`.
fn truth(angles: [f64; 3], scale: [f64; 3], shift: [f64; 3], c: [f64; 3]) -> Transform {
    let r = rot(angles[0], angles[1], angles[2]);
    let mut a = Affine::identity();
    for (row, rrow) in a.0.iter_mut().zip(&r) {
        for j in 0..3 {
            row[j] = rrow[j] * scale[j];
        }
    }
    let mut lin = a;
    (0..3).for_each(|i| lin.0[i][3] = 0.0);
    let ac = lin.apply(c);
    (0..3).for_each(|i| a.0[i][3] = c[i] + shift[i] - ac[i]);
    Transform { from: "template".into(), to: "native".into(), matrix: a }
}

fn native_grid(c: [f64; 3]) -> Grid {
    let r = rot(8.0, -5.0, 20.0);
    let sp = [1.2, 1.4, 2.2];
    let shape = [170usize, 180, 100];
    let col = |k: usize| [r[0][k] * sp[k], r[1][k] * sp[k], r[2][k] * sp[k]];
    let (ci, cj, ck) = (col(0), col(1), col(2));
    let h = |k: usize| shape[k] as f64 / 2.0;
    let origin = [0, 1, 2].map(|d| c[d] - ci[d] * h(0) - cj[d] * h(1) - ck[d] * h(2));
    Grid { shape, affine: Affine::from_columns(ci, cj, ck, origin) }
}

fn displacement(a: &Transform, b: &Transform, mask: &Volume) -> (f64, f64) {
    a.displacement_over(b, mask, 5)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Case {
    name: &'static str,
    fixed: PathBuf,
    mask: PathBuf,
    moving: PathBuf,
    truth: Transform,
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let runs: usize = std::env::var("LDAE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let have_elastix = Command::new("elastix").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have_elastix {
        println!("elastix not found (apt-get install elastix): timing ldae only");
    }
    let out = root.join("bench-out/register");
    std::fs::create_dir_all(&out).expect("bench-out is writable");
    let tdir = root.join("weights/templates");
    let template = read_nifti(&tdir.join("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).expect("template");
    let mask = read_nifti(&tdir.join("mni152_brain_mask_nilearn_res1.nii.gz")).expect("template mask");
    let c = [0.0, -18.0, 12.0];

    let mut cases = Vec::new();
    let mut add = |name: &'static str, fixed: &Volume, fixed_path: PathBuf, mask_path: PathBuf, t: Transform| {
        let moving = resample(fixed, &native_grid(t.apply(c)), &t.inverse().unwrap().matrix, Interp::Linear, 0.0)
            .expect("resample");
        let path = out.join(format!("{}_moving.nii.gz", name.replace(' ', "_")));
        write_nifti(&path, &moving).expect("write moving");
        cases.push(Case { name, fixed: fixed_path, mask: mask_path, moving: path, truth: t });
    };
    let (tpath, mpath) = (out.join("template.nii.gz"), out.join("template_mask.nii.gz"));
    write_nifti(&tpath, &template).expect("write template");
    write_nifti(&mpath, &mask).expect("write mask");
    add(
        "mni affine",
        &template,
        tpath.clone(),
        mpath.clone(),
        truth([-9.0, 12.0, 5.0], [1.1, 0.92, 1.05], [-18.0, 12.0, 25.0], c),
    );
    add("mni rigid", &template, tpath, mpath, truth([15.0, -10.0, 8.0], [1.0; 3], [30.0, -20.0, 15.0], c));
    let shared = std::env::var_os("LDAE_SHARED").map(PathBuf::from).unwrap_or_else(|| root.join("../shared"));
    let ch2 = shared.join("testdata/volumes/mricron/ch2.nii.gz");
    if let Ok(colin) = read_nifti(&ch2) {
        let cmask = resample(&mask, &Grid::of(&colin), &Affine::identity(), Interp::Nearest, 0.0).expect("mask");
        let cm = out.join("colin_mask.nii.gz");
        write_nifti(&cm, &cmask).expect("write mask");
        add(
            "colin27 skull affine",
            &colin,
            ch2.clone(),
            cm,
            truth([10.0, -8.0, -14.0], [0.93, 1.08, 1.0], [22.0, -15.0, -28.0], c),
        );
    } else {
        println!("{} not found: skipping the Colin27 case", ch2.display());
    }

    let opts = RegisterOptions { levels_mm: vec![4.0, 2.0, 1.0], ..Default::default() };
    let params = out.join("elastix_affine.txt");
    std::fs::write(&params, ELASTIX_PARAMS).expect("write params");
    println!("runs per tool: {runs}; threads: {}", rayon::current_num_threads());
    let mut ratios = Vec::new();
    for case in &cases {
        let brain = read_nifti(&case.mask).expect("mask");
        let mut t_ldae = Vec::new();
        let mut t_elx = Vec::new();
        for run in 0..runs {
            let start = Instant::now();
            let fixed = read_nifti(&case.fixed).expect("fixed");
            let fmask = read_nifti(&case.mask).expect("mask");
            let moving = read_nifti(&case.moving).expect("moving");
            let reg = register_affine(&moving, &fixed, Some(&fmask), &opts).expect("ldae registration");
            let secs = start.elapsed().as_secs_f64();
            let (mean, max) = displacement(&reg.transform, &case.truth, &brain);
            println!("{:22} ldae    run {run}: {secs:7.2} s  error mean {mean:.3} mm max {max:.3} mm", case.name);
            t_ldae.push(secs);
            if have_elastix {
                let dir = out.join(format!("elastix_{}_{run}", case.name.replace(' ', "_")));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("elastix out");
                let start = Instant::now();
                let status = Command::new("elastix")
                    .args(["-f", s(&case.fixed), "-m", s(&case.moving), "-fMask", s(&case.mask)])
                    .args(["-p", s(&params), "-out", s(&dir)])
                    .output()
                    .expect("run elastix");
                let secs = start.elapsed().as_secs_f64();
                let tp = dir.join("TransformParameters.0.txt");
                let parsed = std::fs::read_to_string(&tp)
                    .ok()
                    .and_then(|text| Transform::from_elastix(&tp, &text, "template", "native").ok());
                match (status.status.success(), parsed) {
                    (true, Some(t)) => {
                        let (mean, max) = displacement(&t, &case.truth, &brain);
                        println!(
                            "{:22} elastix run {run}: {secs:7.2} s  error mean {mean:.3} mm max {max:.3} mm",
                            case.name
                        );
                        t_elx.push(secs);
                    }
                    _ => println!("{:22} elastix run {run}: failed (see {})", case.name, dir.display()),
                }
            }
        }
        let ml = median(&mut t_ldae);
        if !t_elx.is_empty() {
            let me = median(&mut t_elx);
            ratios.push(ml / me);
            println!("{:22} median ldae {ml:.2} s, elastix {me:.2} s, ratio ldae/elastix = {:.3}", case.name, ml / me);
        }
    }
    if !ratios.is_empty() {
        println!("overall time ratio ldae/elastix (median of cases): {:.3}", median(&mut ratios));
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
