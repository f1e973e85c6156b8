//! The brain mask: the template's mask applied in template space before the model, and mapped back to the
//! subject's native grid (for overlays and checks), optionally refined by the subject's own intensities.

use super::resample::{resample, Grid, Interp};
use super::transform::Transform;
use super::{invalid, PreprocessError};
use crate::volume::Volume;

/// Zero every voxel of `vol` outside `mask` (same grid).
pub fn apply_mask(vol: &mut Volume, mask: &Volume) -> Result<(), PreprocessError> {
    if vol.shape() != mask.shape() {
        return Err(invalid("mask", format!("mask shape {:?} differs from {:?}", mask.shape(), vol.shape())));
    }
    ndarray::Zip::from(&mut vol.data).and(&mask.data).par_for_each(|v, m| {
        if *m <= 0.5 {
            *v = 0.0;
        }
    });
    vol.provenance.notes.push("brain mask applied".into());
    Ok(())
}

/// The template mask on the native grid of `native`, through `template_to_native` (trilinear, > 0.5).
///
/// With `refine`, voxels darker than a fifth of the mean intensity inside the mapped mask are dropped (CSF and
/// background at the edge of an imperfect fit).
pub fn mask_to_native(
    mask: &Volume,
    native: &Volume,
    template_to_native: &Transform,
    refine: bool,
) -> Result<Volume, PreprocessError> {
    let inv = template_to_native.inverse().ok_or_else(|| invalid("mask", "singular transform"))?;
    let mut m = resample(mask, &Grid::of(native), &inv.matrix, Interp::Linear, 0.0)
        .ok_or_else(|| invalid("mask", "singular template affine"))?;
    m.data.mapv_inplace(|v| if v > 0.5 { 1.0 } else { 0.0 });
    if refine {
        let (sum, n) = ndarray::Zip::from(&m.data).and(&native.data).fold((0.0f64, 0usize), |(s, n), &mv, &x| {
            if mv > 0.0 {
                (s + x as f64, n + 1)
            } else {
                (s, n)
            }
        });
        if n > 0 {
            let cut = (0.2 * sum / n as f64) as f32;
            ndarray::Zip::from(&mut m.data).and(&native.data).for_each(|mv, &x| {
                if x < cut {
                    *mv = 0.0;
                }
            });
        }
    }
    m.provenance.notes.push("template brain mask mapped to native space".into());
    Ok(m)
}

/// Dice overlap of two binary masks (> 0.5) on the same grid; `None` if both are empty or grids differ.
pub fn dice(a: &Volume, b: &Volume) -> Option<f64> {
    if a.shape() != b.shape() {
        return None;
    }
    let (mut inter, mut na, mut nb) = (0usize, 0usize, 0usize);
    ndarray::Zip::from(&a.data).and(&b.data).for_each(|&x, &y| {
        let (x, y) = (x > 0.5, y > 0.5);
        inter += (x && y) as usize;
        na += x as usize;
        nb += y as usize;
    });
    (na + nb > 0).then(|| 2.0 * inter as f64 / (na + nb) as f64)
}

/// Otsu's threshold of the finite values `values` (256 bins between their min and max): the cut that maximises
/// the between-class variance. `None` when there are no values or all are equal.
pub fn otsu_threshold<'a>(values: impl Iterator<Item = &'a f32> + Clone) -> Option<f32> {
    let (lo, hi) = values
        .clone()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    const BINS: usize = 256;
    let step = (hi - lo) as f64 / BINS as f64;
    let mut hist = [0f64; BINS];
    for v in values.filter(|v| v.is_finite()) {
        hist[(((*v - lo) as f64 / step) as usize).min(BINS - 1)] += 1.0;
    }
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(i, h)| i as f64 * h).sum();
    let (mut w0, mut sum0, mut best, mut cut) = (0.0, 0.0, -1.0, 0usize);
    for (i, h) in hist.iter().enumerate().take(BINS - 1) {
        w0 += h;
        sum0 += i as f64 * h;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            cut = i;
        }
    }
    Some(lo + ((cut + 1) as f64 * step) as f32)
}
