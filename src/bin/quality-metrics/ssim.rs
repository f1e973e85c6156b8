//! Structural similarity (Wang et al. 2004) of two volumes in 3-D: Gaussian window σ = 1.5 voxels (truncated at
//! 3σ, edges clamped), `C1 = (0.01·L)²`, `C2 = (0.03·L)²` with data range `L`, the SSIM map averaged over the
//! voxels of a mask.

use ndarray::{Array3, Axis, Zip};

/// Window width (voxels).
const SIGMA: f64 = 1.5;

fn blur(a: &Array3<f64>) -> Array3<f64> {
    let radius = (3.0 * SIGMA).ceil() as isize;
    let mut k: Vec<f64> = (-radius..=radius).map(|i| (-((i * i) as f64) / (2.0 * SIGMA * SIGMA)).exp()).collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    let mut cur = a.clone();
    for axis in 0..3 {
        let mut out = Array3::<f64>::zeros(cur.raw_dim());
        let n = cur.shape()[axis] as isize;
        Zip::from(out.lanes_mut(Axis(axis))).and(cur.lanes(Axis(axis))).par_for_each(|mut o, line| {
            for i in 0..n {
                o[i as usize] = k
                    .iter()
                    .enumerate()
                    .map(|(t, w)| w * line[(i + t as isize - radius).clamp(0, n - 1) as usize])
                    .sum();
            }
        });
        cur = out;
    }
    cur
}

/// Mean SSIM of `x` and `y` over the voxels where `mask` is true (`None` when the mask is empty or the shapes
/// differ), for data of range `range`.
pub fn masked_ssim(x: &Array3<f32>, y: &Array3<f32>, mask: &Array3<bool>, range: f64) -> Option<f64> {
    if x.shape() != y.shape() || x.shape() != mask.shape() {
        return None;
    }
    let xf = x.mapv(f64::from);
    let yf = y.mapv(f64::from);
    let (mx, my) = (blur(&xf), blur(&yf));
    let (sxx, syy, sxy) = (blur(&(&xf * &xf)), blur(&(&yf * &yf)), blur(&(&xf * &yf)));
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let mut sum = 0.0;
    let mut n = 0usize;
    for (idx, &m) in mask.indexed_iter() {
        if !m {
            continue;
        }
        let (a, b) = (mx[idx], my[idx]);
        let vx = sxx[idx] - a * a;
        let vy = syy[idx] - b * b;
        let cxy = sxy[idx] - a * b;
        sum += ((2.0 * a * b + c1) * (2.0 * cxy + c2)) / ((a * a + b * b + c1) * (vx + vy + c2));
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern() -> Array3<f32> {
        Array3::from_shape_fn((12, 10, 8), |(i, j, k)| ((i * 7 + j * 3 + k * 5) % 11) as f32 / 10.0)
    }

    #[test]
    fn identical_volumes_score_one() {
        let a = pattern();
        let m = Array3::from_elem(a.raw_dim(), true);
        assert!((masked_ssim(&a, &a, &m, 1.0).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn noise_and_flattening_lower_the_score() {
        let a = pattern();
        let m = Array3::from_elem(a.raw_dim(), true);
        let flat = Array3::from_elem(a.raw_dim(), 0.5f32);
        let half = a.mapv(|v| 0.5 * v + 0.25);
        let s_flat = masked_ssim(&a, &flat, &m, 1.0).unwrap();
        let s_half = masked_ssim(&a, &half, &m, 1.0).unwrap();
        assert!(s_flat < 0.1, "{s_flat}");
        assert!(s_half > s_flat && s_half < 0.99, "{s_half}");
        assert!(masked_ssim(&a, &a, &Array3::from_elem(a.raw_dim(), false), 1.0).is_none());
    }
}
