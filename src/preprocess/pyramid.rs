//! Multi-resolution pyramids: Gaussian smoothing (separable, edge-clamped, rayon) and resampling to a coarser
//! grid with the same direction and voxel 0 position, so each registration level sees an image whose detail
//! matches its voxel size.

use ndarray::{Array3, Axis};
use rayon::prelude::*;

use super::resample::{resample, Grid, Interp};
use crate::volume::{Affine, Volume};

/// Smooth with a Gaussian of `sigma_mm` (per world axis of the grid), edge values repeated.
pub fn gaussian_smooth(vol: &Volume, sigma_mm: f64) -> Volume {
    let spacing = vol.spacing();
    let mut data = vol.data.as_standard_layout().to_owned();
    for (axis, s) in spacing.iter().enumerate() {
        let sigma = sigma_mm / s;
        if sigma < 0.3 || data.shape()[axis] < 2 {
            continue;
        }
        let radius = (3.0 * sigma).ceil() as isize;
        let mut kernel: Vec<f32> =
            (-radius..=radius).map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
        let sum: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= sum);
        data = convolve_axis(&data, axis, &kernel, radius);
    }
    Volume { data, affine: vol.affine, provenance: vol.provenance.clone() }
}

fn convolve_axis(data: &Array3<f32>, axis: usize, kernel: &[f32], radius: isize) -> Array3<f32> {
    let mut out = Array3::<f32>::zeros(data.raw_dim());
    let n = data.shape()[axis] as isize;
    // Parallel over the lanes along `axis`, grouped by the outer axis that is not `axis`.
    let outer = if axis == 0 { 1 } else { 0 };
    out.axis_iter_mut(Axis(outer)).into_par_iter().zip(data.axis_iter(Axis(outer))).for_each(|(mut o, d)| {
        let inner_axis = if axis > outer { axis - 1 } else { axis };
        let mut line = vec![0f32; n as usize];
        for (mut ol, dl) in o.lanes_mut(Axis(inner_axis)).into_iter().zip(d.lanes(Axis(inner_axis))) {
            for (l, v) in line.iter_mut().zip(dl.iter()) {
                *l = *v;
            }
            for i in 0..n {
                let mut acc = 0f32;
                for (t, k) in kernel.iter().enumerate() {
                    let j = (i + t as isize - radius).clamp(0, n - 1);
                    acc += k * line[j as usize];
                }
                ol[i as usize] = acc;
            }
        }
    });
    out
}

/// The volume smoothed and resampled to isotropic `spacing_mm` voxels on a grid with the same direction and
/// voxel 0 position that covers the same extent. A volume whose voxels are already at least that large
/// along every axis is returned unchanged.
pub fn downsample_to(vol: &Volume, spacing_mm: f64) -> Volume {
    let s = vol.spacing();
    if s.iter().all(|v| *v >= spacing_mm * 0.999) {
        return vol.clone();
    }
    let finest = s.iter().cloned().fold(f64::INFINITY, f64::min);
    let sigma = 0.5 * (spacing_mm * spacing_mm - finest * finest).max(0.0).sqrt();
    let smooth = gaussian_smooth(vol, sigma);
    let n = vol.shape();
    let mut shape = [0usize; 3];
    let mut cols = [[0.0; 3]; 3];
    for d in 0..3 {
        let step = spacing_mm.max(s[d]);
        shape[d] = (((n[d] as f64) * s[d] / step).round() as usize).max(1);
        let c = vol.affine.column(d);
        for r in 0..3 {
            cols[d][r] = c[r] / s[d] * step;
        }
    }
    let grid = Grid { shape, affine: Affine::from_columns(cols[0], cols[1], cols[2], vol.affine.origin()) };
    resample(&smooth, &grid, &Affine::identity(), Interp::Linear, 0.0).unwrap_or(smooth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_keeps_the_mean_of_a_constant_and_spreads_a_spike() {
        let mut data = Array3::from_elem((9, 9, 9), 1.0f32);
        data[[4, 4, 4]] = 28.0;
        let v = Volume::new(data, Affine::identity());
        let s = gaussian_smooth(&v, 1.0);
        assert!(s.data[[4, 4, 4]] < 10.0 && s.data[[4, 4, 4]] > 1.0);
        assert!(s.data[[5, 4, 4]] > 1.0);
        assert!((s.data[[0, 0, 0]] - 1.0).abs() < 1e-5);
        let total: f32 = s.data.iter().sum();
        assert!((total - (729.0 + 27.0)).abs() < 1e-2);
    }

    #[test]
    fn downsampling_halves_the_grid() {
        let v =
            Volume::new(Array3::from_elem((20, 10, 4), 2.0f32), Affine::from_spacing_origin([1.0, 1.0, 2.0], [3.0; 3]));
        let d = downsample_to(&v, 2.0);
        assert_eq!(d.shape(), [10, 5, 4]);
        assert_eq!(d.spacing(), [2.0, 2.0, 2.0]);
        assert_eq!(d.affine.origin(), [3.0; 3]);
        assert!((d.data[[5, 2, 1]] - 2.0).abs() < 1e-5);
    }
}
