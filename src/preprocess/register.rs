//! Rigid then affine (12 DOF) registration of a moving volume (a native scan) to a fixed one (the template).
//!
//! - **Initialisation**: world coordinates already carry the scanner orientation (the affine); the start puts the
//!   moving image's centre of mass on the fixed one's, and a coarse search over head orientations (pitch ±30°,
//!   roll/yaw ±15°) at the coarsest level picks the best start for the rigid stage.
//! - **Pyramid**: each level smooths and resamples both images to isotropic voxels (`levels_mm`, coarse → fine).
//! - **Metric**: Mattes mutual information ([`super::metric`]) over fixed samples drawn (deterministically, with
//!   sub-voxel jitter) inside the fixed mask (dilated by the pyramid's smoothing) — a head with skull registers to a
//!   skull-stripped template because only the template's brain region is compared.
//! - **Optimiser**: regular-step gradient ascent on scaled parameters (rotations and matrix entries in mm at the
//!   sample cloud's radius, translations in mm), the step halved whenever the gradient turns back.
//! - **Stages**: rigid (3 rotations + 3 translations) on the `rigid_levels` coarsest levels, then the full affine
//!   on every level.
//!
//! The result is a [`Transform`] from the template (fixed) space to the native (moving) space.

use ndarray::Array3;
use tracing::{debug, info};

use super::metric::{fixed_bin, mattes_mi, FixedSamples, Moving};
use super::pyramid::downsample_to;
use super::resample::Sampler;
use super::transform::{Transform, NATIVE_SPACE, TEMPLATE_SPACE};
use super::{invalid, PreprocessError};
use crate::config::PreprocessConfig;
use crate::volume::{Affine, Volume};

/// How to register.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterOptions {
    /// Isotropic voxel size of each pyramid level, coarse to fine (mm).
    pub levels_mm: Vec<f64>,
    /// Most optimiser iterations per level and stage.
    pub iterations: u32,
    /// How many of the coarsest levels run a rigid stage before the affine one.
    pub rigid_levels: usize,
    /// Most fixed samples per level.
    pub samples: usize,
    /// Try a coarse set of start orientations (±30° pitch, ±15° roll and yaw) before the rigid stage.
    pub search: bool,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            levels_mm: vec![8.0, 4.0, 2.0],
            iterations: 100,
            rigid_levels: 2,
            samples: 20_000,
            search: true,
        }
    }
}

impl RegisterOptions {
    /// From the `[preprocess]` config: shrink factors × the template's finest voxel size.
    pub fn from_config(cfg: &PreprocessConfig, template_spacing: f64) -> Self {
        RegisterOptions {
            levels_mm: cfg.pyramid.iter().map(|f| *f as f64 * template_spacing).collect(),
            iterations: cfg.iterations,
            ..Default::default()
        }
    }
}

/// A registration result.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Template (fixed) → native (moving) world map.
    pub transform: Transform,
    /// Mutual information at the end of the finest level.
    pub mi: f64,
    /// Iterations used per (stage, level), in run order.
    pub iterations: Vec<u32>,
}

/// How the 12 entries of `[A | t]` depend on the optimiser's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    /// Euler angles (scaled by the radius) and a translation.
    Rigid,
    /// `A = I + u/R` entry-wise and a translation.
    Affine,
}

fn rotation(a: f64, b: f64, c: f64) -> [[f64; 3]; 3] {
    let (sa, ca) = a.sin_cos();
    let (sb, cb) = b.sin_cos();
    let (sc, cc) = c.sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]];
    let ry = [[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]];
    let rz = [[cc, -sc, 0.0], [sc, cc, 0.0], [0.0, 0.0, 1.0]];
    mul3(&rz, &mul3(&ry, &rx))
}

fn mul3(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            m[r][c] = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    m
}

/// `[A | t]` (as an Affine whose translation column is `t`) from parameters.
fn params_to_at(model: Model, u: &[f64], radius: f64) -> Affine {
    let mut m = Affine::identity();
    match model {
        Model::Rigid => {
            let r = rotation(u[0] / radius, u[1] / radius, u[2] / radius);
            for (i, row) in r.iter().enumerate() {
                m.0[i][..3].copy_from_slice(row);
                m.0[i][3] = u[3 + i];
            }
        }
        Model::Affine => {
            for i in 0..3 {
                for j in 0..3 {
                    m.0[i][j] += u[i * 3 + j] / radius;
                }
                m.0[i][3] = u[9 + i];
            }
        }
    }
    m
}

