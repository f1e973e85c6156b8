//! Slice-stack geometry: the only place LPS (DICOM) becomes RAS (NIfTI/ldae).
//!
//! Slices are ordered by the projection of ImagePositionPatient on the slice normal `n = row_dir × col_dir`
//! (never by file name or InstanceNumber). The stack is then checked: one orientation, no two slices at one
//! position, uniform steps (relative tolerance `convert.spacing_tolerance`; steps that are whole multiples of the
//! usual one mean missing slices), and a slice step along the normal (otherwise gantry tilt / shear).
//! The voxel → RAS affine is `diag(-1,-1,1,1) · [row_dir·Δcol | col_dir·Δrow | (IPP_last−IPP_first)/(N−1) | IPP_first]`.

use crate::volume::Affine;

use super::RejectReason;

/// The geometry of one slice (LPS millimetres).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceGeometry {
    /// ImagePositionPatient.
    pub position: [f64; 3],
    /// ImageOrientationPatient (row direction, column direction).
    pub orientation: [f64; 6],
    /// PixelSpacing (row spacing, column spacing).
    pub pixel_spacing: [f64; 2],
}

/// A checked stack: slice order and the voxel → RAS affine.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Input indices, sorted by increasing position along the normal.
    pub order: Vec<usize>,
    /// Voxel (column, row, slice) → RAS+ mm.
    pub affine: Affine,
    /// Slice step along the normal (mm).
    pub slice_step: f64,
    /// Output slice index of each entry of `order` (`0..order.len()` unless gaps were allowed).
    pub slots: Vec<usize>,
    /// Number of output slices (`> order.len()` when gaps are to be filled).
    pub nk: usize,
}

/// Maximal element-wise difference between orientations that still count as "the same orientation".
pub const ORIENTATION_TOLERANCE: f64 = 1e-3;

pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Row and column direction of an IOP.
pub fn directions(iop: &[f64; 6]) -> ([f64; 3], [f64; 3]) {
    ([iop[0], iop[1], iop[2]], [iop[3], iop[4], iop[5]])
}

/// The slice normal (row × column), unit length when the IOP is orthonormal.
pub fn slice_normal(iop: &[f64; 6]) -> [f64; 3] {
    let (r, c) = directions(iop);
    cross(r, c)
}

/// Are two orientations the same within [`ORIENTATION_TOLERANCE`]?
pub fn same_orientation(a: &[f64; 6], b: &[f64; 6]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= ORIENTATION_TOLERANCE)
}

/// Check that an IOP is two (nearly) orthogonal unit vectors.
pub fn check_orientation(iop: &[f64; 6]) -> Result<(), RejectReason> {
    let (r, c) = directions(iop);
    let ok = (norm(r) - 1.0).abs() < 1e-2 && (norm(c) - 1.0).abs() < 1e-2 && dot(r, c).abs() < 1e-2;
    if ok {
        Ok(())
    } else {
        Err(RejectReason::MissingGeometry { detail: format!("ImageOrientationPatient {iop:?} is not orthonormal") })
    }
}

/// LPS affine → RAS affine (`diag(-1,-1,1,1) · A`).
pub fn lps_to_ras(a: &Affine) -> Affine {
    let mut m = a.0;
    for row in m.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    Affine(m)
}

