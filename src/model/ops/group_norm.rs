//! GroupNorm, optionally followed by SiLU, as one fused CPU kernel: per-channel statistics in one parallel pass
//! (f64, combined per group exactly), then normalise, affine and activate in a second parallel pass writing the
//! one output tensor. candle-nn's GroupNorm composes about eight whole-tensor ops (mean, subtract, square, mean,
//! sqrt, divide, scale, shift), each a fresh multi-MiB tensor, most on one thread, and the SiLU after it a ninth;
//! on the AutoencoderKL's full-resolution planes those passes and the kernel's zeroing of their fresh pages were
//! a fifth of a decode's profile. Other devices and dtypes (CUDA, bf16/f16, the f64 of the gradient checks) run
//! candle-nn's GroupNorm and candle's SiLU, which the kernel is tested against.
//!
//! The backward pass (training) is the textbook GroupNorm gradient composed from candle ops.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32 as slice;

/// GroupNorm over `[N, C, ...]` with per-channel weight and bias; `forward_silu` adds the SiLU after it.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

/// `groups` groups over `channels` channels, weight and bias from `vb` ("weight", "bias"; 1 and 0 when `vb`
/// creates them, as in training).
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    GroupNorm::new(weight, bias, channels, groups, eps)
}

impl GroupNorm {
    pub fn new(weight: Tensor, bias: Tensor, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        // candle-nn's checks (channels divisible by groups, one weight and bias per channel) for both paths.
        candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
        Ok(GroupNorm { weight, bias, groups, eps })
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let f32_cpu = |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32;
        if f32_cpu(x) && f32_cpu(&self.weight) && f32_cpu(&self.bias) && x.rank() >= 2 {
            let op = GroupNormOp { groups: self.groups, eps: self.eps, silu };
            return x.contiguous()?.apply_op3(&self.weight, &self.bias, op);
        }
        let channels = self.weight.elem_count();
        let y = candle_nn::GroupNorm::new(self.weight.clone(), self.bias.clone(), channels, self.groups, self.eps)?
            .forward(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }
}

/// The fused op on (x, weight, bias).
#[derive(Debug, Clone, Copy)]
struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// `(n, c, s)`: batch, channels and elements per channel of `x`, checked against `c_params` and the groups.
fn geometry(dims: &[usize], c_params: usize, groups: usize) -> Result<(usize, usize, usize)> {
    if dims.len() < 2 {
        candle_core::bail!("group_norm: input {dims:?} has no channel axis");
    }
    let (n, c) = (dims[0], dims[1]);
    if c != c_params || groups == 0 || c % groups != 0 {
        candle_core::bail!("group_norm: {c} channels, {c_params} weights, {groups} groups");
    }
    Ok((n, c, dims[2..].iter().product()))
}

/// Mean and sum of squared deviations of one channel's row (two passes, f64).
fn row_moments(row: &[f32]) -> (f64, f64) {
    if row.is_empty() {
        return (0.0, 0.0);
    }
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / row.len() as f64;
    let m2 = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
    (mean, m2)
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        if self.silu {
            "group-norm-silu"
        } else {
            "group-norm"
        }
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
        let x = slice(s1, l1, "group_norm: input")?;
        let w = slice(s2, l2, "group_norm: weight")?;
        let b = slice(s3, l3, "group_norm: bias")?;
        if w.len() != b.len() {
            candle_core::bail!("group_norm: {} weights, {} biases", w.len(), b.len());
        }
        let (_, c, s) = geometry(l1.shape().dims(), w.len(), self.groups)?;
        let mut out = vec![0f32; x.len()];
        if s == 0 || x.is_empty() {
            return Ok((CpuStorage::F32(out), l1.shape().clone()));
        }
        // 1. per-channel moments, in parallel over (n, c) rows
        let moments: Vec<(f64, f64)> = x.par_chunks(s).map(row_moments).collect();
        // 2. per-group mean and inverse std (Chan's combination of equal-sized rows: exact)
        let cg = c / self.groups;
        let stats: Vec<(f32, f32)> = moments
            .chunks(cg)
            .map(|rows| {
                let k = rows.len() as f64;
                let mean = rows.iter().map(|r| r.0).sum::<f64>() / k;
                let m2: f64 = rows.iter().map(|&(m, q)| q + s as f64 * (m - mean).powi(2)).sum();
                let var = m2 / (k * s as f64);
                (mean as f32, (1.0 / (var + self.eps).sqrt()) as f32)
            })
            .collect();
        // 3. normalise, affine, activate, in parallel over rows
        let silu = self.silu;
        out.par_chunks_mut(s).zip(x.par_chunks(s)).enumerate().for_each(|(row, (o, xr))| {
            let ch = row % c;
            let (mean, rstd) = stats[row / cg];
            let scale = w[ch] * rstd;
            let shift = b[ch] - mean * scale;
            if silu {
                for (o, &v) in o.iter_mut().zip(xr) {
                    let a = v * scale + shift;
                    *o = a / (1.0 + (-a).exp());
                }
            } else {
                for (o, &v) in o.iter_mut().zip(xr) {
                    *o = v * scale + shift;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = geometry(x.dims(), w.elem_count(), self.groups)?;
        let g = self.groups;
        let len = (c / g) * s;
        let xr = x.reshape((n, g, len))?;
        let mean = xr.mean_keepdim(2)?;
        let xc = xr.broadcast_sub(&mean)?;
        let rstd = (xc.sqr()?.mean_keepdim(2)? + self.eps)?.sqrt()?.recip()?;
        let xhat = xc.broadcast_mul(&rstd)?.reshape((n, c, s))?;
        let w3 = w.reshape((1, c, 1))?;
        let grad = grad.reshape((n, c, s))?;
        let da = if self.silu {
            let a = xhat.broadcast_mul(&w3)?.broadcast_add(&b.reshape((1, c, 1))?)?;
            let sig = (a.neg()?.exp()? + 1.0)?.recip()?;
            // d silu(a)/da = σ(a) (1 + a (1 − σ(a)))
            let slope = (&sig * ((&a * (sig.affine(-1.0, 1.0)?))? + 1.0)?)?;
            (grad * slope)?
        } else {
            grad
        };
        let per_channel = |t: &Tensor| t.sum(2)?.sum(0);
        let dw = w.track_op().then(|| per_channel(&(&da * &xhat)?)).transpose()?;
        let db = b.track_op().then(|| per_channel(&da)).transpose()?;
        let dx = if x.track_op() {
            let dxhat = da.broadcast_mul(&w3)?.reshape((n, g, len))?;
            let xh = xhat.reshape((n, g, len))?;
            let m1 = dxhat.mean_keepdim(2)?;
            let m2 = (&dxhat * &xh)?.mean_keepdim(2)?;
            let dx = dxhat.broadcast_sub(&m1)?.sub(&xh.broadcast_mul(&m2)?)?.broadcast_mul(&rstd)?;
            Some(dx.reshape(x.shape())?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

#[cfg(test)]
mod tests {
    use super::super::grad_checks::{fd_check, uniform, FdOptions};
    use super::*;

    fn rand(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
        uniform(shape, seed, lo, hi).expect("tensor")
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar()).expect("diff")
    }

    /// The kernel against candle-nn's GroupNorm (+ candle's SiLU) on an offset, 5-D input.
    #[test]
    fn kernel_matches_candle_nn() {
        let x = (rand(&[2, 12, 3, 4, 5], 1, -2.0, 2.0) + 7.0).expect("x");
        let (w, b) = (rand(&[12], 2, 0.5, 1.5), rand(&[12], 3, -0.5, 0.5));
        let gn = GroupNorm::new(w.clone(), b.clone(), 12, 4, 1e-6).expect("gn");
        let reference = candle_nn::GroupNorm::new(w, b, 12, 4, 1e-6).expect("ref");
        let plain = reference.forward(&x).expect("ref fwd");
        let d = max_diff(&gn.forward(&x).expect("fwd"), &plain);
        assert!(d < 2e-5, "group_norm: {d}");
        let d = max_diff(&gn.forward_silu(&x).expect("fwd"), &plain.silu().expect("silu"));
        assert!(d < 2e-5, "group_norm + silu: {d}");
    }

    /// Mismatched weights and groups are errors, not panics; a 2-D input and empty planes work.
    #[test]
    fn bad_shapes_are_errors() {
        let x = rand(&[2, 6, 4], 4, -1.0, 1.0);
        let gn = |c: usize, g: usize| {
            let one = Tensor::ones(c, DType::F32, &Device::Cpu).expect("w");
            GroupNorm::new(one.clone(), one.zeros_like().expect("b"), c, g, 1e-5)
        };
        assert!(gn(5, 1).and_then(|g| g.forward(&x)).is_err());
        assert!(gn(6, 4).and_then(|g| g.forward(&x)).is_err());
        let flat = gn(6, 3).and_then(|g| g.forward(&rand(&[3, 6], 5, -1.0, 1.0))).expect("2-D");
        assert_eq!(flat.dims(), &[3, 6]);
        let empty = Tensor::zeros((1, 6, 0), DType::F32, &Device::Cpu).expect("empty");
        assert_eq!(gn(6, 3).and_then(|g| g.forward(&empty)).expect("empty").dims(), &[1, 6, 0]);
    }

    /// Gradients of input, weight and bias against f64 central differences of the composed formula.
    #[test]
    fn gradients_match_finite_differences() {
        let opts = FdOptions { probes: 10, ..FdOptions::f64() };
        let x = rand(&[2, 6, 3, 5], 6, -2.0, 2.0);
        let (w, b) = (rand(&[6], 7, 0.5, 1.5), rand(&[6], 8, -0.5, 0.5));
        for silu in [false, true] {
            let f = |t: &[Tensor]| {
                let gn = GroupNorm::new(t[1].clone(), t[2].clone(), 6, 3, 1e-5)?;
                if silu {
                    gn.forward_silu(&t[0])
                } else {
                    gn.forward(&t[0])
                }
            };
            let e = fd_check(&[x.clone(), w.clone(), b.clone()], &[0, 1, 2], f, opts).expect("fd").worst_rel();
            assert!(e < 1e-4, "silu {silu}: {e}");
        }
    }
}
