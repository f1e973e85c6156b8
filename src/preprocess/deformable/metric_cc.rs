//! Local normalised cross-correlation (ANTs' "CC") of two images on one grid, and its exact derivative with
//! respect to every voxel value of either image.
//!
//! For the box window `W_i` of radius `r` around voxel `i` (cut at the grid's edge, `n_i` voxels), with
//! `cross_i = Σ I J − ΣI ΣJ / n_i`, `varI_i = Σ I² − (ΣI)² / n_i` (likewise `varJ_i`), `VI = varI + ε`,
//! `VJ = varJ + ε`: `cc_i = cross_i² / (VI_i VJ_i)` and the metric is `C = mean_i cc_i` (1 for images that are
//! linearly related in every window). With `a_i = cross_i / (VI_i VJ_i)` and `b_i = a_i cross_i / VJ_i`,
//!
//! `∂C/∂J_z = (2/N) Σ_{i : z ∈ W_i} [a_i (I_z − μI_i) − b_i (J_z − μJ_i)]`,
//!
//! and since the windows are symmetric, the sum over `i` is again a box sum around `z`: two passes of separable
//! running sums, O(voxels) whatever the radius. `∂C/∂I_z` is the same with the roles swapped.

use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;

/// The regulariser added to each window's variances (intensities are normalised to about [0, 1] first): about a
/// 0.01 standard deviation over a 5³ window, so flat background (noise only) exerts no force.
pub const EPSILON: f64 = 1e-2;

/// Box sums along one axis with the window cut at the edges (running sums; rayon over lanes).
fn box_axis(data: &Array3<f64>, axis: usize, r: usize) -> Array3<f64> {
    let mut out = Array3::<f64>::zeros(data.raw_dim());
    let n = data.shape()[axis];
    let outer = if axis == 0 { 1 } else { 0 };
    let inner = if axis > outer { axis - 1 } else { axis };
    out.axis_iter_mut(Axis(outer)).into_par_iter().zip(data.axis_iter(Axis(outer))).for_each(|(mut o, d)| {
        let mut prefix = vec![0f64; n + 1];
        for (mut ol, dl) in o.lanes_mut(Axis(inner)).into_iter().zip(d.lanes(Axis(inner))) {
            for (t, v) in dl.iter().enumerate() {
                prefix[t + 1] = prefix[t] + v;
            }
            for t in 0..n {
                let lo = t.saturating_sub(r);
                let hi = (t + r + 1).min(n);
                ol[t] = prefix[hi] - prefix[lo];
            }
        }
    });
    out
}

/// Box sum over the `(2r+1)³` window (cut at the edges).
pub fn box_sum(data: &Array3<f64>, r: usize) -> Array3<f64> {
    let a = box_axis(data, 0, r);
    let b = box_axis(&a, 1, r);
    box_axis(&b, 2, r)
}

/// The number of voxels in each cut window.
fn counts(shape: [usize; 3], r: usize) -> Array3<f64> {
    let len = |t: usize, n: usize| ((t + r + 1).min(n) - t.saturating_sub(r)) as f64;
    Array3::from_shape_fn(shape, |(i, j, k)| len(i, shape[0]) * len(j, shape[1]) * len(k, shape[2]))
}

/// The metric and its derivatives.
pub struct CcValue {
    /// Mean local CC in [0, 1].
    pub value: f64,
    /// `∂C/∂I_z` per voxel of the first image.
    pub d_first: Array3<f32>,
    /// `∂C/∂J_z` per voxel of the second image.
    pub d_second: Array3<f32>,
}