/// Order and check a stack of slices with one shared size.
///
/// `fallback_step` is used only for a single slice (SpacingBetweenSlices or SliceThickness, else 1 mm).
/// `tolerance` is the relative tolerance on slice steps (`convert.spacing_tolerance`).
/// With `allow_gaps`, missing slices (steps that are whole multiples of the smallest) are accepted: `slots` then
/// says where each slice goes and the caller fills the empty ones (`convert.resample_gaps`).
pub fn stack_geometry(
    slices: &[SliceGeometry],
    tolerance: f64,
    fallback_step: f64,
    allow_gaps: bool,
) -> Result<Stack, RejectReason> {
    let first = slices.first().ok_or(RejectReason::TooFewSlices { found: 0, min: 1 })?;
    check_orientation(&first.orientation)?;
    for s in slices {
        if !same_orientation(&s.orientation, &first.orientation) {
            return Err(RejectReason::MixedOrientation);
        }
        if !(s.pixel_spacing.iter().all(|v| v.is_finite() && *v > 0.0)) {
            return Err(RejectReason::MissingGeometry {
                detail: format!("PixelSpacing {:?} is not positive", s.pixel_spacing),
            });
        }
    }
    let (row_dir, col_dir) = directions(&first.orientation);
    let n = slice_normal(&first.orientation);
    let mut order: Vec<usize> = (0..slices.len()).collect();
    let proj: Vec<f64> = slices.iter().map(|s| dot(s.position, n)).collect();
    order.sort_by(|&a, &b| proj[a].total_cmp(&proj[b]));
    let ps = first.pixel_spacing;
    let ci = row_dir.map(|v| v * ps[1]);
    let cj = col_dir.map(|v| v * ps[0]);
    let p0 = slices[order[0]].position;
    if order.len() == 1 {
        let step = if fallback_step.is_finite() && fallback_step > 0.0 { fallback_step } else { 1.0 };
        let a = Affine::from_columns(ci, cj, n.map(|v| v * step), p0);
        return Ok(Stack { order, affine: lps_to_ras(&a), slice_step: step, slots: vec![0], nk: 1 });
    }
    let steps: Vec<f64> = order.windows(2).map(|w| proj[w[1]] - proj[w[0]]).collect();
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    // The usual step: the smallest step that is not a duplicate (robust to a few gaps).
    let min_pixel = ps[0].min(ps[1]);
    let dup_eps = 1e-3 * min_pixel.max(1e-3);
    if let Some(k) = steps.iter().position(|&s| s.abs() <= dup_eps) {
        return Err(RejectReason::DuplicatePosition { position_mm: proj[order[k]] });
    }
    let median = sorted[sorted.len() / 2];
    let base = sorted[0];
    let tol = tolerance.max(1e-6);
    let uniform = steps.iter().all(|&s| (s - median).abs() <= tol * median);
    let mut slots: Vec<usize> = (0..order.len()).collect();
    let mut step = median;
    if !uniform {
        let max = sorted[sorted.len() - 1];
        // Missing slices: every step is (close to) a whole multiple of the smallest step.
        let multiples = steps.iter().all(|&s| {
            let r = s / base;
            (r - r.round()).abs() <= tol * r.round().max(1.0)
        });
        if multiples && allow_gaps {
            slots = order.iter().map(|&i| ((proj[i] - proj[order[0]]) / base).round() as usize).collect();
            step = base;
        } else if multiples {
            let missing: usize = steps.iter().map(|&s| ((s / base).round() as usize).saturating_sub(1)).sum();
            return Err(RejectReason::MissingSlices { missing, step_mm: base, largest_gap_mm: max });
        } else {
            return Err(RejectReason::NonUniformSpacing { min_mm: base, max_mm: max });
        }
    }
    let nk = slots.last().map_or(1, |&s| s + 1);
    let last = slices[order[order.len() - 1]].position;
    let ck = sub(last, p0).map(|v| v / (nk - 1) as f64);
    // Gantry tilt / shear: the step must be along the normal.
    let along = dot(ck, n);
    let off = norm(sub(ck, n.map(|v| v * along)));
    let degrees = off.atan2(along.abs()).to_degrees();
    if off > 1e-3 * norm(ck).max(1e-6) && off > 1e-4 {
        return Err(RejectReason::GantryTilt { degrees });
    }
    // Every slice must sit on the line through the first and last (no in-plane jitter).
    for (&k, &idx) in slots.iter().zip(&order) {
        let expect = [p0[0] + ck[0] * k as f64, p0[1] + ck[1] * k as f64, p0[2] + ck[2] * k as f64];
        let dev = norm(sub(slices[idx].position, expect));
        if dev > tol * step.max(min_pixel) {
            return Err(RejectReason::GantryTilt { degrees });
        }
    }
    let a = Affine::from_columns(ci, cj, ck, p0);
    Ok(Stack { order, affine: lps_to_ras(&a), slice_step: step, slots, nk })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axial(z: f64) -> SliceGeometry {
        SliceGeometry {
            position: [-10.0, -20.0, z],
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            pixel_spacing: [2.0, 1.0],
        }
    }

    #[test]
    fn orders_by_projection_and_builds_ras_affine() {
        let s = vec![axial(6.0), axial(0.0), axial(3.0)];
        let st = stack_geometry(&s, 0.01, 1.0, false).expect("stack");
        assert_eq!(st.order, vec![1, 2, 0]);
        assert_eq!(st.affine.column(0), [-1.0, 0.0, 0.0]);
        assert_eq!(st.affine.column(1), [0.0, -2.0, 0.0]);
        assert_eq!(st.affine.column(2), [0.0, 0.0, 3.0]);
        assert_eq!(st.affine.origin(), [10.0, 20.0, 0.0]);
    }

    #[test]
    fn rejects_gap_nonuniform_duplicate_tilt_mixed() {
        let gap = vec![axial(0.0), axial(3.0), axial(9.0), axial(12.0)];
        assert!(matches!(stack_geometry(&gap, 0.01, 1.0, false), Err(RejectReason::MissingSlices { missing: 1, .. })));
        let nonu = vec![axial(0.0), axial(3.0), axial(7.5), axial(12.0)];
        assert!(matches!(stack_geometry(&nonu, 0.01, 1.0, false), Err(RejectReason::NonUniformSpacing { .. })));
        let dup = vec![axial(0.0), axial(3.0), axial(3.0)];
        assert!(matches!(stack_geometry(&dup, 0.01, 1.0, false), Err(RejectReason::DuplicatePosition { .. })));
        let mut tilt = vec![axial(0.0), axial(3.0), axial(6.0)];
        for (k, s) in tilt.iter_mut().enumerate() {
            s.position[1] += k as f64 * 0.8;
        }
        assert!(matches!(stack_geometry(&tilt, 0.01, 1.0, false), Err(RejectReason::GantryTilt { .. })));
        let mut mixed = vec![axial(0.0), axial(3.0), axial(6.0)];
        mixed[1].orientation = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0];
        assert_eq!(stack_geometry(&mixed, 0.01, 1.0, false), Err(RejectReason::MixedOrientation));
    }

    #[test]
    fn gaps_are_slotted_when_allowed() {
        let gap = vec![axial(9.0), axial(0.0), axial(3.0), axial(12.0)];
        let st = stack_geometry(&gap, 0.01, 1.0, true).expect("gaps allowed");
        assert_eq!(st.order, vec![1, 2, 0, 3]);
        assert_eq!(st.slots, vec![0, 1, 3, 4]);
        assert_eq!(st.nk, 5);
        assert_eq!(st.affine.column(2), [0.0, 0.0, 3.0]);
        let nonu = vec![axial(0.0), axial(3.0), axial(7.5), axial(12.0)];
        assert!(matches!(stack_geometry(&nonu, 0.01, 1.0, true), Err(RejectReason::NonUniformSpacing { .. })));
    }
}
