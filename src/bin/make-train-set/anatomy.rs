//! What the generator knows about the source template's anatomy: three tissue intensities (CSF, grey, white
//! matter, by 1-D k-means inside the brain mask) and the two atrophy directions, both as unit vector fields on a
//! 2 mm grid over the template:
//!
//! - **ventricles**: the gradient of the smoothed (5 mm) ventricle indicator (dark voxels inside a box around the lateral
//!   and third ventricles, in MNI millimetres). Sampling the template at `q + a·g_v(q)` pulls ventricle values
//!   outwards, so the ventricles grow with `a`.
//! - **cortex**: the gradient of the smoothed "dark" indicator (CSF or outside the brain). Sampling at
//!   `q + a·g_c(q)` widens every CSF space a little: sulci open, the cortex thins, the brain surface recedes.
//!
//! The fields are unit-scaled (largest magnitude 1), so `a` is the largest shift in millimetres.

use ndarray::{Array3, Zip};

use super::field::{block_mean, gaussian_blur, VectorField};
use ldae::preprocess::template::Template;

/// Millimetres per voxel of the coarse grid the atrophy fields live on.
const COARSE_MM: usize = 2;

/// The box (MNI mm, min/max per axis) that holds the lateral and third ventricles and little else that is dark.
const VENTRICLE_BOX: [[f64; 2]; 3] = [[-24.0, 24.0], [-42.0, 28.0], [-12.0, 26.0]];

/// Tissue intensities and atrophy fields of one template.
#[derive(Debug, Clone)]
pub struct Anatomy {
    /// Mean template intensity of CSF, grey matter and white matter inside the brain mask.
    pub means: [f64; 3],
    /// Template voxels per coarse-grid voxel (per axis).
    pub factor: f64,
    /// Template voxel size (mm, the finest axis).
    pub spacing: f64,
    /// Ventricle expansion direction (unit max), in template voxel axes.
    pub ventricles: VectorField,
    /// CSF widening direction (unit max), in template voxel axes.
    pub cortex: VectorField,
    /// Centroid of the brain mask (world mm): the centre of each subject's random affine.
    pub centre: [f64; 3],
    /// Voxels counted as ventricle.
    pub ventricle_voxels: usize,
}

/// Why a template cannot drive the generator.
#[derive(Debug, thiserror::Error)]
pub enum AnatomyError {
    #[error("the template brain has too few voxels ({0}) to tell CSF, grey and white matter apart")]
    TooSmall(usize),
    #[error("no dark voxels in the ventricle box {VENTRICLE_BOX:?} (MNI mm): is the template in MNI space?")]
    NoVentricles,
}

/// Three class means of `values` by 1-D k-means started at the 15th, 50th and 85th percentiles.
fn three_means(values: &mut [f32]) -> [f64; 3] {
    values.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| values[((values.len() - 1) as f64 * f) as usize] as f64;
    let mut m = [q(0.15), q(0.5), q(0.85)];
    for _ in 0..50 {
        let mut s = [0.0f64; 3];
        let mut n = [0usize; 3];
        for &v in values.iter() {
            let v = v as f64;
            let c = (0..3).min_by(|&a, &b| (v - m[a]).abs().total_cmp(&(v - m[b]).abs())).unwrap_or(0);
            s[c] += v;
            n[c] += 1;
        }
        let next = [0, 1, 2].map(|c| if n[c] > 0 { s[c] / n[c] as f64 } else { m[c] });
        if next.iter().zip(&m).all(|(a, b)| (a - b).abs() < 1e-6) {
            break;
        }
        m = next;
    }
    m
}

impl Anatomy {
    /// Segment the template by intensity and build the atrophy fields.
    pub fn of(template: &Template) -> Result<Anatomy, AnatomyError> {
        let t1 = &template.t1;
        let mask = &template.mask.data;
        let mut brain: Vec<f32> = Zip::from(&t1.data).and(mask).fold(Vec::new(), |mut v, &t, &m| {
            if m > 0.5 {
                v.push(t);
            }
            v
        });
        if brain.len() < 1000 {
            return Err(AnatomyError::TooSmall(brain.len()));
        }
        let means = three_means(&mut brain);
        let dark_below = 0.5 * (means[0] + means[1]);
        let world = t1.affine;
        let mut ventricle_voxels = 0usize;
        let mut sum = [0.0f64; 3];
        let mut vent = Array3::<f32>::zeros(t1.data.raw_dim());
        let mut dark = Array3::<f32>::zeros(t1.data.raw_dim());
        for ((i, j, k), &t) in t1.data.indexed_iter() {
            let inside = mask[[i, j, k]] > 0.5;
            let is_dark = !inside || (t as f64) < dark_below;
            dark[[i, j, k]] = is_dark as u8 as f32;
            let p = world.apply([i as f64, j as f64, k as f64]);
            if inside {
                (0..3).for_each(|d| sum[d] += p[d]);
            }
            if inside && is_dark && (0..3).all(|d| (VENTRICLE_BOX[d][0]..=VENTRICLE_BOX[d][1]).contains(&p[d])) {
                vent[[i, j, k]] = 1.0;
                ventricle_voxels += 1;
            }
        }
        if ventricle_voxels == 0 {
            return Err(AnatomyError::NoVentricles);
        }
        let spacing = t1.spacing().iter().copied().fold(f64::INFINITY, f64::min);
        let factor = ((COARSE_MM as f64 / spacing).round() as usize).max(1);
        let coarse_mm = factor as f64 * spacing;
        // Smoothing widths: ventricles 5 mm (a broad push that folds only past 8 mm), CSF spaces 1.5 mm (keeps sulci
        // apart).
        let ventricles = VectorField::unit_gradient(&gaussian_blur(&block_mean(&vent, factor), 5.0 / coarse_mm));
        let cortex = VectorField::unit_gradient(&gaussian_blur(&block_mean(&dark, factor), 1.5 / coarse_mm));
        let centre = sum.map(|s| s / brain.len() as f64);
        Ok(Anatomy { means, centre, factor: factor as f64, spacing, ventricles, cortex, ventricle_voxels })
    }

    /// The template voxel position `q` moved by atrophy: ventricles pushed out by `vent_mm`, CSF spaces widened by
    /// `cortex_mm` (both the largest shift, in millimetres).
    #[inline]
    pub fn atrophied(&self, q: [f64; 3], vent_mm: f64, cortex_mm: f64) -> [f64; 3] {
        // Coarse block b averages voxels b·f .. b·f+f-1: its centre is at voxel b·f + (f-1)/2.
        let c = q.map(|x| (x - (self.factor - 1.0) / 2.0) / self.factor);
        let gv = self.ventricles.at(c);
        let gc = self.cortex.at(c);
        let (sv, sc) = (vent_mm / self.spacing, cortex_mm / self.spacing);
        [q[0] + sv * gv[0] + sc * gc[0], q[1] + sv * gv[1] + sc * gc[1], q[2] + sv * gv[2] + sc * gc[2]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_means_finds_three_levels() {
        let mut v: Vec<f32> = (0..300).map(|i| [10.0, 50.0, 90.0][i % 3] + (i % 7) as f32 * 0.1).collect();
        let m = three_means(&mut v);
        assert!((m[0] - 10.3).abs() < 0.5 && (m[1] - 50.3).abs() < 0.5 && (m[2] - 90.3).abs() < 0.5, "{m:?}");
    }
}
