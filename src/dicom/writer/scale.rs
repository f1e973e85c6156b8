//! The two numeric decisions of the writer: one series-wide 16-bit scaling with one display window, and the
//! DICOM plane geometry (LPS) of every slice of the volume's grid.
//!
//! Scaling: stored values are unsigned 16-bit, `value = stored × slope + intercept` with one slope and one
//! intercept for the whole series (every frame, every file), both exactly representable as the DS strings written
//! (the quantisation uses the parsed-back strings). The range maps to 0..=[`TOP`], leaving headroom so that the
//! decimal rounding of the slope can never push the maximum past 65535. The window covers the 0.5–99.5th
//! percentiles of the whole volume, once for the series (per-slice windows make stacks flicker).
//!
//! Geometry: the volume's RAS affine becomes LPS (`diag(-1,-1,1)`); column `i` is the DICOM row direction
//! (along a row, i.e. increasing column index), `j` the column direction, slice `k` sits at
//! `IPP_k = origin + k · step`. The in-plane axes must be orthogonal and the slice step along the plane normal
//! (either way): DICOM cannot say anything else without resampling.

use crate::volume::Volume;

use super::elements::ds_value;
use super::WriterError;

/// The largest stored value the scaling uses (of 65535).
pub const TOP: f64 = 65000.0;

/// One series-wide modality LUT and window, in output units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    pub slope: f64,
    pub intercept: f64,
    pub window_center: f64,
    pub window_width: f64,
}

impl Scaling {
    /// The scaling of a volume; every voxel must be finite.
    pub fn of(volume: &Volume) -> Result<Scaling, WriterError> {
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        let mut bad = 0usize;
        for &v in volume.data.iter() {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            } else {
                bad += 1;
            }
        }
        if bad > 0 {
            return Err(WriterError::NotFinite { count: bad });
        }
        if !lo.is_finite() {
            return Err(WriterError::Geometry { reason: "the volume has no voxels".into() });
        }
        let (lo, hi) = (lo as f64, hi as f64);
        let intercept = ds_value(lo);
        let slope = if hi > lo { ds_value((hi - lo) / TOP) } else { 1.0 };
        let slope = if slope > 0.0 { slope } else { 1.0 };
        let mut sorted: Vec<f32> = volume.data.iter().copied().collect();
        let n = sorted.len();
        let at = |q: f64| ((n - 1) as f64 * q).round() as usize;
        let (_, p_lo, _) = sorted.select_nth_unstable_by(at(0.005), f32::total_cmp);
        let p_lo = *p_lo as f64;
        let (_, p_hi, _) = sorted.select_nth_unstable_by(at(0.995), f32::total_cmp);
        let p_hi = *p_hi as f64;
        let width = (p_hi - p_lo).max(slope);
        Ok(Scaling { slope, intercept, window_center: ds_value((p_lo + p_hi) / 2.0), window_width: ds_value(width) })
    }

    /// The stored value of one voxel.
    pub fn store(&self, v: f32) -> u16 {
        ((v as f64 - self.intercept) / self.slope).round().clamp(0.0, 65535.0) as u16
    }
}

/// DICOM plane geometry of the volume's slices (LPS millimetres).
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    /// ImageOrientationPatient: row direction, then column direction.
    pub orientation: [f64; 6],
    /// PixelSpacing: between rows, between columns.
    pub pixel_spacing: [f64; 2],
    /// Distance between slice centres (SliceThickness and SpacingBetweenSlices).
    pub slice_step: f64,
    /// ImagePositionPatient of every slice `k`.
    pub positions: Vec<[f64; 3]>,
    /// The position of every slice along the normal `row × column` (SliceLocation).
    pub locations: Vec<f64>,
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

