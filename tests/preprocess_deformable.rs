//! Deformable registration with ground truth: the MNI template (real, at 3 mm) moved by a smooth random
//! diffeomorphic warp (a smoothed random velocity field, exponentiated, max displacement 5–10 mm), and a label
//! map moved with it, must be registered back: mean displacement error over the brain ≤ 1 mm and the Dice of the
//! warped-back labels ≥ 0.9 (the bounds; the measured values are printed and noted next to each bound).

mod common;

use std::time::Instant;

use ldae::limits::Limits;
use ldae::preprocess::deformable::{register_syn, Chain, Field, Step, SynOptions};
use ldae::preprocess::mask::dice;
use ldae::preprocess::pyramid::downsample_to;
use ldae::preprocess::resample::{Grid, Interp};
use ldae::preprocess::template::Template;
use ldae::volume::{Affine, Volume};

fn template() -> Template {
    common::shipped_template()
}

/// xorshift64* normal-ish samples (sum of 4 uniforms, centred).
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (0..4).map(|_| self.unit()).sum::<f64>() - 2.0
    }
}

/// A smooth random velocity field on `grid`, scaled so that its largest displacement inside `mask` is `max_mm`
/// (the edge-repeating smoothing makes the grid's border move more; the border is background).
fn random_warp(grid: Grid, mask: &Volume, sigma_mm: f64, max_mm: f64, seed: u64, l: &Limits) -> (Field, Field) {
    let mut rng = Rng(seed);
    let n = grid.shape.iter().product::<usize>() * 3;
    let noise: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let [_, ny, nz] = grid.shape;
    let mut v = Field::fill_with(grid, l, |i, j, k| {
        let at = 3 * ((i * ny + j) * nz + k);
        [noise[at], noise[at + 1], noise[at + 2]]
    })
    .unwrap();
    v.smooth(sigma_mm);
    // Taper to zero away from the brain (a smoothed mask), so the head around it moves smoothly and little.
    let window = ldae::preprocess::pyramid::gaussian_smooth(mask, 10.0);
    let peak = window.data.iter().cloned().fold(0.0f32, f32::max).max(1e-6);
    for c in &mut v.comp {
        ndarray::Zip::from(c).and(&window.data).for_each(|x, w| *x *= (w / peak).min(1.0));
    }
    let zero = Field::zeros(grid, l).unwrap();
    let (_, inside_max) = v.difference_over(&zero, mask);
    let s = max_mm / inside_max;
    v.scale(s);
    let phi = Field::exp(&v, 7, l).unwrap();
    let mut nv = v;
    nv.scale(-1.0);
    let inv = Field::exp(&nv, 7, l).unwrap();
    (phi, inv)
}

fn resample_through(f: &Field, src: &Volume, interp: Interp) -> Volume {
    Chain { steps: vec![Step::Field(Box::new(f.clone()))] }.resample(src, &Grid::of(src), interp, 0.0).unwrap()
}

/// Three intensity classes inside the brain (terciles of the image smoothed by 4 mm: regions of a few voxels, not
/// single-voxel speckle), 0 outside.
fn labels(img: &Volume, mask: &Volume) -> Volume {
    let img = &ldae::preprocess::pyramid::gaussian_smooth(img, 4.0);
    let mut inside: Vec<f32> =
        img.data.iter().zip(mask.data.iter()).filter(|(_, m)| **m > 0.5).map(|(v, _)| *v).collect();
    inside.sort_by(|a, b| a.total_cmp(b));
    let (t1, t2) = (inside[inside.len() / 3], inside[2 * inside.len() / 3]);
    let mut out = img.clone();
    ndarray::Zip::from(&mut out.data).and(&mask.data).for_each(|v, m| {
        *v = if *m <= 0.5 {
            0.0
        } else if *v < t1 {
            1.0
        } else if *v < t2 {
            2.0
        } else {
            3.0
        }
    });
    out
}

fn mean_dice(a: &Volume, b: &Volume) -> f64 {
    let one = |v: &Volume, l: f32| Volume { data: v.data.mapv(|x| (x == l) as u8 as f32), ..v.clone() };
    (1..=3).map(|l| dice(&one(a, l as f32), &one(b, l as f32)).unwrap()).sum::<f64>() / 3.0
}

