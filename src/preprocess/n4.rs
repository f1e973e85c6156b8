//! N4-style bias-field correction (after Tustison et al. 2010, "N4ITK: improved N3 bias correction").
//!
//! The image is modelled as `I = T · B` with a smooth multiplicative field `B`. In log intensity the field is
//! additive; each iteration takes the current log-corrected image inside the mask, sharpens its histogram
//! ([`super::sharpen`]), fits a cubic B-spline ([`super::bspline`]) to the residual (corrected minus
//! sharpened) and adds it to the field. A level stops when the coefficient of variation of the field update
//! (as a ratio, `exp(Δ)`) inside the mask falls below the convergence threshold or its iterations run out; the
//! next level doubles the control-point lattice. The work runs on a copy shrunk by block averaging; the field's
//! lattices are evaluated at the full resolution at the end, normalised to a mean log of 0 inside the mask, and
//! the input divided by it.

use ndarray::{Array3, Zip};
use serde::{Deserialize, Serialize};

use super::bspline::{taps, Lattice, Tap};
use super::mask::otsu_threshold;
use super::sharpen::{sharpen_map, SharpenParams};
use super::{invalid, PreprocessError};
use crate::limits::Limits;
use crate::volume::Volume;

/// The parameters of N4 (the `[preprocess.n4]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct N4Options {
    /// Iterations per resolution level; the number of entries is the number of levels. Default 3 levels (1, 2, 4
    /// spans): on Colin27 at 2.5 mm with a known field a 4th level (8 spans, ~22 mm between control points)
    /// fitted anatomy as bias (residual field CV 0.037 with 3 levels, 0.082 with 4; ANTs' 4 levels: 0.038).
    pub iterations: Vec<u32>,
    /// Block size (voxels per axis) of the shrunk working copy.
    pub shrink: u32,
    /// B-spline spans per axis at the first level (the lattice has spans + 3 control points); doubled per level.
    pub initial_spans: u32,
    /// Stop a level when the coefficient of variation of the field update inside the mask is below this.
    pub convergence: f64,
    /// Histogram bins of the sharpening.
    pub bins: u32,
    /// FWHM (log intensity) of the Gaussian the bias blurs the histogram with.
    pub fwhm: f64,
    /// Wiener filter noise term of the deconvolution.
    pub wiener_noise: f64,
}

impl Default for N4Options {
    fn default() -> Self {
        N4Options {
            iterations: vec![50, 50, 50],
            shrink: 4,
            initial_spans: 1,
            convergence: 0.001,
            bins: 200,
            fwhm: 0.15,
            wiener_noise: 0.01,
        }
    }
}

impl N4Options {
    /// Check values that types alone cannot: `(key, message)` of the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.iterations.is_empty() || self.iterations.len() > 8 || self.iterations.iter().any(|i| *i > 10_000) {
            return Err(("preprocess.n4.iterations", "must list 1 to 8 levels of at most 10000 iterations"));
        }
        if !(1..=16).contains(&self.shrink) {
            return Err(("preprocess.n4.shrink", "must be in 1..=16"));
        }
        if !(1..=64).contains(&self.initial_spans) {
            return Err(("preprocess.n4.initial_spans", "must be in 1..=64"));
        }
        if !(self.convergence >= 0.0 && self.convergence.is_finite()) {
            return Err(("preprocess.n4.convergence", "must be ≥ 0"));
        }
        if !(16..=4096).contains(&self.bins) {
            return Err(("preprocess.n4.bins", "must be in 16..=4096"));
        }
        if !(self.fwhm > 0.0 && self.fwhm < 10.0) {
            return Err(("preprocess.n4.fwhm", "must be in (0, 10)"));
        }
        if !(self.wiener_noise > 0.0 && self.wiener_noise < 1.0) {
            return Err(("preprocess.n4.wiener_noise", "must be in (0, 1)"));
        }
        Ok(())
    }
}

/// What one level did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct N4Level {
    pub spans: usize,
    pub iterations: u32,
    /// Coefficient of variation of the last field update.
    pub last_update_cv: f64,
}

/// The corrected image, the multiplicative field on the input grid, and what each level did.
#[derive(Debug, Clone)]
pub struct N4Result {
    pub corrected: Volume,
    pub field: Volume,
    pub levels: Vec<N4Level>,
    /// Voxels of the input inside the mask used for the fit.
    pub mask_voxels: usize,
}

/// The mask N4 fits in when none is given: voxels above Otsu's threshold of the positive intensities.
pub fn default_mask(vol: &Volume) -> Volume {
    let pos: Vec<f32> = vol.data.iter().copied().filter(|v| *v > 0.0 && v.is_finite()).collect();
    let cut = otsu_threshold(pos.iter()).unwrap_or(0.0);
    let data = vol.data.mapv(|v| if v > cut && v > 0.0 { 1.0 } else { 0.0 });
    Volume { data, affine: vol.affine, provenance: vol.provenance.clone() }
}

