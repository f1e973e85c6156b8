//! Symmetric greedy diffeomorphic registration (SyN-style) after an affine.
//!
//! The fixed image `F` and the moving image (already mapped through the affine, `M_a = M ∘ A`) each get a
//! half-field to a common midpoint space: `F ∘ ψ₁` and `M_a ∘ ψ₂` are compared there with local CC
//! ([`super::metric_cc`]). Every iteration, both warped images give a force `∂C/∂I(z) · ∇I(z)` on their own
//! half-field; the force is smoothed (fluid regularisation, `fluid_sigma`), scaled so that its largest
//! displacement is `step` voxels, and composed on the right (`ψ ← ψ ∘ (id + δ)`, which keeps `ψ` invertible for
//! small smooth steps); the half-field is then smoothed itself (elastic regularisation, `elastic_sigma`). Levels
//! run coarse to fine (the fields are resampled to the next grid); a level stops after its iterations or when CC
//! improved by less than `convergence` per iteration over the last `window` iterations.
//!
//! The result maps fixed to (affinely aligned) moving points, `φ = ψ₂ ∘ ψ₁⁻¹`, with its inverse `ψ₁ ∘ ψ₂⁻¹`; the
//! half-field inverses come from fixed-point inversion ([`Field::invert`]).

use ndarray::{Array3, Zip};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::field::Field;
use super::metric_cc::local_cc;
use crate::limits::Limits;
use crate::preprocess::pyramid::downsample_to;
use crate::preprocess::resample::{resample, Grid, Interp, Sampler};
use crate::preprocess::{invalid, PreprocessError};
use crate::volume::{Affine, Volume};

/// How to register deformably (the `[preprocess.syn]` section; every key optional, defaults below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynOptions {
    /// Isotropic voxel size of each level, coarse to fine (mm).
    pub levels_mm: Vec<f64>,
    /// Most iterations per level (the last value repeats for further levels).
    pub iterations: Vec<u32>,
    /// Local CC window radius in voxels (ANTs' default 4 at 1 mm; 2 suits 2–3 mm voxels).
    pub radius: usize,
    /// Largest displacement of one update, in voxels of the level.
    pub step: f64,
    /// Gaussian σ of the update field, in voxels (fluid regularisation).
    pub fluid_sigma: f64,
    /// Gaussian σ of the half-fields after each update, in voxels (elastic regularisation; 0 = none).
    pub elastic_sigma: f64,
    /// Stop a level when CC rose less than this per iteration over the last `window` iterations.
    pub convergence: f64,
    /// Iterations over which convergence is judged.
    pub window: usize,
    /// Fixed-point iterations of each field inversion.
    pub inverse_iterations: usize,
}

impl Default for SynOptions {
    fn default() -> Self {
        SynOptions {
            levels_mm: vec![8.0, 4.0, 2.0],
            iterations: vec![60, 40, 20],
            radius: 2,
            step: 0.25,
            fluid_sigma: 3.0,
            elastic_sigma: 0.5,
            convergence: 1e-5,
            window: 8,
            inverse_iterations: 30,
        }
    }
}

impl SynOptions {
    /// Check the values a config file may set: the failing key and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let levels = &self.levels_mm;
        if levels.is_empty() || levels.len() > 8 || levels.iter().any(|s| !(s.is_finite() && (0.25..=32.0).contains(s)))
        {
            return Err(("preprocess.syn.levels_mm", "must list 1 to 8 voxel sizes in [0.25, 32] mm"));
        }
        if self.iterations.is_empty() || self.iterations.iter().any(|n| !(1..=10_000).contains(n)) {
            return Err(("preprocess.syn.iterations", "must list iterations in 1..=10000"));
        }
        if !(1..=8).contains(&self.radius) {
            return Err(("preprocess.syn.radius", "must be in 1..=8"));
        }
        if !(self.step.is_finite() && self.step > 0.0 && self.step <= 2.0) {
            return Err(("preprocess.syn.step", "must be in (0, 2] voxels"));
        }
        if !(self.fluid_sigma.is_finite() && (0.0..=10.0).contains(&self.fluid_sigma)) {
            return Err(("preprocess.syn.fluid_sigma", "must be in [0, 10] voxels"));
        }
        if !(self.elastic_sigma.is_finite() && (0.0..=10.0).contains(&self.elastic_sigma)) {
            return Err(("preprocess.syn.elastic_sigma", "must be in [0, 10] voxels"));
        }
        if !(self.convergence.is_finite() && self.convergence >= 0.0) {
            return Err(("preprocess.syn.convergence", "must be a finite value ≥ 0"));
        }
        if !(1..=100).contains(&self.window) {
            return Err(("preprocess.syn.window", "must be in 1..=100"));
        }
        if !(1..=200).contains(&self.inverse_iterations) {
            return Err(("preprocess.syn.inverse_iterations", "must be in 1..=200"));
        }
        Ok(())
    }
}