impl Planes {
    /// The planes of a volume's grid; refuses shear (see the module doc).
    pub fn of(volume: &Volume) -> Result<Planes, WriterError> {
        let a = &volume.affine;
        let lps = |c: [f64; 3]| [-c[0], -c[1], c[2]];
        let (ci, cj, ck, o) = (lps(a.column(0)), lps(a.column(1)), lps(a.column(2)), lps(a.origin()));
        let (di, dj, dk) = (norm(ci), norm(cj), norm(ck));
        let bad = |reason: String| WriterError::Geometry { reason };
        if ![di, dj, dk].iter().all(|d| d.is_finite() && *d > 1e-6) || !o.iter().all(|v| v.is_finite()) {
            return Err(bad(format!("the affine has a zero or non-finite voxel size ({di}, {dj}, {dk})")));
        }
        let r = ci.map(|v| v / di);
        let c = cj.map(|v| v / dj);
        if dot(r, c).abs() > 1e-4 {
            return Err(bad(format!("in-plane axes are not orthogonal (cos = {:.2e})", dot(r, c))));
        }
        let n = super::super::geometry::cross(r, c);
        let along = dot(ck, n) / dk;
        if (along.abs() - 1.0).abs() > 1e-4 {
            return Err(bad(format!("the slice step is not along the plane normal (cos = {along:.6})")));
        }
        let nk = volume.shape()[2];
        let positions: Vec<[f64; 3]> =
            (0..nk).map(|k| [o[0] + ck[0] * k as f64, o[1] + ck[1] * k as f64, o[2] + ck[2] * k as f64]).collect();
        let locations = positions.iter().map(|p| dot(*p, n)).collect();
        Ok(Planes {
            orientation: [r[0], r[1], r[2], c[0], c[1], c[2]],
            pixel_spacing: [dj, di],
            slice_step: dk,
            positions,
            locations,
        })
    }
}

/// Frame `k` of the volume as stored values, row by row (row `j`, column `i`), little-endian order of `u16`s.
pub fn frame_pixels(volume: &Volume, k: usize, s: &Scaling, out: &mut Vec<u16>) {
    let [ni, nj, _] = volume.shape();
    for j in 0..nj {
        for i in 0..ni {
            out.push(s.store(volume.data[(i, j, k)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Affine;
    use ndarray::Array3;

    #[test]
    fn scaling_covers_the_range_within_half_a_step() {
        let data = Array3::from_shape_fn((5, 4, 3), |(i, j, k)| (i as f32 * 3.1 - j as f32 * 7.3 + k as f32) * 0.37);
        let v = Volume::new(data, Affine::identity());
        let s = Scaling::of(&v).expect("finite");
        for &x in v.data.iter() {
            let back = s.store(x) as f64 * s.slope + s.intercept;
            assert!((back - x as f64).abs() <= s.slope * 0.5 + 1e-6, "{x} -> {back}");
        }
        let constant = Volume::new(Array3::from_elem((2, 2, 2), 4.5), Affine::identity());
        let c = Scaling::of(&constant).expect("constant");
        assert_eq!((c.slope, c.intercept, c.store(4.5)), (1.0, 4.5, 0));
        let mut nan = v.clone();
        nan.data[(0, 0, 0)] = f32::NAN;
        assert!(matches!(Scaling::of(&nan), Err(WriterError::NotFinite { count: 1 })));
    }

    #[test]
    fn planes_follow_the_affine_and_refuse_shear() {
        // RAS affine of an axial stack: i → L (RAS -x), j → P (RAS -y), k → S.
        let a = Affine::from_columns([-0.5, 0.0, 0.0], [0.0, -0.7, 0.0], [0.0, 0.0, 2.0], [10.0, 20.0, -5.0]);
        let v = Volume::new(Array3::zeros((3, 3, 4)), a);
        let p = Planes::of(&v).expect("orthogonal");
        assert_eq!(p.orientation, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(p.pixel_spacing, [0.7, 0.5]);
        assert_eq!(p.positions[0], [-10.0, -20.0, -5.0]);
        assert_eq!(p.positions[3], [-10.0, -20.0, 1.0]);
        assert_eq!(p.locations[3], 1.0);
        let sheared = Affine::from_columns([-0.5, 0.0, 0.0], [0.0, -0.7, 0.0], [0.3, 0.0, 2.0], [0.0; 3]);
        assert!(Planes::of(&Volume::new(Array3::zeros((3, 3, 4)), sheared)).is_err());
    }
}
