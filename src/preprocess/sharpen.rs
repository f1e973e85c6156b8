//! Histogram sharpening, the core of N3/N4 bias correction (Sled et al. 1998; Tustison et al. 2010).
//!
//! A smooth multiplicative bias field is, in log intensity, an additive one; its effect on the log-intensity
//! histogram is modelled as a convolution with a Gaussian of a given FWHM. Sharpening deconvolves the histogram
//! with that Gaussian (a Wiener filter, in the Fourier domain), then maps every observed log intensity `u` to the
//! expected true intensity given `u`: `E[v | u] = (F ∗ (v·V))(u) / (F ∗ V)(u)` with `V` the deconvolved histogram
//! and `F` the Gaussian. The difference between a voxel's log intensity and its sharpened value is the part of
//! the bias that the B-spline field then smooths.

use std::f64::consts::PI;

/// The parameters of sharpening.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharpenParams {
    /// Histogram bins over the log intensities inside the mask.
    pub bins: usize,
    /// Full width at half maximum of the Gaussian blur that the bias causes, in log-intensity units.
    pub fwhm: f64,
    /// Wiener filter noise term (regularises the deconvolution).
    pub wiener_noise: f64,
}

impl Default for SharpenParams {
    fn default() -> Self {
        SharpenParams { bins: 200, fwhm: 0.15, wiener_noise: 0.01 }
    }
}

/// The sharpening map: a sharpened value per histogram bin, over `[lo, hi]`.
#[derive(Debug, Clone)]
pub struct SharpenMap {
    lo: f64,
    step: f64,
    values: Vec<f64>,
}

impl SharpenMap {
    /// The sharpened value of `u` (linear between bin centres, clamped at the ends).
    pub fn apply(&self, u: f64) -> f64 {
        if self.step <= 0.0 || self.values.is_empty() {
            return u;
        }
        let x = ((u - self.lo) / self.step).clamp(0.0, (self.values.len() - 1) as f64);
        let i = (x.floor() as usize).min(self.values.len().saturating_sub(2));
        let t = x - i as f64;
        match self.values.get(i + 1) {
            Some(next) => self.values[i] * (1.0 - t) + next * t,
            None => self.values[i],
        }
    }
}

/// Build the sharpening map of the log intensities `u` with weights `w` (only `w > 0` count). `None` when there
/// are no samples or they span no range (nothing to sharpen).
pub fn sharpen_map(u: &[f64], w: &[f64], p: &SharpenParams) -> Option<SharpenMap> {
    let bins = p.bins.clamp(8, 4096);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (&x, &m) in u.iter().zip(w) {
        if m > 0.0 && x.is_finite() {
            lo = lo.min(x);
            hi = hi.max(x);
        }
    }
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let step = (hi - lo) / (bins - 1) as f64;
    // Histogram with linear splatting between the two nearest bin centres.
    let mut hist = vec![0.0f64; bins];
    for (&x, &m) in u.iter().zip(w) {
        if m > 0.0 && x.is_finite() {
            let c = (x - lo) / step;
            let i = (c.floor() as usize).min(bins - 1);
            let t = c - i as f64;
            hist[i] += m * (1.0 - t);
            if i + 1 < bins {
                hist[i + 1] += m * t;
            }
        }
    }
    // Zero-padded to a power of two at least twice as long, so the circular convolution does not wrap.
    let n = (2 * bins).next_power_of_two();
    let sigma = p.fwhm / (2.0 * (2.0 * 2f64.ln()).sqrt()) / step;
    let mut kernel = vec![0.0f64; n];
    for (i, k) in kernel.iter_mut().enumerate() {
        let d = i.min(n - i) as f64;
        *k = (-d * d / (2.0 * sigma * sigma)).exp();
    }
    let ksum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= ksum);
    let kf = fft(&kernel.iter().map(|&k| (k, 0.0)).collect::<Vec<_>>(), false);
    let mut h: Vec<(f64, f64)> = vec![(0.0, 0.0); n];
    for (i, v) in hist.iter().enumerate() {
        h[i].0 = *v;
    }
    let hf = fft(&h, false);
    // Wiener deconvolution: V = conj(F) H / (|F|² + z).
    let vf: Vec<(f64, f64)> = hf
        .iter()
        .zip(&kf)
        .map(|(&(hr, hi), &(fr, fi))| {
            let den = fr * fr + fi * fi + p.wiener_noise;
            ((fr * hr + fi * hi) / den, (fr * hi - fi * hr) / den)
        })
        .collect();
    let v: Vec<f64> = fft(&vf, true).iter().map(|c| c.0.max(0.0)).collect();
    // E[v | u] = (F ∗ (v·V)) / (F ∗ V), both convolutions through the FFT.
    let centre = |i: usize| lo + step * i as f64;
    let weighted: Vec<(f64, f64)> =
        v.iter().enumerate().map(|(i, &x)| (if i < bins { centre(i) * x } else { 0.0 }, 0.0)).collect();
    let plain: Vec<(f64, f64)> = v.iter().enumerate().map(|(i, &x)| (if i < bins { x } else { 0.0 }, 0.0)).collect();
    let conv = |a: &[(f64, f64)]| -> Vec<f64> {
        let af = fft(a, false);
        let prod: Vec<(f64, f64)> =
            af.iter().zip(&kf).map(|(&(ar, ai), &(fr, fi))| (ar * fr - ai * fi, ar * fi + ai * fr)).collect();
        fft(&prod, true).iter().map(|c| c.0).collect()
    };
    let (num, den) = (conv(&weighted), conv(&plain));
    let values =
        (0..bins).map(|i| if den[i] > 1e-12 * ksum.max(1e-300) { num[i] / den[i] } else { centre(i) }).collect();
    Some(SharpenMap { lo, step, values })
}

