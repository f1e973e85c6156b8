//! Small dense-field helpers for the generator: a scalar map on a coarse grid, separable Gaussian blur, its
//! gradient, and trilinear sampling at continuous voxel positions (clamped to the edge).

use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;

/// Blur `a` with a separable Gaussian of `sigma` voxels (edges clamped).
pub fn gaussian_blur(a: &Array3<f32>, sigma: f64) -> Array3<f32> {
    if sigma <= 0.0 {
        return a.clone();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> =
        (-radius..=radius).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let mut cur = a.clone();
    for axis in 0..3 {
        let mut out = Array3::<f32>::zeros(cur.raw_dim());
        let n = cur.shape()[axis] as isize;
        Zip::from(out.lanes_mut(Axis(axis))).and(cur.lanes(Axis(axis))).par_for_each(|mut o, line| {
            for i in 0..n {
                let mut acc = 0.0f32;
                for (t, k) in kernel.iter().enumerate() {
                    let j = (i + t as isize - radius).clamp(0, n - 1);
                    acc += k * line[j as usize];
                }
                o[i as usize] = acc;
            }
        });
        cur = out;
    }
    cur
}

/// A vector field on a grid: one array per component (in voxel units of that grid unless said otherwise).
#[derive(Debug, Clone)]
pub struct VectorField {
    pub c: [Array3<f32>; 3],
}

impl VectorField {
    /// Central-difference gradient of `a` (per voxel), scaled so that the largest magnitude is 1.
    pub fn unit_gradient(a: &Array3<f32>) -> VectorField {
        let sh = a.shape();
        let n = [sh[0], sh[1], sh[2]];
        let mut c =
            [Array3::<f32>::zeros(a.raw_dim()), Array3::<f32>::zeros(a.raw_dim()), Array3::<f32>::zeros(a.raw_dim())];
        for (d, comp) in c.iter_mut().enumerate() {
            comp.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(i, mut plane)| {
                for j in 0..n[1] {
                    for k in 0..n[2] {
                        let mut lo = [i, j, k];
                        let mut hi = [i, j, k];
                        lo[d] = lo[d].saturating_sub(1);
                        hi[d] = (hi[d] + 1).min(n[d] - 1);
                        let span = (hi[d] - lo[d]).max(1) as f32;
                        plane[[j, k]] = (a[hi] - a[lo]) / span;
                    }
                }
            });
        }
        let max =
            Zip::from(&c[0]).and(&c[1]).and(&c[2]).fold(0.0f32, |m, x, y, z| m.max((x * x + y * y + z * z).sqrt()));
        if max > 0.0 {
            for comp in c.iter_mut() {
                comp.mapv_inplace(|v| v / max);
            }
        }
        VectorField { c }
    }

    /// The field at continuous voxel position `p` (trilinear, clamped to the grid).
    #[inline]
    pub fn at(&self, p: [f64; 3]) -> [f64; 3] {
        [trilinear(&self.c[0], p), trilinear(&self.c[1], p), trilinear(&self.c[2], p)]
    }
}

/// Trilinear value of `a` at continuous voxel position `p`, clamped to the grid's extent.
#[inline]
pub fn trilinear(a: &Array3<f32>, p: [f64; 3]) -> f64 {
    let sh = a.shape();
    let mut i0 = [0usize; 3];
    let mut i1 = [0usize; 3];
    let mut w = [0f64; 3];
    for d in 0..3 {
        let last = (sh[d] - 1) as f64;
        let x = p[d].clamp(0.0, last);
        let f = x.floor();
        i0[d] = f as usize;
        i1[d] = (i0[d] + 1).min(sh[d] - 1);
        w[d] = x - f;
    }
    let v = |i: usize, j: usize, k: usize| a[[i, j, k]] as f64;
    let c00 = v(i0[0], i0[1], i0[2]) * (1.0 - w[0]) + v(i1[0], i0[1], i0[2]) * w[0];
    let c10 = v(i0[0], i1[1], i0[2]) * (1.0 - w[0]) + v(i1[0], i1[1], i0[2]) * w[0];
    let c01 = v(i0[0], i0[1], i1[2]) * (1.0 - w[0]) + v(i1[0], i0[1], i1[2]) * w[0];
    let c11 = v(i0[0], i1[1], i1[2]) * (1.0 - w[0]) + v(i1[0], i1[1], i1[2]) * w[0];
    let c0 = c00 * (1.0 - w[1]) + c10 * w[1];
    let c1 = c01 * (1.0 - w[1]) + c11 * w[1];
    c0 * (1.0 - w[2]) + c1 * w[2]
}

/// Average `factor`³ blocks of `a` (the last partial block averages what it has).
pub fn block_mean(a: &Array3<f32>, factor: usize) -> Array3<f32> {
    let sh = a.shape();
    let m = [sh[0].div_ceil(factor), sh[1].div_ceil(factor), sh[2].div_ceil(factor)];
    let mut out = Array3::<f32>::zeros((m[0], m[1], m[2]));
    out.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(bi, mut plane)| {
        for bj in 0..m[1] {
            for bk in 0..m[2] {
                let (mut s, mut n) = (0.0f32, 0usize);
                for i in bi * factor..((bi + 1) * factor).min(sh[0]) {
                    for j in bj * factor..((bj + 1) * factor).min(sh[1]) {
                        for k in bk * factor..((bk + 1) * factor).min(sh[2]) {
                            s += a[[i, j, k]];
                            n += 1;
                        }
                    }
                }
                plane[[bj, bk]] = s / n.max(1) as f32;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_the_mean_of_a_constant() {
        let a = Array3::from_elem((5, 6, 7), 2.0f32);
        let b = gaussian_blur(&a, 1.5);
        assert!(b.iter().all(|v| (v - 2.0).abs() < 1e-5));
    }

    #[test]
    fn gradient_of_a_ramp_points_along_it() {
        let a = Array3::from_shape_fn((6, 6, 6), |(i, _, _)| i as f32);
        let g = VectorField::unit_gradient(&a);
        let v = g.at([2.5, 3.0, 3.0]);
        assert!((v[0] - 1.0).abs() < 1e-6 && v[1].abs() < 1e-6 && v[2].abs() < 1e-6);
    }

    #[test]
    fn trilinear_reproduces_linear_data() {
        let a = Array3::from_shape_fn((4, 4, 4), |(i, j, k)| (i + 2 * j + 3 * k) as f32);
        assert!((trilinear(&a, [1.5, 0.25, 2.0]) - (1.5 + 0.5 + 6.0)).abs() < 1e-9);
        assert!((trilinear(&a, [-3.0, 0.0, 0.0])).abs() < 1e-9);
    }
}
