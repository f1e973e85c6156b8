//! Dense displacement fields: `ψ(x) = x + u(x)` with `u` in RAS mm stored per voxel of a [`Grid`], sampled
//! trilinearly between voxels (zero displacement more than half a voxel outside, like ITK's displacement field
//! transform), with composition, Gaussian smoothing, inversion by fixed-point iteration, and the exponential of a
//! stationary velocity field (scaling and squaring) for building invertible test warps.

use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;

use super::super::pyramid::gaussian_smooth;
use super::super::resample::{resample, Grid, Interp, Sampler};
use super::super::{invalid, PreprocessError};
use crate::limits::Limits;
use crate::volume::{Affine, Volume};

/// A displacement field on a grid: component `c` of `u` at voxel `(i, j, k)` is `comp[c][[i, j, k]]` (RAS mm).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub grid: Grid,
    pub comp: [Array3<f32>; 3],
}

/// Trilinear read access to a field at world points.
pub struct FieldSampler<'a> {
    s: [Sampler<'a>; 3],
    w2v: Affine,
}

impl FieldSampler<'_> {
    /// The displacement at world point `p` (zero outside the field's extent).
    #[inline]
    pub fn at(&self, p: [f64; 3]) -> [f64; 3] {
        let v = self.w2v.apply(p);
        match (self.s[0].linear(v), self.s[1].linear(v), self.s[2].linear(v)) {
            (Some(a), Some(b), Some(c)) => [a, b, c],
            _ => [0.0; 3],
        }
    }
}

impl Field {
    /// The zero field on `grid`, its size checked against `limits.max_voxels`.
    pub fn zeros(grid: Grid, limits: &Limits) -> Result<Self, PreprocessError> {
        let dims: Vec<u64> = grid.shape.iter().map(|n| *n as u64).collect();
        limits.voxels(&dims).map_err(|e| invalid("displacement field", e.to_string()))?;
        if grid.affine.inverse().is_none() || grid.shape.contains(&0) {
            return Err(invalid("displacement field", "degenerate grid"));
        }
        let z = || Array3::<f32>::zeros(grid.shape);
        Ok(Field { grid, comp: [z(), z(), z()] })
    }