/// Correct `vol` for a smooth multiplicative bias field, fitted inside `mask` (> 0.5; same grid) or the
/// [`default_mask`]. `progress(level, iteration, update_cv)` is called after every iteration.
pub fn n4(
    vol: &Volume,
    mask: Option<&Volume>,
    opts: &N4Options,
    limits: &Limits,
    progress: &(dyn Fn(usize, u32, f64) + Sync),
) -> Result<N4Result, PreprocessError> {
    opts.validate().map_err(|(k, m)| invalid(k, m))?;
    let shape = vol.shape();
    let own_mask;
    let mask = match mask {
        Some(m) if m.shape() != shape => {
            return Err(invalid("n4", format!("mask shape {:?} differs from the image's {shape:?}", m.shape())))
        }
        Some(m) => m,
        None => {
            own_mask = default_mask(vol);
            &own_mask
        }
    };
    // Voxels that take part: inside the mask, positive and finite (the log needs it).
    let inside = Zip::from(&vol.data).and(&mask.data).map_collect(|&v, &m| m > 0.5 && v > 0.0 && v.is_finite());
    let mask_voxels = inside.iter().filter(|b| **b).count();
    if mask_voxels < 64 {
        return Err(invalid("n4", format!("only {mask_voxels} positive voxels inside the mask (need ≥ 64)")));
    }
    let f = opts.shrink as usize;
    let (log_small, weight, centres) = shrink_log(vol, &inside, f);
    let extent: [f64; 3] = std::array::from_fn(|d| (shape[d].max(2) - 1) as f64);
    let sharpen = SharpenParams { bins: opts.bins as usize, fwhm: opts.fwhm, wiener_noise: opts.wiener_noise };
    let mut field = Array3::<f64>::zeros(log_small.raw_dim());
    let mut lattices: Vec<Lattice> = Vec::new();
    let mut levels = Vec::new();
    let in_idx: Vec<usize> = weight.iter().enumerate().filter(|(_, w)| **w > 0.0).map(|(i, _)| i).collect();
    let w_in: Vec<f64> = in_idx.iter().map(|&i| weight.as_slice().map_or(0.0, |s| s[i])).collect();
    for (level, &iters) in opts.iterations.iter().enumerate() {
        let s = opts.initial_spans as usize * (1usize << level);
        let spans = [s, s, s];
        let t: [Vec<Tap>; 3] = std::array::from_fn(|d| taps(&centres[d], extent[d], s));
        let mut lat = Lattice::zeros(spans, limits)?;
        let (mut done, mut cv) = (0u32, f64::NAN);
        for it in 0..iters {
            let corrected = &log_small - &field;
            let flat = corrected.as_slice().ok_or_else(|| invalid("n4", "non-contiguous working copy"))?;
            let u_in: Vec<f64> = in_idx.iter().map(|&i| flat[i]).collect();
            let Some(map) = sharpen_map(&u_in, &w_in, &sharpen) else { break };
            let mut residual = Array3::<f64>::zeros(log_small.raw_dim());
            Zip::from(&mut residual).and(&corrected).and(&weight).par_for_each(|r, &u, &w| {
                if w > 0.0 {
                    *r = u - map.apply(u);
                }
            });
            let step = Lattice::fit(spans, &residual, &weight, &t, limits)?;
            let update = step.evaluate(&t);
            lat.add(&step);
            field += &update;
            cv = ratio_cv(&update, &weight);
            done = it + 1;
            progress(level, done, cv);
            if cv < opts.convergence {
                break;
            }
        }
        levels.push(N4Level { spans: s, iterations: done, last_update_cv: cv });
        lattices.push(lat);
    }
    // The field at full resolution: every level's lattice evaluated at the input's voxel centres.
    let mut log_field = Array3::<f64>::zeros(vol.data.raw_dim());
    for lat in &lattices {
        let t: [Vec<Tap>; 3] = std::array::from_fn(|d| {
            let pos: Vec<f64> = (0..shape[d]).map(|i| i as f64).collect();
            taps(&pos, extent[d], lat.spans[d])
        });
        log_field += &lat.evaluate(&t);
    }
    let (sum, n) = Zip::from(&log_field)
        .and(&inside)
        .fold((0.0f64, 0usize), |(s, n), &b, &m| if m { (s + b, n + 1) } else { (s, n) });
    let mean = sum / n.max(1) as f64;
    let field_data = log_field.mapv(|b| ((b - mean).exp()) as f32);
    let mut corrected = vol.clone();
    Zip::from(&mut corrected.data).and(&field_data).par_for_each(|v, &b| *v /= b);
    corrected.provenance.notes.push("N4 bias-field correction".into());
    let field = Volume { data: field_data, affine: vol.affine, provenance: vol.provenance.clone() };
    Ok(N4Result { corrected, field, levels, mask_voxels })
}

