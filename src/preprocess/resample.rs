//! Sampling a [`Volume`] on another grid through a transform: trilinear (with the analytic gradient, used by
//! registration) or nearest neighbour (masks), rayon-parallel over the output's first axis.
//!
//! A [`Grid`] is a shape plus a voxel → RAS affine. [`resample`] fills each output voxel with the source value at
//! `map(world(voxel))`, where `map` takes output-world points to source-world points (for a registration result
//! [`Transform`](super::Transform) from template to native, resampling the native scan onto the template grid uses
//! that transform as is).

use ndarray::{Array3, Axis};
use rayon::prelude::*;

use crate::volume::{Affine, Volume};

/// A grid in world space: the shape and the voxel → RAS affine of a volume, without data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub shape: [usize; 3],
    pub affine: Affine,
}

impl Grid {
    /// The grid a volume lives on.
    pub fn of(vol: &Volume) -> Self {
        Grid { shape: vol.shape(), affine: vol.affine }
    }
}

/// How to interpolate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    Linear,
    Nearest,
}

/// Read access to a volume's values at continuous voxel positions.
///
/// Positions more than half a voxel outside the grid are "outside" (`None`); within that half voxel they are
/// clamped to the edge, so the sampled domain is the volume's full extent.
pub struct Sampler<'a> {
    data: &'a [f32],
    n: [usize; 3],
    stride: [usize; 3],
}

impl<'a> Sampler<'a> {
    /// A sampler over a volume stored in standard (C) layout; `None` if it is not contiguous.
    pub fn new(data: &'a Array3<f32>) -> Option<Self> {
        let s = data.shape();
        let n = [s[0], s[1], s[2]];
        Some(Sampler { data: data.as_slice()?, n, stride: [n[1] * n[2], n[2], 1] })
    }

    #[inline]
    fn axis(&self, x: f64, d: usize) -> Option<(usize, usize, f64)> {
        let last = (self.n[d] - 1) as f64;
        if !(-0.5..=last + 0.5).contains(&x) {
            return None;
        }
        let x = x.clamp(0.0, last);
        let i0 = (x.floor() as usize).min(self.n[d] - 1);
        let i1 = (i0 + 1).min(self.n[d] - 1);
        Some((i0, i1, x - i0 as f64))
    }

    /// Nearest-neighbour value at continuous index `p`.
    #[inline]
    pub fn nearest(&self, p: [f64; 3]) -> Option<f32> {
        let mut idx = 0;
        for (d, &x) in p.iter().enumerate() {
            let (i0, i1, w) = self.axis(x, d)?;
            idx += if w >= 0.5 { i1 } else { i0 } * self.stride[d];
        }
        Some(self.data[idx])
    }

    /// Trilinear value at continuous index `p`.
    #[inline]
    pub fn linear(&self, p: [f64; 3]) -> Option<f64> {
        self.linear_grad(p).map(|(v, _)| v)
    }

    /// Trilinear value and its gradient with respect to the continuous index at `p`.
    #[inline]
    pub fn linear_grad(&self, p: [f64; 3]) -> Option<(f64, [f64; 3])> {
        let (x0, x1, wx) = self.axis(p[0], 0)?;
        let (y0, y1, wy) = self.axis(p[1], 1)?;
        let (z0, z1, wz) = self.axis(p[2], 2)?;
        let [sx, sy, _] = self.stride;
        let v = |i: usize, j: usize, k: usize| self.data[i * sx + j * sy + k] as f64;
        let (c000, c100, c010, c110) = (v(x0, y0, z0), v(x1, y0, z0), v(x0, y1, z0), v(x1, y1, z0));
        let (c001, c101, c011, c111) = (v(x0, y0, z1), v(x1, y0, z1), v(x0, y1, z1), v(x1, y1, z1));
        let c00 = c000 + (c100 - c000) * wx;
        let c10 = c010 + (c110 - c010) * wx;
        let c01 = c001 + (c101 - c001) * wx;
        let c11 = c011 + (c111 - c011) * wx;
        let c0 = c00 + (c10 - c00) * wy;
        let c1 = c01 + (c11 - c01) * wy;
        let value = c0 + (c1 - c0) * wz;
        // d/dz
        let gz = c1 - c0;
        // d/dy
        let gy = (c10 - c00) * (1.0 - wz) + (c11 - c01) * wz;
        // d/dx
        let dx00 = c100 - c000;
        let dx10 = c110 - c010;
        let dx01 = c101 - c001;
        let dx11 = c111 - c011;
        let gx = (dx00 * (1.0 - wy) + dx10 * wy) * (1.0 - wz) + (dx01 * (1.0 - wy) + dx11 * wy) * wz;
        Some((value, [gx, gy, gz]))
    }
}

