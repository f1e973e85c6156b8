//! Backward passes of the fused ConvNeXt element-wise kernels (`fused.rs`).
//!
//! `gelu_erf(y + b)`: dY = g · GELU′(y + b) with GELU′(v) = Φ(v) + v·φ(v), a rayon kernel like the forward;
//! db sums dY over the rows. `x + s·(y + b)`: dX = g, dY = g·s, and for the stacked `[b; s]` operand
//! `[Σ g·s ; Σ g·(y + b)]` over the rows (one rayon reduction).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32 as slice;

/// Rows per rayon task.
const ROWS: usize = 64;

/// Gradients of `bias_gelu_erf(y, b)`.
pub(super) fn bias_gelu_backward(y: &Tensor, b: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if !y.track_op() && !b.track_op() {
        return Ok((None, None));
    }
    let dv = y.apply_op3_no_bwd(b, &grad.contiguous()?, &GeluGrad)?;
    let c = b.dims1()?;
    let db = if b.track_op() { Some(dv.reshape(((), c))?.sum(0)?) } else { None };
    Ok((y.track_op().then_some(dv), db))
}

/// Gradients of `residual_scale` for its operands `x`, `y` and the stacked `bs` = `[b; s]` [2, C].
pub(super) fn residual_scale_backward(
    x: &Tensor,
    y: &Tensor,
    bs: &Tensor,
    grad: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let c = bs.dim(1)?;
    let dx = x.track_op().then(|| grad.clone());
    let dy = if y.track_op() { Some(grad.broadcast_mul(&bs.get(1)?)?) } else { None };
    let dbs =
        if bs.track_op() { Some(grad.apply_op3_no_bwd(y, bs, &ResidualParamGrad)?.reshape((2, c))?) } else { None };
    Ok((dx, dy, dbs))
}

/// GELU′ of the erf GELU.
fn gelu_erf_slope(v: f32) -> f32 {
    let cdf = 0.5 * (1.0 + super::erf::erf(v * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * v * v).exp() * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
    cdf + v * pdf
}

/// (y [..., C], b [C], g like y) → g · GELU′(y + b).
struct GeluGrad;

impl CustomOp3 for GeluGrad {
    fn name(&self) -> &'static str {
        "bias-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = slice(s1, l1, "bias_gelu_erf backward: input")?;
        let b = slice(s2, l2, "bias_gelu_erf backward: bias")?;
        let g = slice(s3, l3, "bias_gelu_erf backward: gradient")?;
        let c = b.len();
        if c == 0 || y.len() % c != 0 || g.len() != y.len() {
            candle_core::bail!("bias_gelu_erf backward: {:?} / {c} / {:?} do not fit", l1.shape(), l3.shape());
        }
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(c * ROWS).zip(y.par_chunks(c * ROWS).zip(g.par_chunks(c * ROWS))).for_each(|(o, (y, g))| {
            for ((orow, yrow), grow) in o.chunks_exact_mut(c).zip(y.chunks_exact(c)).zip(g.chunks_exact(c)) {
                for (((o, &v), &gv), &bb) in orow.iter_mut().zip(yrow).zip(grow).zip(b) {
                    *o = gv * gelu_erf_slope(v + bb);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// (g [..., C], y like g, bs [2, C]) → `[Σ g·s ; Σ g·(y + b)]` flattened to [2·C].
struct ResidualParamGrad;

impl CustomOp3 for ResidualParamGrad {
    fn name(&self) -> &'static str {
        "residual-scale-param-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = slice(s1, l1, "residual_scale backward: gradient")?;
        let y = slice(s2, l2, "residual_scale backward: branch")?;
        let bs = slice(s3, l3, "residual_scale backward: bias/scale")?;
        let c = bs.len() / 2;
        let (b, s) = bs.split_at(c);
        if c == 0 || g.len() % c != 0 || y.len() != g.len() {
            candle_core::bail!("residual_scale backward: {:?} / {:?} / {c} do not fit", l1.shape(), l2.shape());
        }
        let sums = g
            .par_chunks(c * ROWS)
            .zip(y.par_chunks(c * ROWS))
            .fold(
                || vec![0f64; 2 * c],
                |mut acc, (g, y)| {
                    let (gs, gyb) = acc.split_at_mut(c);
                    for (grow, yrow) in g.chunks_exact(c).zip(y.chunks_exact(c)) {
                        for ((((a, e), &gv), &yv), &bb) in gs.iter_mut().zip(gyb.iter_mut()).zip(grow).zip(yrow).zip(b)
                        {
                            *a += gv as f64;
                            *e += (gv * (yv + bb)) as f64;
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f64; 2 * c],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let mut out: Vec<f32> = sums[..c].iter().zip(s).map(|(&gsum, &sv)| (gsum * sv as f64) as f32).collect();
        out.extend(sums[c..].iter().map(|&v| v as f32));
        Ok((CpuStorage::F32(out), Shape::from(2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fused::{bias_gelu_erf, residual_scale};
    use super::super::grad_checks::{fd_check, FdOptions};
    use candle_core::Tensor;

    fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        super::super::grad_checks::uniform(shape, seed, -scale, scale).expect("tensor")
    }

    /// Against f64 central differences of the composed formula; 130 rows spans three rayon tasks.
    #[test]
    fn gradients_match_finite_differences() {
        let opts = FdOptions { probes: 12, ..FdOptions::f64() };
        let (y, x) = (rand(&[130, 6], 1, 3.0), rand(&[130, 6], 2, 1.0));
        let (b, s) = (rand(&[6], 3, 1.0), rand(&[6], 4, 1.0));
        let gelu = |t: &[Tensor]| bias_gelu_erf(&t[0], &t[1]);
        let e = fd_check(&[y.clone(), b.clone()], &[0, 1], gelu, opts).expect("gelu").worst_rel();
        assert!(e < 1e-4, "bias_gelu_erf: {e}");
        let res = |t: &[Tensor]| residual_scale(&t[0], &t[1], &t[2], &t[3]);
        let e = fd_check(&[x, y, b, s], &[0, 1, 2, 3], res, opts).expect("residual").worst_rel();
        assert!(e < 1e-4, "residual_scale: {e}");
    }
}
