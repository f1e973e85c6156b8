//! One synthetic subject's anatomy: a random smooth map from the subject's (registered) space to the template,
//! drawn once per subject from its own seed. It is a small residual affine about the brain centre (what affine
//! registration leaves of head shape: scale ±3 %, rotation ±2°, shift ±1.5 mm, one standard deviation) plus a
//! sum of a few random plane waves per axis (wavelengths 40–110 mm, about 2.5 mm of displacement), smooth and
//! invertible at these amplitudes.

use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Plane waves per axis.
const WAVES: usize = 5;

/// One plane-wave displacement term `amplitude · sin(k·p + phase)` along one axis.
#[derive(Debug, Clone, Copy)]
struct Wave {
    k: [f64; 3],
    phase: f64,
    amplitude: f64,
}

/// A subject's map from its world space (mm) to template world space (mm).
#[derive(Debug, Clone)]
pub struct SubjectMap {
    centre: [f64; 3],
    /// Row-major 3×3 linear part and translation.
    linear: [[f64; 3]; 3],
    shift: [f64; 3],
    waves: [[Wave; WAVES]; 3],
}

fn normal(rng: &mut impl Rng, sd: f64) -> f64 {
    Normal::new(0.0, sd).map(|n| n.sample(rng)).unwrap_or(0.0)
}

impl SubjectMap {
    /// Draw a subject's map; `strength` scales every random part (0 gives the identity).
    pub fn draw(rng: &mut impl Rng, centre: [f64; 3], strength: f64) -> SubjectMap {
        let deg = std::f64::consts::PI / 180.0;
        let (rx, ry, rz) =
            (normal(rng, 2.0 * deg * strength), normal(rng, 2.0 * deg * strength), normal(rng, 2.0 * deg * strength));
        let scale = [0; 3].map(|_| 1.0 + normal(rng, 0.03 * strength));
        let rot = rotation(rx, ry, rz);
        let mut linear = [[0.0; 3]; 3];
        for r in 0..3 {
            for c in 0..3 {
                linear[r][c] = rot[r][c] * scale[c];
            }
        }
        let shift = [0; 3].map(|_| normal(rng, 1.5 * strength));
        let per_wave = 2.5 * strength / (WAVES as f64).sqrt();
        let waves = [0; 3].map(|_| {
            [0; WAVES].map(|_| {
                let dir = unit_vector(rng);
                let wavelength = rng.random_range(40.0..110.0);
                let k = dir.map(|d| d * 2.0 * std::f64::consts::PI / wavelength);
                Wave { k, phase: rng.random_range(0.0..2.0 * std::f64::consts::PI), amplitude: normal(rng, per_wave) }
            })
        });
        SubjectMap { centre, linear, shift, waves }
    }

    /// Template world position of subject world position `p`.
    #[inline]
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let d = [p[0] - self.centre[0], p[1] - self.centre[1], p[2] - self.centre[2]];
        std::array::from_fn(|r| {
            let lin = self.linear[r][0] * d[0] + self.linear[r][1] * d[1] + self.linear[r][2] * d[2];
            let wave: f64 = self.waves[r]
                .iter()
                .map(|w| w.amplitude * (w.k[0] * p[0] + w.k[1] * p[1] + w.k[2] * p[2] + w.phase).sin())
                .sum();
            self.centre[r] + lin + self.shift[r] + wave
        })
    }
}

fn unit_vector(rng: &mut impl Rng) -> [f64; 3] {
    loop {
        let v = [0; 3].map(|_| normal(rng, 1.0));
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if n > 1e-6 {
            return v.map(|x| x / n);
        }
    }
}

/// Rotation matrix `Rz·Ry·Rx`.
fn rotation(rx: f64, ry: f64, rz: f64) -> [[f64; 3]; 3] {
    let (sx, cx) = rx.sin_cos();
    let (sy, cy) = ry.sin_cos();
    let (sz, cz) = rz.sin_cos();
    [
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zero_strength_is_the_identity() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let m = SubjectMap::draw(&mut rng, [1.0, -18.0, 18.0], 0.0);
        let q = m.apply([10.0, 20.0, -30.0]);
        assert!((q[0] - 10.0).abs() < 1e-9 && (q[1] - 20.0).abs() < 1e-9 && (q[2] + 30.0).abs() < 1e-9);
    }

    #[test]
    fn displacement_is_a_few_millimetres() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let m = SubjectMap::draw(&mut rng, [0.0, -18.0, 18.0], 1.0);
        let mut max: f64 = 0.0;
        for p in [[0.0, -18.0, 18.0], [40.0, 0.0, 0.0], [-50.0, -60.0, 40.0]] {
            let q = m.apply(p);
            max = max.max((0..3).map(|d| (q[d] - p[d]).abs()).fold(0.0, f64::max));
        }
        assert!(max > 0.1 && max < 15.0, "{max}");
    }
}
