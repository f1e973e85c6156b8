//! Quality numbers of one registration, for the daemon's QC gate: how much of the template's brain the scan
//! actually covers once registered. A scan cropped through the brain, a slab, or a registration that slid off
//! the head leaves part of the template brain mask outside the scan's field of view.

use serde::{Deserialize, Serialize};

use crate::volume::Volume;

use super::transform::Transform;

/// The `[qc]` section: a registration below either threshold is held for review instead of being encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QcConfig {
    /// Least final registration metric (Mattes mutual information, nats, as the registration reports it).
    pub min_metric: f64,
    /// Least fraction of the template brain mask that lands inside the scan's field of view.
    pub min_brain_coverage: f64,
}

impl Default for QcConfig {
    fn default() -> Self {
        QcConfig { min_metric: 0.3, min_brain_coverage: 0.9 }
    }
}

impl QcConfig {
    /// Check values that types alone cannot: `(key, message)` of the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.min_metric.is_finite() {
            return Err(("qc.min_metric", "must be a number"));
        }
        if !(0.0..=1.0).contains(&self.min_brain_coverage) {
            return Err(("qc.min_brain_coverage", "must be a fraction in [0, 1]"));
        }
        Ok(())
    }

    /// Why a registration with this metric and coverage needs review, if it does (NaN fails).
    pub fn review_reason(&self, metric: f64, coverage: f64) -> Option<String> {
        if metric.is_nan() || metric < self.min_metric {
            return Some(format!("qc.min_metric: registration metric {metric:.3} below {}", self.min_metric));
        }
        if coverage.is_nan() || coverage < self.min_brain_coverage {
            return Some(format!(
                "qc.min_brain_coverage: {:.0} % of the template brain inside the field of view, below {:.0} %",
                coverage * 100.0,
                self.min_brain_coverage * 100.0
            ));
        }
        None
    }
}

/// The fraction (0..=1) of the template brain mask (voxels > 0.5) that `template_to_native` maps inside the
/// field of view of `native` (the box of its voxel centres, widened by half a voxel). NaN when the mask is empty
/// or the native affine is singular, so a threshold on it fails rather than passes.
pub fn brain_coverage(mask: &Volume, native: &Volume, template_to_native: &Transform) -> f64 {
    let Some(to_voxel) = native.affine.inverse() else { return f64::NAN };
    let to_native_voxel = to_voxel.matmul(&template_to_native.matrix).matmul(&mask.affine);
    let shape = native.shape();
    let (mut inside, mut total) = (0usize, 0usize);
    for ((i, j, k), v) in mask.data.indexed_iter() {
        if *v <= 0.5 {
            continue;
        }
        total += 1;
        let p = to_native_voxel.apply([i as f64, j as f64, k as f64]);
        if p.iter().zip(shape).all(|(&c, n)| c >= -0.5 && c <= n as f64 - 0.5) {
            inside += 1;
        }
    }
    if total == 0 {
        return f64::NAN;
    }
    inside as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Affine;
    use ndarray::Array3;

    #[test]
    fn coverage_is_the_fraction_of_the_mask_inside_the_scan() {
        // A 20 mm cube of brain at 1 mm; the scan covers x in [0, 20) fully, or only x in [0, 10).
        let mut m = Array3::<f32>::zeros((20, 20, 20));
        m.fill(1.0);
        let mask = Volume::new(m, Affine::identity());
        let t = Transform::identity("template", "native");
        let full = Volume::new(Array3::zeros((20, 20, 20)), Affine::identity());
        assert_eq!(brain_coverage(&mask, &full, &t), 1.0);
        let half = Volume::new(Array3::zeros((10, 20, 20)), Affine::identity());
        assert!((brain_coverage(&mask, &half, &t) - 0.5).abs() < 1e-9);
        // 2 mm voxels from 10 mm on in x and y: the field of view is [9, 19] there (11 of 20 mask columns).
        let coarse =
            Volume::new(Array3::zeros((5, 5, 10)), Affine::from_spacing_origin([2.0, 2.0, 2.0], [10.0, 10.0, 0.0]));
        let c = brain_coverage(&mask, &coarse, &t);
        assert!((c - 0.55 * 0.55).abs() < 1e-9, "{c}");
        let empty = Volume::new(Array3::zeros((20, 20, 20)), Affine::identity());
        assert!(brain_coverage(&empty, &full, &t).is_nan());
    }
}
