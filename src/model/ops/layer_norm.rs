//! LayerNorm over one axis with an affine per element of that axis: over the channels of [N,C,...] (ConvNeXt's
//! LayerNorm2d, channels-first) and over the last axis (torch `nn.LayerNorm`).
//!
//! Two-pass statistics (mean, then the mean of squared deviations, accumulated in f64), as torch's result needs:
//! candle-nn's layer_norm uses E[x²]−E[x]², which loses digits when the mean is large against the spread.
//! The CPU f32 path is a direct kernel (rayon over rows / samples, contiguous inner loops); other devices and
//! dtypes use the same formula built from candle ops.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Normalise `x` [N, C, *spatial] over C at every position; `w`, `b` [C].
pub fn layer_norm_channels(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if x.rank() < 2 {
        candle_core::bail!("layer_norm_channels: input {:?} needs [N, C, ...]", x.shape());
    }
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let inner: usize = dims[2..].iter().product();
    check_affine(w, b, c)?;
    let v = x.reshape((n, c, inner))?;
    let y = norm_axis(&v, w, b, eps, 1)?;
    y.reshape(dims)
}

/// Normalise `x` [..., C] over its last axis; `w`, `b` [C].
pub fn layer_norm_last(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let dims = x.dims();
    let Some(&c) = dims.last() else { candle_core::bail!("layer_norm_last: scalar input") };
    check_affine(w, b, c)?;
    let outer = x.elem_count() / c.max(1);
    let v = x.reshape((outer, c, 1))?;
    let y = norm_axis(&v, w, b, eps, 1)?;
    y.reshape(dims)
}

fn check_affine(w: &Tensor, b: &Tensor, c: usize) -> Result<()> {
    if w.dims1()? != c || b.dims1()? != c {
        candle_core::bail!("layer norm: weight {:?} / bias {:?} do not fit {c} channels", w.shape(), b.shape());
    }
    Ok(())
}

/// `v` [outer, C, inner], normalised over axis 1.
fn norm_axis(v: &Tensor, w: &Tensor, b: &Tensor, eps: f64, axis: usize) -> Result<Tensor> {
    if matches!(v.device(), Device::Cpu) && v.dtype() == DType::F32 {
        let v = v.contiguous()?;
        let w = w.to_dtype(DType::F32)?.contiguous()?;
        let b = b.to_dtype(DType::F32)?.contiguous()?;
        return v.apply_op3(&w, &b, ChannelNorm { eps });
    }
    let dt = v.dtype();
    let x = v.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(axis)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(axis)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    let c = v.dim(axis)?;
    let w = w.to_dtype(DType::F32)?.reshape((1, c, 1))?;
    let b = b.to_dtype(DType::F32)?.reshape((1, c, 1))?;
    y.broadcast_mul(&w)?.broadcast_add(&b)?.to_dtype(dt)
}

struct ChannelNorm {
    eps: f64,
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "layer norm: operand")
}