#[test]
fn a_known_smooth_warp_is_recovered() {
    let l = Limits::default();
    let t = template();
    let fixed = downsample_to(&t.t1, 3.0);
    let mut mask = downsample_to(&t.mask, 3.0);
    mask.data.mapv_inplace(|v| (v > 0.5) as u8 as f32);
    let grid = Grid::of(&fixed);
    let zero = Field::zeros(grid, &l).unwrap();
    let (truth, truth_inv) = random_warp(grid, &mask, 12.0, 7.0, 0x5EED_1234, &l);
    let (mean_truth, max_truth) = truth.difference_over(&zero, &mask);
    eprintln!(
        "truth warp over the brain: mean {mean_truth:.2} mm, max {max_truth:.2} mm on a {:?} grid at 3 mm",
        grid.shape
    );
    assert!((5.0..=10.5).contains(&max_truth), "the test warp should move 5–10 mm, moves {max_truth}");
    // F(x) = M(φ(x)): the moving image is the template through φ⁻¹.
    let moving = resample_through(&truth_inv, &fixed, Interp::Linear);
    let fixed_labels = labels(&fixed, &mask);
    let moving_labels = resample_through(&truth_inv, &fixed_labels, Interp::Nearest);
    let before = mean_truth;
    let dice_before =
        mean_dice(&Volume { data: &moving_labels.data * &mask.data, ..moving_labels.clone() }, &fixed_labels);

    let opts = SynOptions { levels_mm: vec![12.0, 6.0, 3.0], iterations: vec![30, 20, 15], ..SynOptions::default() };
    let start = Instant::now();
    let r = register_syn(&fixed, &moving, &Affine::identity(), &opts, &l).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let (mean, max) = r.forward.difference_over(&truth, &mask);
    let back = resample_through(&r.forward, &moving_labels, Interp::Nearest);
    let dice_anywhere = mean_dice(&back, &fixed_labels);
    // Over the brain, like the displacement error: labels the field carries outside the template's brain mask
    // (into skull and scalp, which the moving image also holds) are not counted.
    let in_brain = |v: &Volume| Volume { data: &v.data * &mask.data, ..v.clone() };
    let dice_after = mean_dice(&in_brain(&back), &fixed_labels);
    {
        let ts = truth.sampler();
        let mut errs: Vec<f64> = Vec::new();
        let mut diffs = 0usize;
        for ((i, j, k), m) in mask.data.indexed_iter() {
            if *m > 0.5 {
                let a = r.forward.at_voxel(i, j, k);
                let b = ts.at(r.forward.world(i, j, k));
                errs.push(((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt());
                diffs += (back.data[[i, j, k]] != fixed_labels.data[[i, j, k]]) as usize;
            }
        }
        errs.sort_by(|a, b| a.total_cmp(b));
        let q = |f: f64| errs[((errs.len() - 1) as f64 * f) as usize];
        eprintln!(
            "error percentiles 50/90/99: {:.2}/{:.2}/{:.2} mm; label mismatches {diffs} of {}",
            q(0.5),
            q(0.9),
            q(0.99),
            errs.len()
        );
    }
    let dice_truth = mean_dice(&in_brain(&resample_through(&truth, &moving_labels, Interp::Nearest)), &fixed_labels);
    eprintln!(
        "label Dice over the brain through the true warp {dice_truth:.3}; through ours, counting labels carried \
         outside the brain {dice_anywhere:.3}; forward field max {:.2} mm",
        r.forward.max_norm()
    );
    let (inv_mean, _) = r.inverse.difference_over(&truth_inv, &mask);
    eprintln!(
        "deformable: {secs:.1} s, iterations {:?}, local CC {:.4}; displacement error over the brain: before \
         {before:.2} mm, after mean {mean:.3} mm max {max:.2} mm; inverse error {inv_mean:.3} mm; label Dice \
         before {dice_before:.3}, after {dice_after:.3}",
        r.iterations, r.cc
    );
    assert!(mean <= 1.0, "mean displacement error {mean} mm over the brain (bound 1 mm)");
    assert!(dice_after >= 0.9, "Dice of the warped-back labels {dice_after} (bound 0.9)");
    assert!(inv_mean <= 1.0, "inverse field error {inv_mean} mm");
    assert!(dice_after > dice_before, "registration should improve the label overlap");
}