/// Gradient with respect to the parameters from the gradient with respect to `[A | t]`.
fn chain(model: Model, u: &[f64], radius: f64, g: &[f64; 12]) -> Vec<f64> {
    match model {
        Model::Affine => {
            let mut out = g.to_vec();
            out[..9].iter_mut().for_each(|v| *v /= radius);
            out
        }
        Model::Rigid => {
            let mut out = vec![0.0; 6];
            let h = 1e-6 * radius;
            for k in 0..3 {
                let mut up = u.to_vec();
                let mut um = u.to_vec();
                up[k] += h;
                um[k] -= h;
                let (ap, am) = (params_to_at(model, &up, radius), params_to_at(model, &um, radius));
                for r in 0..3 {
                    for c in 0..3 {
                        out[k] += g[r * 3 + c] * (ap.0[r][c] - am.0[r][c]) / (2.0 * h);
                    }
                }
            }
            out[3..6].copy_from_slice(&g[9..12]);
            out
        }
    }
}

/// Intensity-weighted centre of mass in world mm (negative values count as 0); `None` for an all-zero image.
pub fn centre_of_mass(vol: &Volume) -> Option<[f64; 3]> {
    let mut sum = [0.0f64; 3];
    let mut w = 0.0f64;
    for ((i, j, k), &v) in vol.data.indexed_iter() {
        if v > 0.0 && v.is_finite() {
            let v = v as f64;
            sum[0] += v * i as f64;
            sum[1] += v * j as f64;
            sum[2] += v * k as f64;
            w += v;
        }
    }
    if w <= 0.0 {
        return None;
    }
    Some(vol.affine.apply([sum[0] / w, sum[1] / w, sum[2] / w]))
}

/// Minimum and 99.9th percentile of the finite values (robust to a few hot voxels).
fn robust_range(data: &Array3<f32>) -> Option<(f64, f64)> {
    let mut v: Vec<f32> = data.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let idx = ((v.len() - 1) as f64 * 0.999) as usize;
    let (_, hi, _) = v.select_nth_unstable_by(idx, |a, b| a.total_cmp(b));
    let hi = *hi as f64;
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    (hi > lo).then_some((lo, hi))
}

/// Tiny deterministic generator for sample selection and jitter (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Fixed samples of one level: jittered voxel positions inside the (smoothed) mask.
fn fixed_samples(fixed: &Volume, mask: Option<&Volume>, max: usize, centre: [f64; 3]) -> Option<FixedSamples> {
    let data = fixed.data.as_standard_layout().to_owned();
    let sampler = Sampler::new(&data)?;
    let mut cand: Vec<[usize; 3]> = Vec::new();
    for ((i, j, k), &v) in fixed.data.indexed_iter() {
        let inside = match mask {
            Some(m) => m.data.get([i, j, k]).is_some_and(|&x| x > 0.01),
            None => v.is_finite(),
        };
        if inside {
            cand.push([i, j, k]);
        }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    if cand.len() > max {
        for i in 0..max {
            let j = i + (rng.next() % (cand.len() - i) as u64) as usize;
            cand.swap(i, j);
        }
        cand.truncate(max);
    }
    let mut pts = Vec::with_capacity(cand.len());
    let mut vals = Vec::with_capacity(cand.len());
    for c in cand {
        let p = [c[0] as f64 + rng.unit() - 0.5, c[1] as f64 + rng.unit() - 0.5, c[2] as f64 + rng.unit() - 0.5];
        if let Some(v) = sampler.linear(p) {
            let w = fixed.affine.apply(p);
            pts.push([w[0] - centre[0], w[1] - centre[1], w[2] - centre[2]]);
            vals.push(v);
        }
    }
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if vals.len() < 64 || hi <= lo {
        return None;
    }
    let bin = vals.iter().map(|v| fixed_bin(*v, lo, hi)).collect();
    Some(FixedSamples { rel: pts, bin, centre })
}

/// Regular-step gradient ascent on `u`; returns the last metric value and the iterations used.
fn optimise(
    model: Model,
    u: &mut [f64],
    radius: f64,
    fixed: &FixedSamples,
    moving: &Moving,
    level_mm: f64,
    iterations: u32,
) -> (f64, u32) {
    let mut step = level_mm;
    let min_step = 0.01 * level_mm;
    let mut prev: Option<Vec<f64>> = None;
    let mut last = f64::NAN;
    for it in 0..iterations {
        let at = params_to_at(model, u, radius);
        let v = mattes_mi(&at, fixed, moving, true);
        last = v.mi;
        let g = chain(model, u, radius, &v.grad);
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !norm.is_finite() || norm == 0.0 || v.inside < 0.05 {
            return (last, it);
        }
        if let Some(p) = &prev {
            if p.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>() < 0.0 {
                step *= 0.5;
            }
        }
        if step < min_step {
            return (last, it);
        }
        for (x, gi) in u.iter_mut().zip(&g) {
            *x += step * gi / norm;
        }
        prev = Some(g);
    }
    (last, iterations)
}

fn moving_of(data: &Array3<f32>, w2v: Affine, min: f64, max: f64) -> Result<Moving<'_>, PreprocessError> {
    let sampler = Sampler::new(data).ok_or_else(|| invalid("registration", "moving volume layout"))?;
    Ok(Moving { sampler, world_to_voxel: w2v, min, max })
}