/// Resample `src` onto `grid`: output voxel `v` gets `src` at `map(grid.affine · v)` (world → world), `fill`
/// where that point is outside `src`. Returns `None` only if the source affine is singular.
pub fn resample(src: &Volume, grid: &Grid, map: &Affine, interp: Interp, fill: f32) -> Option<Volume> {
    let src_inv = src.affine.inverse()?;
    // Output voxel → source voxel, one matrix.
    let m = src_inv.matmul(map).matmul(&grid.affine);
    let standard;
    let data = if src.data.is_standard_layout() {
        &src.data
    } else {
        standard = src.data.as_standard_layout().to_owned();
        &standard
    };
    let sampler = Sampler::new(data)?;
    let mut out = Array3::<f32>::zeros(grid.shape);
    out.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(i, mut plane)| {
        for ((j, k), o) in plane.indexed_iter_mut() {
            let p = m.apply([i as f64, j as f64, k as f64]);
            *o = match interp {
                Interp::Linear => sampler.linear(p).map(|v| v as f32),
                Interp::Nearest => sampler.nearest(p),
            }
            .unwrap_or(fill);
        }
    });
    let mut provenance = src.provenance.clone();
    provenance.notes.push(format!("resampled ({interp:?}) onto a {:?} grid", grid.shape));
    Some(Volume { data: out, affine: grid.affine, provenance })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_gradient_matches_finite_differences() {
        let data = Array3::from_shape_fn((4, 5, 6), |(i, j, k)| ((i * 7 + j * 3 + k * k) % 11) as f32);
        let s = Sampler::new(&data).unwrap();
        let p = [1.3, 2.6, 3.2];
        let (_, g) = s.linear_grad(p).unwrap();
        for d in 0..3 {
            let mut a = p;
            let mut b = p;
            a[d] -= 1e-4;
            b[d] += 1e-4;
            let fd = (s.linear(b).unwrap() - s.linear(a).unwrap()) / 2e-4;
            assert!((fd - g[d]).abs() < 1e-6, "axis {d}: {fd} vs {}", g[d]);
        }
        assert!(s.linear([-0.6, 0.0, 0.0]).is_none());
        assert!(s.linear([3.4, 4.4, 5.4]).is_some());
    }

    #[test]
    fn identity_resample_reproduces_and_shift_moves() {
        let data = Array3::from_shape_fn((6, 6, 6), |(i, j, k)| (i + 10 * j + 100 * k) as f32);
        let v = Volume::new(data.clone(), Affine::from_spacing_origin([2.0; 3], [1.0, 2.0, 3.0]));
        let r = resample(&v, &Grid::of(&v), &Affine::identity(), Interp::Linear, -1.0).unwrap();
        assert_eq!(r.data, data);
        // Output point p samples the source at p + 2 mm along x = one voxel further.
        let shift = Affine::from_spacing_origin([1.0; 3], [2.0, 0.0, 0.0]);
        let r = resample(&v, &Grid::of(&v), &shift, Interp::Nearest, -1.0).unwrap();
        assert_eq!(r.data[[0, 1, 2]], data[[1, 1, 2]]);
        assert_eq!(r.data[[5, 1, 2]], -1.0);
    }
}