/// The log image shrunk by averaging `f³` blocks of the voxels that take part, the fraction of each block that
/// takes part (blocks under half are left out: weight 0), and the block centres in input voxel units.
fn shrink_log(vol: &Volume, inside: &Array3<bool>, f: usize) -> (Array3<f64>, Array3<f64>, [Vec<f64>; 3]) {
    let n = vol.shape();
    let m: [usize; 3] = std::array::from_fn(|d| n[d].div_ceil(f));
    let mut sum = Array3::<f64>::zeros(m);
    let mut count = Array3::<f64>::zeros(m);
    let mut total = Array3::<f64>::zeros(m);
    for ((i, j, k), &v) in vol.data.indexed_iter() {
        let b = [i / f, j / f, k / f];
        total[b] += 1.0;
        if inside[[i, j, k]] {
            sum[b] += (v as f64).ln();
            count[b] += 1.0;
        }
    }
    let mut log = Array3::<f64>::zeros(m);
    let mut weight = Array3::<f64>::zeros(m);
    Zip::from(&mut log).and(&mut weight).and(&sum).and(&count).and(&total).for_each(|l, w, &s, &c, &t| {
        if c > 0.0 && c >= 0.5 * t {
            *l = s / c;
            *w = 1.0;
        }
    });
    let centres = std::array::from_fn(|d| {
        (0..m[d])
            .map(|b| {
                let start = b * f;
                let end = ((b + 1) * f).min(n[d]) - 1;
                (start + end) as f64 / 2.0
            })
            .collect()
    });
    (log, weight, centres)
}

/// Coefficient of variation of `exp(update)` over the voxels with weight > 0.
fn ratio_cv(update: &Array3<f64>, weight: &Array3<f64>) -> f64 {
    let (s, s2, n) = Zip::from(update).and(weight).fold((0.0f64, 0.0f64, 0usize), |(s, s2, n), &u, &w| {
        if w > 0.0 {
            let r = u.exp();
            (s + r, s2 + r * r, n + 1)
        } else {
            (s, s2, n)
        }
    });
    if n == 0 {
        return 0.0;
    }
    let mean = s / n as f64;
    let var = (s2 / n as f64 - mean * mean).max(0.0);
    var.sqrt() / mean
}

/// Coefficient of variation of `a / b` inside `mask` (> 0.5): how far an estimated bias field is from the true one
/// up to a constant (0 = exact). NaN when the mask is empty.
pub fn field_ratio_cv(a: &Volume, b: &Volume, mask: &Volume) -> f64 {
    let r: Vec<f64> = a
        .data
        .iter()
        .zip(b.data.iter())
        .zip(mask.data.iter())
        .filter(|(_, m)| **m > 0.5)
        .map(|((x, y), _)| f64::from(*x) / f64::from(*y))
        .collect();
    let mean = r.iter().sum::<f64>() / r.len() as f64;
    (r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / r.len() as f64).sqrt() / mean
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Affine;

    /// A two-tissue phantom: a ball of value 100 inside a shell of 60, background 0.
    fn phantom(n: usize) -> Volume {
        let c = (n as f64 - 1.0) / 2.0;
        let data = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
            let r = ((i as f64 - c).powi(2) + (j as f64 - c).powi(2) + (k as f64 - c).powi(2)).sqrt() / c;
            if r < 0.5 {
                100.0
            } else if r < 0.9 {
                60.0
            } else {
                0.0
            }
        });
        Volume::new(data, Affine::identity())
    }

    #[test]
    fn a_linear_bias_on_a_phantom_is_removed() {
        let n = 32;
        let clean = phantom(n);
        let mut biased = clean.clone();
        biased.data.indexed_iter_mut().for_each(|((i, _, _), v)| *v *= 0.8 + 0.4 * i as f32 / (n - 1) as f32);
        let opts = N4Options { iterations: vec![20, 20, 20], shrink: 2, ..N4Options::default() };
        let r = n4(&biased, None, &opts, &Limits::default(), &|_, _, _| {}).unwrap();
        assert_eq!(r.levels.len(), 3);
        // Inside the inner ball the corrected intensity is nearly constant again.
        let vals: Vec<f32> =
            r.corrected.data.iter().zip(clean.data.iter()).filter(|(_, c)| **c == 100.0).map(|(v, _)| *v).collect();
        let mean = vals.iter().sum::<f32>() / vals.len() as f32;
        let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / vals.len() as f32).sqrt();
        assert!(sd / mean < 0.05, "cv {}", sd / mean);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let v = Volume::new(Array3::zeros((8, 8, 8)), Affine::identity());
        assert!(n4(&v, None, &N4Options::default(), &Limits::default(), &|_, _, _| {}).is_err());
        let m = Volume::new(Array3::zeros((4, 8, 8)), Affine::identity());
        assert!(n4(&phantom(16), Some(&m), &N4Options::default(), &Limits::default(), &|_, _, _| {}).is_err());
        let bad = N4Options { iterations: vec![], ..N4Options::default() };
        assert!(n4(&phantom(16), None, &bad, &Limits::default(), &|_, _, _| {}).is_err());
    }
}