/// Score a coarse set of start orientations (rotations about the fixed centre, centres of mass kept matched),
/// refine the best few briefly, and return the best rigid parameters.
fn orientation_search(
    start: &[f64],
    radius: f64,
    fixed: &FixedSamples,
    moving: &Moving,
    level_mm: f64,
    iterations: u32,
) -> Vec<f64> {
    let score = |u: &[f64]| {
        let v = mattes_mi(&params_to_at(Model::Rigid, u, radius), fixed, moving, false);
        v.mi * v.inside
    };
    let mut cands: Vec<(f64, Vec<f64>)> = Vec::new();
    for ax in [-30.0f64, -15.0, 0.0, 15.0, 30.0] {
        for ay in [-15.0f64, 0.0, 15.0] {
            for az in [-15.0f64, 0.0, 15.0] {
                let mut u = start.to_vec();
                u[0] = ax.to_radians() * radius;
                u[1] = ay.to_radians() * radius;
                u[2] = az.to_radians() * radius;
                cands.push((score(&u), u));
            }
        }
    }
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = (f64::NEG_INFINITY, start.to_vec());
    for (_, mut u) in cands.into_iter().take(4) {
        optimise(Model::Rigid, &mut u, radius, fixed, moving, level_mm, iterations);
        let v = score(&u);
        debug!(score = v, angles = ?[u[0] / radius, u[1] / radius, u[2] / radius], "orientation candidate");
        if v > best.0 {
            best = (v, u);
        }
    }
    best.1
}