/// Local CC of `i` and `j` (same shape) with window radius `r`, and its derivatives.
pub fn local_cc(i: &Array3<f32>, j: &Array3<f32>, r: usize) -> CcValue {
    let shape = [i.shape()[0], i.shape()[1], i.shape()[2]];
    let n_vox = (shape[0] * shape[1] * shape[2]).max(1) as f64;
    let f64of = |a: &Array3<f32>| a.mapv(|v| v as f64);
    let (iv, jv) = (f64of(i), f64of(j));
    let si = box_sum(&iv, r);
    let sj = box_sum(&jv, r);
    let sii = box_sum(&(&iv * &iv), r);
    let sjj = box_sum(&(&jv * &jv), r);
    let sij = box_sum(&(&iv * &jv), r);
    let n = counts(shape, r);
    // Per window: cc, a, b (for ∂/∂J), b' (for ∂/∂I), and the means.
    let mut cc = Array3::<f64>::zeros(shape);
    let mut a = Array3::<f64>::zeros(shape);
    let mut b = Array3::<f64>::zeros(shape);
    let mut bp = Array3::<f64>::zeros(shape);
    Zip::indexed(&mut cc).and(&mut a).and(&mut b).and(&mut bp).par_for_each(|idx, cc, a, b, bp| {
        let nn = n[idx];
        let (si, sj) = (si[idx], sj[idx]);
        let cross = sij[idx] - si * sj / nn;
        let vi = (sii[idx] - si * si / nn).max(0.0) + EPSILON;
        let vj = (sjj[idx] - sj * sj / nn).max(0.0) + EPSILON;
        *cc = cross * cross / (vi * vj);
        *a = cross / (vi * vj);
        *b = *a * cross / vj;
        *bp = *a * cross / vi;
    });
    let mi = &si / &n;
    let mj = &sj / &n;
    let value = cc.sum() / n_vox;
    let sa = box_sum(&a, r);
    let sa_mi = box_sum(&(&a * &mi), r);
    let sa_mj = box_sum(&(&a * &mj), r);
    let sb = box_sum(&b, r);
    let sb_mj = box_sum(&(&b * &mj), r);
    let sbp = box_sum(&bp, r);
    let sbp_mi = box_sum(&(&bp * &mi), r);
    let k = 2.0 / n_vox;
    let mut d_second = Array3::<f32>::zeros(shape);
    let mut d_first = Array3::<f32>::zeros(shape);
    Zip::indexed(&mut d_second).and(&mut d_first).par_for_each(|idx, ds, df| {
        let (iz, jz) = (iv[idx], jv[idx]);
        *ds = (k * (iz * sa[idx] - sa_mi[idx] - jz * sb[idx] + sb_mj[idx])) as f32;
        *df = (k * (jz * sa[idx] - sa_mj[idx] - iz * sbp[idx] + sbp_mi[idx])) as f32;
    });
    CcValue { value, d_first, d_second }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> (Array3<f32>, Array3<f32>) {
        let i = Array3::from_shape_fn((7, 8, 6), |(a, b, c)| {
            (((a * 13 + b * 7 + c * c * 3) % 17) as f32) / 17.0 + 0.1 * a as f32
        });
        let j = Array3::from_shape_fn((7, 8, 6), |(a, b, c)| {
            ((a * a + b * 5 + c * 11) % 13) as f32 / 13.0 + 0.05 * (b * c) as f32 / 10.0
        });
        (i, j)
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let (i, j) = images();
        let r = 2;
        let v = local_cc(&i, &j, r);
        assert!(v.value > 0.0 && v.value < 1.0, "{}", v.value);
        let h = 1e-3f32;
        let mut worst = 0.0f64;
        for z in [[0usize, 0, 0], [3, 4, 2], [6, 7, 5], [1, 6, 3], [5, 2, 4]] {
            for second in [true, false] {
                let (mut ip, mut im) = (i.clone(), i.clone());
                let (mut jp, mut jm) = (j.clone(), j.clone());
                if second {
                    jp[z] += h;
                    jm[z] -= h;
                } else {
                    ip[z] += h;
                    im[z] -= h;
                }
                let fd = (local_cc(&ip, &jp, r).value - local_cc(&im, &jm, r).value) / (2.0 * h as f64);
                let an = if second { v.d_second[z] } else { v.d_first[z] } as f64;
                let rel = (fd - an).abs() / fd.abs().max(1e-4);
                worst = worst.max(rel);
                assert!(rel < 2e-2, "voxel {z:?} second={second}: finite difference {fd:e} vs analytic {an:e}");
            }
        }
        eprintln!("local CC derivative: worst relative error vs finite differences {worst:.2e}");
    }

    #[test]
    fn identical_images_correlate_fully_and_box_sums_count() {
        let (i, _) = images();
        let v = local_cc(&i, &i.mapv(|x| 3.0 * x + 1.0), 1);
        assert!(v.value > 0.99, "{}", v.value);
        let ones = Array3::from_elem((5, 5, 5), 1.0f64);
        let s = box_sum(&ones, 1);
        assert_eq!(s[[2, 2, 2]], 27.0);
        assert_eq!(s[[0, 0, 0]], 8.0);
        assert_eq!(counts([5, 5, 5], 1)[[0, 2, 4]], 12.0);
    }
}