/// Radix-2 FFT (length a power of two); `inverse` divides by the length.
fn fft(input: &[(f64, f64)], inverse: bool) -> Vec<(f64, f64)> {
    let n = input.len();
    let bits = n.trailing_zeros();
    let mut a: Vec<(f64, f64)> =
        (0..n).map(|i| input[if bits == 0 { 0 } else { i.reverse_bits() >> (usize::BITS - bits) }]).collect();
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut len = 2;
    while len <= n {
        let ang = sign * 2.0 * PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (wr, wi) = ((ang * k as f64).cos(), (ang * k as f64).sin());
                let (xr, xi) = a[start + k + len / 2];
                let t = (xr * wr - xi * wi, xr * wi + xi * wr);
                let u = a[start + k];
                a[start + k] = (u.0 + t.0, u.1 + t.1);
                a[start + k + len / 2] = (u.0 - t.0, u.1 - t.1);
            }
        }
        len <<= 1;
    }
    if inverse {
        let s = 1.0 / n as f64;
        a.iter_mut().for_each(|c| *c = (c.0 * s, c.1 * s));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_round_trips_and_matches_a_direct_dft() {
        let x: Vec<(f64, f64)> = (0..16).map(|i| ((i as f64 * 0.7).sin(), 0.1 * i as f64)).collect();
        let f = fft(&x, false);
        let k = 3;
        let direct = x.iter().enumerate().fold((0.0, 0.0), |acc, (i, &(r, im))| {
            let a = -2.0 * PI * (k * i) as f64 / 16.0;
            (acc.0 + r * a.cos() - im * a.sin(), acc.1 + r * a.sin() + im * a.cos())
        });
        assert!((f[k].0 - direct.0).abs() < 1e-9 && (f[k].1 - direct.1).abs() < 1e-9);
        let back = fft(&f, true);
        assert!(back.iter().zip(&x).all(|(a, b)| (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9));
    }

    #[test]
    fn sharpening_pulls_a_blurred_two_peak_histogram_towards_its_peaks() {
        // Two tissue classes at log 0 and log 1, blurred by a spread of ±0.1.
        let mut u = Vec::new();
        for c in [0.0, 1.0] {
            for i in 0..2000 {
                u.push(c + 0.1 * ((i as f64 / 2000.0) * 2.0 - 1.0));
            }
        }
        let w = vec![1.0; u.len()];
        let m = sharpen_map(&u, &w, &SharpenParams::default()).unwrap();
        // A value at the edge of a peak moves towards its centre; the centres stay.
        assert!(m.apply(0.08) < 0.08 && m.apply(0.08) > 0.0, "{}", m.apply(0.08));
        assert!(m.apply(0.92) > 0.92 && m.apply(0.92) < 1.0, "{}", m.apply(0.92));
        assert!(m.apply(0.0).abs() < 0.02 && (m.apply(1.0) - 1.0).abs() < 0.02);
        assert!(sharpen_map(&[1.0, 1.0], &[1.0, 1.0], &SharpenParams::default()).is_none());
    }
}
