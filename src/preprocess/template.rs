//! The registration target: a T1 template and its brain mask on the same grid (default: the MNI ICBM152 2009a
//! symmetric T1 and nilearn's brain mask, shipped in `weights/templates/` with their licence notice).

use std::path::Path;

use super::PreprocessError;
use crate::nifti::read_nifti;
use crate::volume::Volume;

/// A template T1 and its binary brain mask (1 inside, 0 outside) on the same grid.
#[derive(Debug, Clone)]
pub struct Template {
    pub t1: Volume,
    pub mask: Volume,
}

impl Template {
    /// Load the T1 and the mask, and check that they share a grid.
    pub fn load(t1_path: &Path, mask_path: &Path) -> Result<Self, PreprocessError> {
        let t1 = read_nifti(t1_path)?;
        let mask = read_nifti(mask_path)?;
        Self::new(t1, mask).map_err(|reason| PreprocessError::Template { path: mask_path.to_path_buf(), reason })
    }

    /// A template from volumes in memory; the mask is binarised at 0.5.
    pub fn new(t1: Volume, mut mask: Volume) -> Result<Self, String> {
        if t1.shape() != mask.shape() {
            return Err(format!("mask shape {:?} differs from the T1's {:?}", mask.shape(), t1.shape()));
        }
        if t1.affine.max_abs_diff(&mask.affine) > 1e-3 {
            return Err("mask affine differs from the T1's".into());
        }
        if t1.shape().iter().any(|n| *n < 2) {
            return Err(format!("template shape {:?} is not a 3-D volume", t1.shape()));
        }
        mask.data.mapv_inplace(|v| if v > 0.5 { 1.0 } else { 0.0 });
        if !mask.data.iter().any(|v| *v > 0.0) {
            return Err("mask is empty".into());
        }
        Ok(Template { t1, mask })
    }

    /// The finest voxel size of the template grid (mm).
    pub fn spacing(&self) -> f64 {
        self.t1.spacing().iter().cloned().fold(f64::INFINITY, f64::min)
    }
}
