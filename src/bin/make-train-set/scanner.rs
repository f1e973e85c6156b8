//! What changes from one session to the next besides anatomy: the scanner's contrast, a smooth multiplicative bias
//! field and Rician noise, all drawn from the session's own seed and scaled by one `strength` (0 = none).
//!
//! - contrast: a monotone piecewise-linear remap through the template's CSF / grey / white means (CSF ±15 %, grey
//!   ±6 %, white fixed, one standard deviation, order kept), then a gamma of exp(N(0, 0.12));
//! - bias: `exp` of a random second-order polynomial in the brain-centred coordinates (±0.12 per term);
//! - noise: Rician, σ uniform in 1–4 % of the white-matter intensity.

use rand::Rng;
use rand_distr::{Distribution, Normal, StandardNormal};

/// Millimetres that map to 1 in the bias polynomial's coordinates.
const BIAS_HALF_WIDTH_MM: f64 = 80.0;

/// One session's acquisition.
#[derive(Debug, Clone)]
pub struct Scanner {
    /// Template intensities of the remap's knots (0, CSF, GM, WM) and where they go.
    from: [f64; 4],
    to: [f64; 4],
    gamma: f64,
    /// Largest output intensity before gamma (for normalising the gamma).
    top: f64,
    bias: [f64; 9],
    centre: [f64; 3],
    /// Noise standard deviation (template intensity units).
    pub sigma: f64,
}

fn normal(rng: &mut impl Rng, sd: f64) -> f64 {
    Normal::new(0.0, sd).map(|n| n.sample(rng)).unwrap_or(0.0)
}

impl Scanner {
    /// Draw a session's acquisition for a template with tissue `means` (CSF, GM, WM) and brain centre `centre`.
    pub fn draw(rng: &mut impl Rng, means: [f64; 3], centre: [f64; 3], strength: f64) -> Scanner {
        let [c, g, w] = means;
        let g2 = (g * (1.0 + normal(rng, 0.06 * strength))).clamp(0.5 * (c + g), 0.5 * (g + w));
        let c2 = (c * (1.0 + normal(rng, 0.15 * strength))).clamp(0.1 * c, 0.5 * (c + g2));
        let gamma = normal(rng, 0.12 * strength).exp();
        let bias = [0; 9].map(|_| normal(rng, 0.12 * strength));
        let sigma = w * strength * rng.random_range(0.01..0.04);
        Scanner { from: [0.0, c, g, w], to: [0.0, c2, g2, w], gamma, top: w * 1.2, bias, centre, sigma }
    }

    /// The template intensity `v` as this scanner shows it (before bias and noise).
    #[inline]
    pub fn contrast(&self, v: f64) -> f64 {
        let v = v.max(0.0);
        let mapped = if v >= self.from[3] {
            v
        } else {
            let i = (1..4).find(|&i| v < self.from[i]).unwrap_or(3);
            let (a, b) = (self.from[i - 1], self.from[i]);
            let t = if b > a { (v - a) / (b - a) } else { 0.0 };
            self.to[i - 1] + t * (self.to[i] - self.to[i - 1])
        };
        self.top * (mapped / self.top).powf(self.gamma)
    }

    /// The bias field's gain at world position `p` (mm).
    #[inline]
    pub fn bias(&self, p: [f64; 3]) -> f64 {
        let [x, y, z] = [0, 1, 2].map(|d| (p[d] - self.centre[d]) / BIAS_HALF_WIDTH_MM);
        let b = &self.bias;
        let log = b[0] * x
            + b[1] * y
            + b[2] * z
            + b[3] * x * y
            + b[4] * x * z
            + b[5] * y * z
            + b[6] * (x * x - 0.3)
            + b[7] * (y * y - 0.3)
            + b[8] * (z * z - 0.3);
        log.exp()
    }

    /// `v` with Rician noise.
    #[inline]
    pub fn noisy(&self, v: f64, rng: &mut impl Rng) -> f64 {
        if self.sigma <= 0.0 {
            return v;
        }
        let a: f64 = StandardNormal.sample(rng);
        let b: f64 = StandardNormal.sample(rng);
        ((v + self.sigma * a).powi(2) + (self.sigma * b).powi(2)).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zero_strength_changes_nothing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let s = Scanner::draw(&mut rng, [30.0, 60.0, 90.0], [0.0; 3], 0.0);
        for v in [0.0, 15.0, 45.0, 75.0, 90.0, 100.0] {
            assert!((s.contrast(v) - v).abs() < 1e-9, "{v}");
        }
        assert!((s.bias([50.0, -20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert_eq!(s.noisy(42.0, &mut rng), 42.0);
    }

    #[test]
    fn contrast_keeps_the_tissue_order() {
        for seed in 0..50 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let s = Scanner::draw(&mut rng, [30.0, 60.0, 90.0], [0.0; 3], 1.0);
            let (c, g, w) = (s.contrast(30.0), s.contrast(60.0), s.contrast(90.0));
            assert!(0.0 < c && c < g && g < w, "seed {seed}: {c} {g} {w}");
        }
    }
}
