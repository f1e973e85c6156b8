//! The model's exact input: the reference loader's deterministic steps (SPEC §6, MONAI 1.3.2), in order:
//!
//! 1. `Spacingd(pixdim)`: trilinear resampling to an isotropic voxel size, float64 arithmetic, border padding
//!    (indices clamped to the edge), voxel 0 keeps its world position, the direction is kept; the output size per
//!    axis is `round_half_even((n-1)·s/pixdim + 1)` and output voxel `j` samples input index `j·pixdim/s`.
//! 2. `ResizeWithPadOrCropd(spatial_size, mode="minimum")`: centre crop on every axis first
//!    (`start = n/2 - target/2`), then pad axis by axis (X, Y, Z) with numpy's "minimum" mode (each padded voxel
//!    takes the minimum of its 1-D line along the padded axis), `before = (target-n)/2`, the extra voxel at the end.
//! 3. `ScaleIntensityd(0, 1)`: global min–max, `(x-min)/(max-min)`, all zeros when `max == min`.
//!
//! Spacing and shape come from the model's `config.json` (`data.pixdim`, `data.resize_to`), never constants.
//! For flipped or rotated affines MONAI picks the output origin from the transformed corners; ldae keeps voxel 0
//! (the two agree for the axis-aligned, positive-spacing grids that registration to MNI produces).

use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;

use super::{invalid, PreprocessError};
use crate::volume::{Affine, Volume};

/// Step 1: resample to isotropic `pixdim` mm keeping voxel 0's position and the direction (border clamp).
pub fn resample_to_spacing(vol: &Volume, pixdim: f64) -> Result<Volume, PreprocessError> {
    if !(pixdim.is_finite() && pixdim > 0.0) {
        return Err(invalid("model input", format!("pixdim {pixdim} must be a positive number")));
    }
    let n = vol.shape();
    if n.contains(&0) {
        return Err(invalid("model input", "empty volume"));
    }
    let s = vol.spacing();
    if s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(invalid("model input", format!("voxel sizes {s:?} are not positive")));
    }
    let mut m = [0usize; 3];
    for d in 0..3 {
        let size = ((n[d] - 1) as f64 * s[d] / pixdim + 1.0).round_ties_even();
        if !(1.0..=4096.0).contains(&size) {
            return Err(invalid("model input", format!("output size {size} on axis {d} is out of range")));
        }
        m[d] = size as usize;
    }
    let ratio = [pixdim / s[0], pixdim / s[1], pixdim / s[2]];
    let src = &vol.data;
    // Per-axis sample positions: lower index, upper index (clamped), weight of the upper one.
    let taps: Vec<Vec<(usize, usize, f64)>> = (0..3)
        .map(|d| {
            (0..m[d])
                .map(|j| {
                    let x = (j as f64 * ratio[d]).clamp(0.0, (n[d] - 1) as f64);
                    let i0 = x.floor() as usize;
                    let i1 = (i0 + 1).min(n[d] - 1);
                    (i0, i1, x - i0 as f64)
                })
                .collect()
        })
        .collect();
    let mut out = Array3::<f32>::zeros((m[0], m[1], m[2]));
    out.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(a, mut plane)| {
        let (x0, x1, wx) = taps[0][a];
        for (b, &(y0, y1, wy)) in taps[1].iter().enumerate() {
            for (c, &(z0, z1, wz)) in taps[2].iter().enumerate() {
                let v = |i: usize, j: usize, k: usize| src[[i, j, k]] as f64;
                let c00 = v(x0, y0, z0) * (1.0 - wx) + v(x1, y0, z0) * wx;
                let c10 = v(x0, y1, z0) * (1.0 - wx) + v(x1, y1, z0) * wx;
                let c01 = v(x0, y0, z1) * (1.0 - wx) + v(x1, y0, z1) * wx;
                let c11 = v(x0, y1, z1) * (1.0 - wx) + v(x1, y1, z1) * wx;
                let c0 = c00 * (1.0 - wy) + c10 * wy;
                let c1 = c01 * (1.0 - wy) + c11 * wy;
                plane[[b, c]] = (c0 * (1.0 - wz) + c1 * wz) as f32;
            }
        }
    });
    let mut affine = vol.affine;
    for (c, sc) in s.iter().enumerate() {
        for r in 0..3 {
            affine.0[r][c] = vol.affine.0[r][c] / sc * pixdim;
        }
    }
    let mut v = Volume { data: out, affine, provenance: vol.provenance.clone() };
    v.provenance.notes.push(format!("resampled to {pixdim} mm (trilinear, border)"));
    Ok(v)
}