/// A deformable registration result, in the fixed image's world space after the affine.
#[derive(Debug, Clone)]
pub struct SynResult {
    /// `φ(x) = x + u(x)`: a fixed point to the matching point of the affinely aligned moving image.
    pub forward: Field,
    /// `φ⁻¹`: an affinely aligned moving point back to the fixed image.
    pub inverse: Field,
    /// Local CC at the end of the finest level.
    pub cc: f64,
    /// Iterations used per level.
    pub iterations: Vec<u32>,
}

/// `(x − lo) / (hi − lo)` clamped to [0, 1], with `lo`, `hi` the 0.5th and 99.5th percentiles.
fn normalised(v: &Volume) -> Result<Volume, PreprocessError> {
    let mut vals: Vec<f32> = v.data.iter().copied().filter(|x| x.is_finite()).collect();
    if vals.is_empty() {
        return Err(invalid("deformable registration", "an image has no finite value"));
    }
    let mut pct = |q: f64| {
        let idx = ((vals.len() - 1) as f64 * q) as usize;
        *vals.select_nth_unstable_by(idx, |a, b| a.total_cmp(b)).1
    };
    let (lo, hi) = (pct(0.005), pct(0.995));
    if hi <= lo {
        return Err(invalid("deformable registration", "an image is constant"));
    }
    let data = v.data.mapv(|x| if x.is_finite() { ((x - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 });
    Ok(Volume { data, affine: v.affine, provenance: v.provenance.clone() })
}

/// `img` (on `u`'s grid) sampled at `z + u(z)` for every voxel `z`; 0 outside.
fn warp(img: &Array3<f32>, u: &Field) -> Result<Array3<f32>, PreprocessError> {
    let s = Sampler::new(img).ok_or_else(|| invalid("deformable registration", "image layout"))?;
    let w2v = u.grid.affine.inverse().ok_or_else(|| invalid("deformable registration", "singular grid"))?;
    let mut out = Array3::<f32>::zeros(u.grid.shape);
    Zip::indexed(&mut out).par_for_each(|(i, j, k), o| {
        let x = u.world(i, j, k);
        let d = u.at_voxel(i, j, k);
        *o = s.linear(w2v.apply([x[0] + d[0], x[1] + d[1], x[2] + d[2]])).unwrap_or(0.0) as f32;
    });
    Ok(out)
}

/// The force `dC/dI(z) · ∇I(z)` (world mm) of a warped image `img` with derivative `d`.
fn force(img: &Array3<f32>, d: &Array3<f32>, grid: Grid, limits: &Limits) -> Result<Field, PreprocessError> {
    let inv = grid.affine.inverse().ok_or_else(|| invalid("deformable registration", "singular grid"))?;
    let n = grid.shape;
    Field::fill_with(grid, limits, |i, j, k| {
        let dz = d[[i, j, k]] as f64;
        if dz == 0.0 {
            return [0.0; 3];
        }
        let idx = [i, j, k];
        let mut g = [0.0f64; 3];
        for (a, ga) in g.iter_mut().enumerate() {
            let (lo, hi) = (idx[a].saturating_sub(1), (idx[a] + 1).min(n[a] - 1));
            if hi == lo {
                continue;
            }
            let (mut pl, mut ph) = (idx, idx);
            pl[a] = lo;
            ph[a] = hi;
            *ga = (img[ph] - img[pl]) as f64 / (hi - lo) as f64;
        }
        // World gradient = A⁻ᵀ · index gradient.
        let w = [0, 1, 2].map(|r| (0..3).map(|c| inv.0[c][r] * g[c]).sum::<f64>());
        [dz * w[0], dz * w[1], dz * w[2]]
    })
}

/// Smooth, scale so that the 99th percentile of the update's lengths is `step` voxels (longer ones clipped to it:
/// a few outlying forces must not shrink every other voxel's step), compose on the right of `u`; then smooth `u`.
fn update(
    u: &Field,
    mut delta: Field,
    o: &SynOptions,
    spacing: f64,
    limits: &Limits,
) -> Result<Field, PreprocessError> {
    delta.smooth(o.fluid_sigma * spacing);
    let mut norms: Vec<f32> = Zip::from(&delta.comp[0])
        .and(&delta.comp[1])
        .and(&delta.comp[2])
        .map_collect(|a, b, c| (a * a + b * b + c * c).sqrt())
        .into_iter()
        .filter(|v| *v > 0.0)
        .collect();
    if norms.is_empty() {
        return Ok(u.clone());
    }
    let idx = (norms.len() - 1) * 99 / 100;
    let p99 = *norms.select_nth_unstable_by(idx, |a, b| a.total_cmp(b)).1 as f64;
    if !(p99.is_finite() && p99 > 0.0) {
        return Ok(u.clone());
    }
    let step = o.step * spacing;
    let scale = step / p99;
    let [a, b, c] = &mut delta.comp;
    Zip::from(a).and(b).and(c).par_for_each(|a, b, c| {
        let n = ((*a * *a + *b * *b + *c * *c) as f64).sqrt() * scale;
        let k = if n > step { scale * step / n } else { scale } as f32;
        *a *= k;
        *b *= k;
        *c *= k;
    });
    let mut next = u.compose(&delta, limits)?;
    next.smooth(o.elastic_sigma * spacing);
    Ok(next)
}

/// Register `moving` to `fixed` deformably after `affine` (fixed world → moving world).
pub fn register_syn(
    fixed: &Volume,
    moving: &Volume,
    affine: &Affine,
    opts: &SynOptions,
    limits: &Limits,
) -> Result<SynResult, PreprocessError> {
    if opts.levels_mm.is_empty() || opts.levels_mm.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(invalid("deformable registration", format!("levels {:?} must be positive", opts.levels_mm)));
    }
    if opts.iterations.is_empty() || !(opts.step > 0.0 && opts.step.is_finite()) {
        return Err(invalid("deformable registration", "iterations and step must be given and positive"));
    }
    let (f, m) = (normalised(fixed)?, normalised(moving)?);
    let mut u1: Option<Field> = None;
    let mut u2: Option<Field> = None;
    let mut used = Vec::new();
    let mut cc = f64::NAN;
    for (li, &s) in opts.levels_mm.iter().enumerate() {
        let fl = downsample_to(&f, s);
        let grid = Grid::of(&fl);
        let spacing = fl.spacing().iter().cloned().fold(f64::INFINITY, f64::min);
        let ml = downsample_to(&m, s);
        let ma = resample(&ml, &grid, affine, Interp::Linear, 0.0)
            .ok_or_else(|| invalid("deformable registration", "the moving affine is singular"))?;
        let (fd, md) = (fl.data.as_standard_layout().to_owned(), ma.data.as_standard_layout().to_owned());
        let mut a = match u1.take() {
            Some(u) => u.resampled(grid, limits)?,
            None => Field::zeros(grid, limits)?,
        };
        let mut b = match u2.take() {
            Some(u) => u.resampled(grid, limits)?,
            None => Field::zeros(grid, limits)?,
        };
        let iters = *opts.iterations.get(li).or(opts.iterations.last()).unwrap_or(&0);
        let mut history: Vec<f64> = Vec::new();
        let mut it = 0;
        while it < iters {
            let (fw, mw) = (warp(&fd, &a)?, warp(&md, &b)?);
            let v = local_cc(&fw, &mw, opts.radius);
            history.push(v.value);
            cc = v.value;
            let n = history.len();
            if n > opts.window
                && (history[n - 1] - history[n - 1 - opts.window]) / (opts.window as f64) < opts.convergence
            {
                break;
            }
            let df = force(&fw, &v.d_first, grid, limits)?;
            let dm = force(&mw, &v.d_second, grid, limits)?;
            a = update(&a, df, opts, spacing, limits)?;
            b = update(&b, dm, opts, spacing, limits)?;
            it += 1;
        }
        debug!(level_mm = s, iterations = it, cc, "deformable level done");
        used.push(it);
        u1 = Some(a);
        u2 = Some(b);
    }
    let (u1, u2) = match (u1, u2) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(invalid("deformable registration", "no level ran")),
    };
    let v1 = u1.invert(opts.inverse_iterations, limits)?;
    let v2 = u2.invert(opts.inverse_iterations, limits)?;
    let forward = u2.compose(&v1, limits)?;
    let inverse = u1.compose(&v2, limits)?;
    Ok(SynResult { forward, inverse, cc, iterations: used })
}