    /// A sampler; the components are always in standard layout.
    pub fn sampler(&self) -> FieldSampler<'_> {
        let s = |c: usize| Sampler::new(&self.comp[c]).expect("field components are contiguous");
        FieldSampler { s: [s(0), s(1), s(2)], w2v: self.grid.affine.inverse().unwrap_or_default() }
    }

    /// World position of voxel `(i, j, k)`.
    #[inline]
    pub fn world(&self, i: usize, j: usize, k: usize) -> [f64; 3] {
        self.grid.affine.apply([i as f64, j as f64, k as f64])
    }

    /// The displacement stored at voxel `(i, j, k)`.
    #[inline]
    pub fn at_voxel(&self, i: usize, j: usize, k: usize) -> [f64; 3] {
        [0, 1, 2].map(|c| self.comp[c][[i, j, k]] as f64)
    }

    /// `ψ(p) = p + u(p)` at any world point.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let u = self.sampler().at(p);
        [p[0] + u[0], p[1] + u[1], p[2] + u[2]]
    }

    /// Fill every voxel from `f(i, j, k) → u` (rayon over the first axis).
    pub fn fill_with<F>(grid: Grid, limits: &Limits, f: F) -> Result<Self, PreprocessError>
    where
        F: Fn(usize, usize, usize) -> [f64; 3] + Sync,
    {
        let mut out = Field::zeros(grid, limits)?;
        let [a, b, c] = &mut out.comp;
        a.axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(b.axis_iter_mut(Axis(0)))
            .zip(c.axis_iter_mut(Axis(0)))
            .enumerate()
            .for_each(|(i, ((mut pa, mut pb), mut pc))| {
                for j in 0..grid.shape[1] {
                    for k in 0..grid.shape[2] {
                        let u = f(i, j, k);
                        pa[[j, k]] = u[0] as f32;
                        pb[[j, k]] = u[1] as f32;
                        pc[[j, k]] = u[2] as f32;
                    }
                }
            });
        Ok(out)
    }

    /// `ψ_self ∘ ψ_inner` on `inner`'s grid: `x ↦ ψ_self(x + u_inner(x))`.
    pub fn compose(&self, inner: &Field, limits: &Limits) -> Result<Field, PreprocessError> {
        let s = self.sampler();
        Field::fill_with(inner.grid, limits, |i, j, k| {
            let x = inner.world(i, j, k);
            let b = inner.at_voxel(i, j, k);
            let a = s.at([x[0] + b[0], x[1] + b[1], x[2] + b[2]]);
            [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
        })
    }

    /// The inverse `ψ⁻¹(y) = y + v(y)` on this grid by the fixed point `v(y) = −u(y + v(y))` (`iterations` steps).
    pub fn invert(&self, iterations: usize, limits: &Limits) -> Result<Field, PreprocessError> {
        let s = self.sampler();
        Field::fill_with(self.grid, limits, |i, j, k| {
            let y = self.world(i, j, k);
            let mut v = [0.0f64; 3];
            for _ in 0..iterations {
                let u = s.at([y[0] + v[0], y[1] + v[1], y[2] + v[2]]);
                let next = [-u[0], -u[1], -u[2]];
                let change = (0..3).map(|d| (next[d] - v[d]).abs()).fold(0.0, f64::max);
                v = next;
                if change < 1e-4 {
                    break;
                }
            }
            v
        })
    }

    /// Each component smoothed by a Gaussian of `sigma_mm` (edge values repeated).
    pub fn smooth(&mut self, sigma_mm: f64) {
        if sigma_mm <= 0.0 {
            return;
        }
        let affine = self.grid.affine;
        self.comp.par_iter_mut().for_each(|c| {
            let v = Volume::new(std::mem::take(c), affine);
            *c = gaussian_smooth(&v, sigma_mm).data;
        });
    }

    /// The largest displacement length (mm).
    pub fn max_norm(&self) -> f64 {
        Zip::from(&self.comp[0])
            .and(&self.comp[1])
            .and(&self.comp[2])
            .fold(0.0f64, |m, a, b, c| m.max(((a * a + b * b + c * c) as f64).sqrt()))
    }

    /// Multiply every displacement by `s`.
    pub fn scale(&mut self, s: f64) {
        for c in &mut self.comp {
            c.mapv_inplace(|v| (v as f64 * s) as f32);
        }
    }

    /// The field resampled (trilinear, displacements in mm unchanged) onto another grid.
    pub fn resampled(&self, grid: Grid, limits: &Limits) -> Result<Field, PreprocessError> {
        Field::zeros(grid, limits)?;
        let mut comp = Vec::with_capacity(3);
        for c in &self.comp {
            let v = Volume::new(c.clone(), self.grid.affine);
            let r = resample(&v, &grid, &Affine::identity(), Interp::Linear, 0.0)
                .ok_or_else(|| invalid("displacement field", "singular grid"))?;
            comp.push(r.data);
        }
        let [a, b, c]: [Array3<f32>; 3] = comp.try_into().map_err(|_| invalid("displacement field", "components"))?;
        Ok(Field { grid, comp: [a, b, c] })
    }

    /// `exp(v)` of a stationary velocity field by scaling and squaring: `u ← v / 2ⁿ`, then `n` times `u ← u ∘ u`.
    /// Smooth, small-per-step velocities give a diffeomorphism whose inverse is `exp(−v)`.
    pub fn exp(velocity: &Field, squarings: u32, limits: &Limits) -> Result<Field, PreprocessError> {
        let mut u = velocity.clone();
        u.scale(1.0 / f64::from(1u32 << squarings.min(20)));
        for _ in 0..squarings.min(20) {
            u = u.compose(&u, limits)?;
        }
        Ok(u)
    }

    /// Mean and maximum of `|u_self(x) − u_other(x)|` over this grid's voxels where `mask` (same grid) > 0.5.
    pub fn difference_over(&self, other: &Field, mask: &Volume) -> (f64, f64) {
        let s = other.sampler();
        crate::preprocess::transform::mean_max_distance(
            mask.data
                .indexed_iter()
                .filter(|((i, j, k), m)| **m > 0.5 && [*i, *j, *k].iter().zip(self.grid.shape).all(|(a, b)| *a < b))
                .map(|((i, j, k), _)| (self.at_voxel(i, j, k), s.at(self.world(i, j, k)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smooth_velocity(grid: Grid, amp: f64) -> Field {
        let c = [grid.shape[0] as f64 / 2.0, grid.shape[1] as f64 / 2.0, grid.shape[2] as f64 / 2.0];
        Field::fill_with(grid, &Limits::default(), |i, j, k| {
            let (x, y, z) = ((i as f64 - c[0]) / 6.0, (j as f64 - c[1]) / 7.0, (k as f64 - c[2]) / 5.0);
            let g = (-(x * x + y * y + z * z) / 2.0).exp();
            [amp * g * y.sin(), amp * g * z.cos(), -amp * g * x.sin()]
        })
        .unwrap()
    }

    #[test]
    fn inverse_is_consistent() {
        let grid = Grid { shape: [32, 36, 30], affine: Affine::from_spacing_origin([2.0; 3], [-30.0, -35.0, -28.0]) };
        let l = Limits::default();
        let v = smooth_velocity(grid, 4.0);
        let phi = Field::exp(&v, 6, &l).unwrap();
        assert!(phi.max_norm() > 2.0, "the test warp moves: {}", phi.max_norm());
        let inv = phi.invert(40, &l).unwrap();
        // ψ ∘ ψ⁻¹ and ψ⁻¹ ∘ ψ are the identity away from the border.
        let mut interior = Volume::new(Array3::zeros(grid.shape), grid.affine);
        interior.data.slice_mut(ndarray::s![4..28, 4..32, 4..26]).fill(1.0);
        let zero = Field::zeros(grid, &l).unwrap();
        for (name, f) in [("phi∘inv", phi.compose(&inv, &l).unwrap()), ("inv∘phi", inv.compose(&phi, &l).unwrap())]
        {
            let (mean, max) = f.difference_over(&zero, &interior);
            eprintln!("{name}: mean {mean:.4} mm, max {max:.4} mm (warp max {:.2} mm)", phi.max_norm());
            // Measured: mean 0.013 mm, max 0.11 mm (trilinear interpolation of a 2 mm field).
            assert!(mean < 0.04 && max < 0.35, "{name}: mean {mean} max {max}");
        }
        // exp(−v) is the inverse too.
        let mut nv = v.clone();
        nv.scale(-1.0);
        let inv2 = Field::exp(&nv, 6, &l).unwrap();
        let (mean, _) = inv2.difference_over(&inv, &interior);
        assert!(mean < 0.02, "exp(-v) vs fixed-point inverse: {mean}");
    }

    #[test]
    fn composition_of_translations_adds() {
        let grid = Grid { shape: [8, 8, 8], affine: Affine::identity() };
        let l = Limits::default();
        let a = Field::fill_with(grid, &l, |_, _, _| [1.0, 0.0, 0.0]).unwrap();
        let b = Field::fill_with(grid, &l, |_, _, _| [0.0, 0.5, 0.0]).unwrap();
        let c = a.compose(&b, &l).unwrap();
        assert_eq!(c.at_voxel(3, 3, 3), [1.0, 0.5, 0.0]);
        assert!(Field::zeros(Grid { shape: [1 << 15, 2, 2], affine: Affine::identity() }, &l).is_err());
    }
}
