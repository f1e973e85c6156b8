//! `Volume` and `Affine`: the one currency every imaging stage takes and returns.
//!
//! A [`Volume`] is an `Array3<f32>` indexed `(i, j, k)` plus a 4×4 voxel → world affine in **RAS+ millimetres**
//! (the NIfTI convention) and a little provenance. For a volume converted from DICOM, `i` runs along the DICOM
//! columns, `j` along the rows and `k` along the slice normal (see `dicom/geometry.rs`). LPS never appears here.

use ndarray::Array3;
use serde::{Deserialize, Serialize};

/// A 4×4 homogeneous matrix mapping voxel indices `(i, j, k, 1)` to RAS+ world millimetres.
///
/// Row-major: `m[r][c]`. The last row is `[0, 0, 0, 1]` for every affine ldae produces.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine(pub [[f64; 4]; 4]);

impl Default for Affine {
    fn default() -> Self {
        Self::identity()
    }
}

impl Affine {
    /// The identity (1 mm voxels, origin at voxel 0).
    pub fn identity() -> Self {
        let mut m = [[0.0; 4]; 4];
        for (r, row) in m.iter_mut().enumerate() {
            row[r] = 1.0;
        }
        Affine(m)
    }

    /// A diagonal affine with the given voxel sizes and the world position of voxel 0.
    pub fn from_spacing_origin(spacing: [f64; 3], origin: [f64; 3]) -> Self {
        let mut a = Self::identity();
        for d in 0..3 {
            a.0[d][d] = spacing[d];
            a.0[d][3] = origin[d];
        }
        a
    }

    /// Columns: the world step of one voxel along i, j, k, and the world position of voxel 0.
    pub fn from_columns(ci: [f64; 3], cj: [f64; 3], ck: [f64; 3], origin: [f64; 3]) -> Self {
        let mut a = Self::identity();
        for r in 0..3 {
            a.0[r][0] = ci[r];
            a.0[r][1] = cj[r];
            a.0[r][2] = ck[r];
            a.0[r][3] = origin[r];
        }
        a
    }

    /// Column `c` (0..3) of the upper 3×4 block.
    pub fn column(&self, c: usize) -> [f64; 3] {
        [self.0[0][c], self.0[1][c], self.0[2][c]]
    }

    /// World position of voxel 0.
    pub fn origin(&self) -> [f64; 3] {
        self.column(3)
    }

    /// Voxel sizes: the lengths of the first three columns.
    pub fn voxel_sizes(&self) -> [f64; 3] {
        let n = |c: [f64; 3]| (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
        [n(self.column(0)), n(self.column(1)), n(self.column(2))]
    }

    /// Matrix product `self · other`.
    pub fn matmul(&self, other: &Affine) -> Affine {
        let mut m = [[0.0; 4]; 4];
        for (r, row) in m.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = (0..4).map(|k| self.0[r][k] * other.0[k][c]).sum();
            }
        }
        Affine(m)
    }

    /// Apply to a point (homogeneous coordinate 1).
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let m = &self.0;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + m[0][3],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + m[1][3],
            m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2] + m[2][3],
        ]
    }

    /// Determinant of the upper-left 3×3 block.
    pub fn det3(&self) -> f64 {
        let m = &self.0;
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    }

    /// Inverse of an affine (last row `[0,0,0,1]`); `None` if the 3×3 block is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let m = &self.0;
        let det = self.det3();
        if !det.is_finite() || det.abs() < 1e-12 {
            return None;
        }
        let mut inv = Affine::identity();
        let r = &mut inv.0;
        r[0][0] = (m[1][1] * m[2][2] - m[1][2] * m[2][1]) / det;
        r[0][1] = (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / det;
        r[0][2] = (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / det;
        r[1][0] = (m[1][2] * m[2][0] - m[1][0] * m[2][2]) / det;
        r[1][1] = (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / det;
        r[1][2] = (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / det;
        r[2][0] = (m[1][0] * m[2][1] - m[1][1] * m[2][0]) / det;
        r[2][1] = (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / det;
        r[2][2] = (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det;
        for row in r.iter_mut().take(3) {
            row[3] = -(0..3).map(|k| row[k] * m[k][3]).sum::<f64>();
        }
        Some(inv)
    }

    /// Largest absolute element-wise difference to another affine (for tolerance checks).
    pub fn max_abs_diff(&self, other: &Affine) -> f64 {
        let mut d: f64 = 0.0;
        for r in 0..4 {
            for c in 0..4 {
                d = d.max((self.0[r][c] - other.0[r][c]).abs());
            }
        }
        d
    }
}

/// Where a volume came from: enough to trace it back, never a patient name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Source description, e.g. a SeriesInstanceUID or an input file name.
    pub source: String,
    /// Free-form notes (warnings, processing steps), in order.
    pub notes: Vec<String>,
}

/// A 3-D scalar volume on a grid placed in RAS+ world space.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// Voxel values, indexed `(i, j, k)`.
    pub data: Array3<f32>,
    /// Voxel index → RAS+ world millimetres.
    pub affine: Affine,
    /// Where it came from.
    pub provenance: Provenance,
}

impl Volume {
    /// A volume with empty provenance.
    pub fn new(data: Array3<f32>, affine: Affine) -> Self {
        Volume { data, affine, provenance: Provenance::default() }
    }

    /// Grid shape `(ni, nj, nk)`.
    pub fn shape(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[0], s[1], s[2]]
    }

    /// Voxel sizes in millimetres.
    pub fn spacing(&self) -> [f64; 3] {
        self.affine.voxel_sizes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_round_trips() {
        let a = Affine::from_columns([0.0, -1.2, 0.1], [0.9, 0.0, 0.0], [0.0, 0.2, 3.0], [10.0, -20.0, 5.5]);
        let inv = a.inverse().expect("invertible");
        let id = a.matmul(&inv);
        assert!(id.max_abs_diff(&Affine::identity()) < 1e-12);
        let p = [3.0, 4.0, 5.0];
        let q = inv.apply(a.apply(p));
        for d in 0..3 {
            assert!((p[d] - q[d]).abs() < 1e-12);
        }
    }

    #[test]
    fn singular_has_no_inverse() {
        let a = Affine::from_columns([1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0; 3]);
        assert!(a.inverse().is_none());
    }
}