/// Step 2: centre crop then pad (numpy "minimum" mode, axis by axis) to `target`.
///
/// Returns the volume and the affine of the new grid (voxel 0 moves by the crop start and the pad before).
pub fn pad_or_crop_minimum(vol: &Volume, target: [usize; 3]) -> Result<Volume, PreprocessError> {
    if target.contains(&0) {
        return Err(invalid("model input", format!("target shape {target:?} has a zero axis")));
    }
    let n = vol.shape();
    // Crop (all axes first).
    let mut start = [0usize; 3];
    let mut kept = n;
    for d in 0..3 {
        if n[d] > target[d] {
            start[d] = n[d] / 2 - target[d] / 2;
            kept[d] = target[d];
        }
    }
    let mut data = vol
        .data
        .slice(ndarray::s![start[0]..start[0] + kept[0], start[1]..start[1] + kept[1], start[2]..start[2] + kept[2]])
        .to_owned();
    // Pad axis by axis; the line minimum is taken over the array as padded so far.
    let mut before = [0usize; 3];
    for d in 0..3 {
        let cur = data.shape()[d];
        if cur >= target[d] {
            continue;
        }
        before[d] = (target[d] - cur) / 2;
        let mut shape = [data.shape()[0], data.shape()[1], data.shape()[2]];
        shape[d] = target[d];
        let mut padded = Array3::<f32>::zeros(shape);
        let b = before[d];
        Zip::from(padded.lanes_mut(Axis(d))).and(data.lanes(Axis(d))).for_each(|mut out, line| {
            let min = line.iter().copied().fold(f32::INFINITY, f32::min);
            for (i, o) in out.iter_mut().enumerate() {
                *o = if i >= b && i < b + cur { line[i - b] } else { min };
            }
        });
        data = padded;
    }
    // Voxel 0 of the result sits at input index start - before.
    let shift =
        [start[0] as f64 - before[0] as f64, start[1] as f64 - before[1] as f64, start[2] as f64 - before[2] as f64];
    let mut affine = vol.affine;
    let o = vol.affine.apply(shift);
    for (r, v) in o.iter().enumerate() {
        affine.0[r][3] = *v;
    }
    let mut v = Volume { data, affine, provenance: vol.provenance.clone() };
    v.provenance.notes.push(format!("centre crop/pad (minimum) to {target:?}"));
    Ok(v)
}

/// Step 3: global min–max to [0, 1] in place (all zeros when the volume is constant).
pub fn scale_min_max(vol: &mut Volume) -> (f32, f32) {
    let (min, max) = vol.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if max > min {
        let range = max - min;
        vol.data.par_mapv_inplace(|v| (v - min) / range);
    } else {
        vol.data.par_mapv_inplace(|v| v * 0.0);
    }
    (min, max)
}

/// All three steps: the volume the model reads, with its affine (for writing it as NIfTI).
pub fn model_input(vol: &Volume, pixdim: f64, shape: [usize; 3]) -> Result<Volume, PreprocessError> {
    let spaced = resample_to_spacing(vol, pixdim)?;
    let mut out = pad_or_crop_minimum(&spaced, shape)?;
    scale_min_max(&mut out);
    Ok(out)
}

/// The affine a model input of `shape` at `pixdim` would have if its voxel 0 were at `origin` (axis-aligned).
pub fn isotropic_affine(pixdim: f64, origin: [f64; 3]) -> Affine {
    Affine::from_spacing_origin([pixdim; 3], origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(data: Array3<f32>, spacing: [f64; 3]) -> Volume {
        Volume::new(data, Affine::from_spacing_origin(spacing, [-10.0, 5.0, 2.0]))
    }

    #[test]
    fn output_size_rounds_half_to_even() {
        // (n-1)*s/p + 1 = 24.5 → 24 (half to even), 25.5 → 26.
        let v = vol(Array3::zeros((48, 50, 2)), [0.5, 0.5, 1.0]);
        let r = resample_to_spacing(&v, 1.0).unwrap();
        assert_eq!(r.shape(), [24, 26, 2]);
    }

    #[test]
    fn resampling_keeps_voxel_zero_and_interpolates_linearly() {
        let data = Array3::from_shape_fn((5, 3, 3), |(i, j, k)| (i * 2 + j + 3 * k) as f32);
        let v = vol(data, [1.0, 1.0, 1.0]);
        let r = resample_to_spacing(&v, 0.5).unwrap();
        assert_eq!(r.shape(), [9, 5, 5]);
        assert_eq!(r.affine.origin(), v.affine.origin());
        // Linear data is reproduced exactly at half-voxel positions.
        assert!((r.data[[3, 1, 1]] - (1.5 * 2.0 + 0.5 + 1.5)).abs() < 1e-6);
        assert!((r.affine.0[0][0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn border_is_clamped() {
        let data = Array3::from_shape_fn((2, 1, 1), |(i, _, _)| i as f32 * 10.0);
        let v = vol(data, [3.0, 1.0, 1.0]);
        // (2-1)*3/2 + 1 = 2.5 → 2; j=1 samples index 0.667.
        let r = resample_to_spacing(&v, 2.0).unwrap();
        assert_eq!(r.shape()[0], 2);
        assert!((r.data[[1, 0, 0]] - 20.0 / 3.0).abs() < 1e-5);
    }

    #[test]
    fn crop_then_pad_with_line_minimum() {
        let data = Array3::from_shape_fn((3, 6, 1), |(i, j, _)| (10 * i + j) as f32 + 1.0);
        let v = vol(data, [1.0; 3]);
        let r = pad_or_crop_minimum(&v, [6, 4, 1]).unwrap();
        assert_eq!(r.shape(), [6, 4, 1]);
        // Y cropped from 6 to 4 starting at 1; X padded (1, 2) with the minimum of each X line.
        assert_eq!(r.data[[1, 0, 0]], 2.0);
        assert_eq!(r.data[[0, 0, 0]], 2.0);
        assert_eq!(r.data[[5, 3, 0]], 5.0);
        assert_eq!(r.data[[3, 3, 0]], 25.0);
        // Voxel 0 of the result is input index (-1, 1, 0).
        assert_eq!(r.affine.origin(), [-11.0, 6.0, 2.0]);
    }

    #[test]
    fn constant_volume_scales_to_zero() {
        let mut v = vol(Array3::from_elem((2, 2, 2), 7.0), [1.0; 3]);
        scale_min_max(&mut v);
        assert!(v.data.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn bad_pixdim_is_an_error() {
        let v = vol(Array3::zeros((2, 2, 2)), [1.0; 3]);
        assert!(model_input(&v, 0.0, [2, 2, 2]).is_err());
        assert!(model_input(&v, f64::NAN, [2, 2, 2]).is_err());
        assert!(model_input(&v, 1.0, [0, 2, 2]).is_err());
    }
}
