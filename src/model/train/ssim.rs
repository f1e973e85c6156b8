//! 3-D structural similarity (Wang et al. 2004) for validation: Gaussian window (sigma 1.5, 7 taps per axis,
//! separable, "valid" positions only — no padding), `C1 = (0.01 L)^2`, `C2 = (0.03 L)^2` with data range `L`,
//! statistics in f64, the mean SSIM over all valid positions.

/// Window half-width (7 taps).
const RADIUS: usize = 3;
const SIGMA: f64 = 1.5;

fn kernel() -> [f64; 2 * RADIUS + 1] {
    let mut k = [0f64; 2 * RADIUS + 1];
    for (i, v) in k.iter_mut().enumerate() {
        let d = i as f64 - RADIUS as f64;
        *v = (-d * d / (2.0 * SIGMA * SIGMA)).exp();
    }
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// Separable valid filtering of a `[nx, ny, nz]` row-major volume along all three axes.
fn filter(v: &[f64], dims: [usize; 3]) -> (Vec<f64>, [usize; 3]) {
    let k = kernel();
    let mut cur = v.to_vec();
    let mut d = dims;
    for axis in 0..3 {
        let n = d[axis] - 2 * RADIUS;
        let mut nd = d;
        nd[axis] = n;
        let mut out = vec![0f64; nd[0] * nd[1] * nd[2]];
        let stride = [d[1] * d[2], d[2], 1];
        for i in 0..nd[0] {
            for j in 0..nd[1] {
                for l in 0..nd[2] {
                    let base = i * stride[0] + j * stride[1] + l * stride[2];
                    let s: f64 = k.iter().enumerate().map(|(t, w)| w * cur[base + t * stride[axis]]).sum();
                    out[(i * nd[1] + j) * nd[2] + l] = s;
                }
            }
        }
        cur = out;
        d = nd;
    }
    (cur, d)
}

/// Mean SSIM of `a` against `b`, both `[nx, ny, nz]` row-major with every axis at least 7 long; `None` for
/// mismatched lengths or too small volumes.
pub fn ssim3d(a: &[f32], b: &[f32], dims: [usize; 3], data_range: f64) -> Option<f64> {
    let n = dims.iter().product::<usize>();
    if a.len() != n || b.len() != n || dims.iter().any(|&d| d < 2 * RADIUS + 1) {
        return None;
    }
    let a: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let prod = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).collect::<Vec<f64>>();
    let (ma, _) = filter(&a, dims);
    let (mb, _) = filter(&b, dims);
    let (saa, _) = filter(&prod(&a, &a), dims);
    let (sbb, _) = filter(&prod(&b, &b), dims);
    let (sab, _) = filter(&prod(&a, &b), dims);
    let c1 = (0.01 * data_range).powi(2);
    let c2 = (0.03 * data_range).powi(2);
    let mut total = 0f64;
    for i in 0..ma.len() {
        let (mx, my) = (ma[i], mb[i]);
        let vx = saa[i] - mx * mx;
        let vy = sbb[i] - my * my;
        let cxy = sab[i] - mx * my;
        total += ((2.0 * mx * my + c1) * (2.0 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    }
    Some(total / ma.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_is_one_noise_lowers_it_and_small_is_refused() {
        let dims = [9, 10, 8];
        let n = 9 * 10 * 8;
        let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
        assert!((ssim3d(&a, &a, dims, 1.0).unwrap() - 1.0).abs() < 1e-12);
        let b: Vec<f32> = a.iter().enumerate().map(|(i, v)| v + if i % 2 == 0 { 0.2 } else { -0.2 }).collect();
        let s = ssim3d(&a, &b, dims, 1.0).unwrap();
        assert!(s < 0.9 && s > -1.0, "{s}");
        // A constant offset keeps structure and contrast, lowers only luminance a little.
        let c: Vec<f32> = a.iter().map(|v| v + 0.05).collect();
        let sc = ssim3d(&a, &c, dims, 1.0).unwrap();
        assert!(sc > s && sc < 1.0, "{sc} vs {s}");
        assert!(ssim3d(&a[..n - 1], &a[..n - 1], dims, 1.0).is_none());
        assert!(ssim3d(&a[..6 * 10 * 8], &a[..6 * 10 * 8], [6, 10, 8], 1.0).is_none());
    }
}