impl CustomOp3 for ChannelNorm {
    fn name(&self) -> &'static str {
        "channel-layer-norm"
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        super::layer_norm_grad::backward(x, w, b, grad, self.eps)
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
        let x = contiguous(s1, l1)?;
        let w = contiguous(s2, l2)?;
        let b = contiguous(s3, l3)?;
        let (outer, c, inner) = l1.shape().dims3()?;
        let eps = self.eps;
        let mut out = vec![0f32; outer * c * inner];
        if inner == 1 {
            out.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(o, row)| {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
                let inv = 1.0 / (var + eps).sqrt();
                for (((o, &v), &wv), &bv) in o.iter_mut().zip(row).zip(w).zip(b) {
                    *o = ((v as f64 - mean) * inv) as f32 * wv + bv;
                }
            });
        } else {
            // Channels-first: statistics per position, accumulated plane by plane (contiguous over positions).
            // Chunks of positions keep rayon busy when there are few samples.
            let chunk = 256usize;
            let tasks: Vec<(usize, usize)> =
                (0..outer).flat_map(|s| (0..inner).step_by(chunk).map(move |p0| (s, p0))).collect();
            let results: Vec<(usize, usize, Vec<f32>)> = tasks
                .par_iter()
                .map(|&(s, p0)| {
                    let len = chunk.min(inner - p0);
                    let base = s * c * inner;
                    let mut mean = vec![0f64; len];
                    for ch in 0..c {
                        let src = &x[base + ch * inner + p0..base + ch * inner + p0 + len];
                        for (m, &v) in mean.iter_mut().zip(src) {
                            *m += v as f64;
                        }
                    }
                    mean.iter_mut().for_each(|m| *m /= c as f64);
                    let mut var = vec![0f64; len];
                    for ch in 0..c {
                        let src = &x[base + ch * inner + p0..base + ch * inner + p0 + len];
                        for ((a, &v), &m) in var.iter_mut().zip(src).zip(&mean) {
                            let d = v as f64 - m;
                            *a += d * d;
                        }
                    }
                    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v / c as f64 + eps).sqrt()).collect();
                    let mut o = vec![0f32; len * c];
                    for ch in 0..c {
                        let src = &x[base + ch * inner + p0..base + ch * inner + p0 + len];
                        let dst = &mut o[ch * len..(ch + 1) * len];
                        let (wv, bv) = (w[ch], b[ch]);
                        for (((d, &v), &m), &iv) in dst.iter_mut().zip(src).zip(&mean).zip(&inv) {
                            *d = ((v as f64 - m) * iv) as f32 * wv + bv;
                        }
                    }
                    (s, p0, o)
                })
                .collect();
            for (s, p0, o) in results {
                let len = o.len() / c;
                for ch in 0..c {
                    let at = s * c * inner + ch * inner + p0;
                    out[at..at + len].copy_from_slice(&o[ch * len..(ch + 1) * len]);
                }
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the same formula in candle ops (the non-CPU path), with a large mean that breaks E[x²]−E[x]².
    #[test]
    fn kernel_matches_composed_formula() {
        let dev = Device::Cpu;
        for (shape, chan_first) in [(vec![2usize, 5, 3, 700], true), (vec![3, 4, 7], false)] {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|i| 1000.0 + ((i * 7919) % 97) as f32 * 0.01).collect();
            let x = Tensor::from_vec(v, shape.as_slice(), &dev).expect("x");
            let c = if chan_first { shape[1] } else { shape[shape.len() - 1] };
            let w = Tensor::from_vec((0..c).map(|i| 1.0 + i as f32 * 0.1).collect::<Vec<_>>(), c, &dev).expect("w");
            let b = Tensor::from_vec((0..c).map(|i| i as f32 * 0.01).collect::<Vec<_>>(), c, &dev).expect("b");
            let ours =
                if chan_first { layer_norm_channels(&x, &w, &b, 1e-6) } else { layer_norm_last(&x, &w, &b, 1e-6) }
                    .expect("ours");
            // reference: f64 composed ops
            let axis = if chan_first { 1 } else { shape.len() - 1 };
            let xd = x.to_dtype(DType::F64).expect("f64");
            let mean = xd.mean_keepdim(axis).expect("mean");
            let xc = xd.broadcast_sub(&mean).expect("sub");
            let var = xc.sqr().and_then(|s| s.mean_keepdim(axis)).expect("var");
            let mut bshape = vec![1usize; shape.len()];
            bshape[axis] = c;
            let r = xc
                .broadcast_div(&(var + 1e-6).and_then(|v| v.sqrt()).expect("sqrt"))
                .and_then(|y| y.broadcast_mul(&w.to_dtype(DType::F64)?.reshape(bshape.as_slice())?))
                .and_then(|y| y.broadcast_add(&b.to_dtype(DType::F64)?.reshape(bshape.as_slice())?))
                .and_then(|y| y.to_dtype(DType::F32))
                .expect("ref");
            let err: f32 = (ours - r).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar()).expect("err");
            assert!(err < 1e-4, "{shape:?}: {err}");
        }
    }
}