/// Register `moving` (native) to `fixed` (template), comparing only inside `fixed_mask` when given.
pub fn register_affine(
    moving: &Volume,
    fixed: &Volume,
    fixed_mask: Option<&Volume>,
    opts: &RegisterOptions,
) -> Result<Registration, PreprocessError> {
    if opts.levels_mm.is_empty() || opts.levels_mm.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(invalid("registration", format!("pyramid levels {:?} must be positive", opts.levels_mm)));
    }
    for (name, v) in [("moving", moving), ("fixed", fixed)] {
        if v.shape().iter().any(|n| *n < 2) || v.affine.inverse().is_none() {
            return Err(invalid("registration", format!("{name} volume is degenerate (shape {:?})", v.shape())));
        }
    }
    if let Some(m) = fixed_mask {
        if m.shape() != fixed.shape() {
            return Err(invalid("registration", "the fixed mask is not on the fixed image's grid"));
        }
    }
    let weight = match fixed_mask {
        Some(m) => Volume { data: &fixed.data * &m.data.mapv(|x| (x > 0.5) as u8 as f32), ..fixed.clone() },
        None => fixed.clone(),
    };
    let com_f = centre_of_mass(&weight).ok_or_else(|| invalid("registration", "the template is empty"))?;
    let com_m = centre_of_mass(moving).ok_or_else(|| invalid("registration", "the moving volume is all zero"))?;
    let (mmin, mmax) =
        robust_range(&moving.data).ok_or_else(|| invalid("registration", "the moving volume is constant"))?;

    // Pyramids, built from fine to coarse, used coarse to fine.
    let mut order: Vec<usize> = (0..opts.levels_mm.len()).collect();
    order.sort_by(|a, b| opts.levels_mm[*a].total_cmp(&opts.levels_mm[*b]));
    let mut levels: Vec<Option<(Volume, Option<Volume>, Volume)>> = vec![None; opts.levels_mm.len()];
    let (mut f, mut fm, mut m) = (fixed.clone(), fixed_mask.cloned(), moving.clone());
    for &l in &order {
        let s = opts.levels_mm[l];
        f = downsample_to(&f, s);
        fm = fm.map(|x| downsample_to(&x, s));
        m = downsample_to(&m, s);
        levels[l] = Some((f.clone(), fm.clone(), m.clone()));
    }

    debug!("pyramids built");
    // Per level: fixed samples and the moving image, prepared once for both stages.
    let mut prepared: Vec<(f64, FixedSamples, Array3<f32>, Affine)> = Vec::new();
    for (li, level) in levels.into_iter().enumerate() {
        let Some((f, fm, m)) = level else { continue };
        let s = opts.levels_mm[li];
        let fixed_s = fixed_samples(&f, fm.as_ref(), opts.samples, com_f)
            .ok_or_else(|| invalid("registration", format!("too few template samples at {s} mm")))?;
        let w2v = m.affine.inverse().ok_or_else(|| invalid("registration", "moving affine is singular"))?;
        prepared.push((s, fixed_s, m.data.as_standard_layout().to_owned(), w2v));
    }
    debug!("samples drawn");
    let first = prepared.first().ok_or_else(|| invalid("registration", "no pyramid level"))?;
    let r2 = first.1.rel.iter().map(|p| p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sum::<f64>();
    let radius = (r2 / first.1.rel.len() as f64).sqrt().max(1.0);
    let mut history = Vec::new();

    // Stage 1: rigid. Start from the centres of mass and, with `search`, the best of a coarse set of orientations.
    let shift = [com_m[0] - com_f[0], com_m[1] - com_f[1], com_m[2] - com_f[2]];
    let mut u_rigid = vec![0.0, 0.0, 0.0, shift[0], shift[1], shift[2]];
    if opts.search {
        let (s, fixed_s, data, w2v) = first;
        let moving_l = moving_of(data, *w2v, mmin, mmax)?;
        u_rigid = orientation_search(&u_rigid, radius, fixed_s, &moving_l, *s, opts.iterations.min(40));
        debug!("orientation search done");
    }
    for (s, fixed_s, data, w2v) in prepared.iter().take(opts.rigid_levels) {
        let moving_l = moving_of(data, *w2v, mmin, mmax)?;
        let (v, it) = optimise(Model::Rigid, &mut u_rigid, radius, fixed_s, &moving_l, *s, opts.iterations);
        debug!(level_mm = s, mi = v, iterations = it, "rigid level done");
        history.push(it);
    }

    // Stage 2: affine on every level.
    let at = params_to_at(Model::Rigid, &u_rigid, radius);
    let mut u = vec![0.0; 12];
    for r in 0..3 {
        for c in 0..3 {
            u[r * 3 + c] = (at.0[r][c] - if r == c { 1.0 } else { 0.0 }) * radius;
        }
        u[9 + r] = at.0[r][3];
    }
    let mut mi = f64::NAN;
    for (s, fixed_s, data, w2v) in &prepared {
        let moving_l = moving_of(data, *w2v, mmin, mmax)?;
        let (v, it) = optimise(Model::Affine, &mut u, radius, fixed_s, &moving_l, *s, opts.iterations);
        info!(level_mm = s, mi = v, iterations = it, samples = fixed_s.rel.len(), "affine level done");
        history.push(it);
        mi = v;
        let inside = mattes_mi(&params_to_at(Model::Affine, &u, radius), fixed_s, &moving_l, false).inside;
        if inside < 0.5 {
            return Err(PreprocessError::Registration(format!(
                "only {:.0}% of the template's brain maps inside the scan at {s} mm",
                inside * 100.0
            )));
        }
    }
    let at = params_to_at(Model::Affine, &u, radius);
    // q = A (p - c) + c + t  →  translation c + t - A c.
    let mut matrix = at;
    let ac = {
        let mut lin = at;
        for r in 0..3 {
            lin.0[r][3] = 0.0;
        }
        lin.apply(com_f)
    };
    for r in 0..3 {
        matrix.0[r][3] = com_f[r] + at.0[r][3] - ac[r];
    }
    if matrix.inverse().is_none() || matrix.0.iter().flatten().any(|v| !v.is_finite()) {
        return Err(PreprocessError::Registration("the optimiser produced a singular transform".into()));
    }
    Ok(Registration {
        transform: Transform { from: TEMPLATE_SPACE.into(), to: NATIVE_SPACE.into(), matrix },
        mi,
        iterations: history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: usize, shift: f64) -> Volume {
        let data = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
            let c = n as f64 / 2.0;
            let (x, y, z) = (i as f64 - c - shift, j as f64 - c, k as f64 - c);
            (100.0 * (-(x * x + 2.0 * y * y + 3.0 * z * z) / 40.0).exp()) as f32
        });
        Volume::new(data, Affine::from_spacing_origin([2.0; 3], [-20.0; 3]))
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let f = blob(20, 0.0);
        let opts = RegisterOptions { levels_mm: vec![4.0], iterations: 5, ..Default::default() };
        let zero = Volume::new(Array3::zeros((20, 20, 20)), f.affine);
        assert!(register_affine(&zero, &f, None, &opts).unwrap_err().to_string().contains("all zero"));
        let flat = Volume::new(Array3::from_elem((20, 20, 1), 1.0), f.affine);
        assert!(register_affine(&flat, &f, None, &opts).unwrap_err().to_string().contains("degenerate"));
        let small_mask = blob(10, 0.0);
        assert!(register_affine(&f, &f, Some(&small_mask), &opts).is_err());
        let bad = RegisterOptions { levels_mm: vec![0.0], ..opts.clone() };
        assert!(register_affine(&f, &f, None, &bad).is_err());
        let mut singular = f.clone();
        singular.affine = Affine::from_columns([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0; 3]);
        assert!(register_affine(&singular, &f, None, &opts).is_err());
    }

    #[test]
    fn rigid_chain_rule_matches_finite_differences() {
        let radius = 50.0;
        let u = [3.0, -7.0, 11.0, 1.0, 2.0, 3.0];
        // A linear function of [A | t]: its gradient is `g`, so d/du must equal the finite difference.
        let g: [f64; 12] = [0.3, -1.2, 0.5, 2.0, 0.1, -0.7, 0.9, 0.4, -0.2, 1.5, -0.5, 0.25];
        let f = |u: &[f64]| {
            let at = params_to_at(Model::Rigid, u, radius);
            (0..12).map(|i| g[i] * if i < 9 { at.0[i / 3][i % 3] } else { at.0[i - 9][3] }).sum::<f64>()
        };
        let d = chain(Model::Rigid, &u, radius, &g);
        for k in 0..6 {
            let (mut up, mut um) = (u.to_vec(), u.to_vec());
            up[k] += 1e-4;
            um[k] -= 1e-4;
            let fd = (f(&up) - f(&um)) / 2e-4;
            assert!((fd - d[k]).abs() < 1e-6, "param {k}: {fd} vs {}", d[k]);
        }
    }

    #[test]
    fn a_shifted_blob_is_found() {
        let f = blob(24, 0.0);
        let m = blob(24, 2.5); // moved +5 mm along x
        let opts = RegisterOptions { levels_mm: vec![4.0, 2.0], iterations: 100, search: false, ..Default::default() };
        let reg = register_affine(&m, &f, None, &opts).unwrap();
        let p = reg.transform.apply([4.0, 4.0, 4.0]);
        assert!((p[0] - 9.0).abs() < 0.5 && (p[1] - 4.0).abs() < 0.5 && (p[2] - 4.0).abs() < 0.5, "{p:?}");
    }
}
