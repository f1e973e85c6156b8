//! Backward pass of the CPU channel LayerNorm kernel (`layer_norm.rs`) on `[outer, C, inner]`, normalised
//! over C.
//!
//! With x̂ = (x − μ)·σ⁻¹ and ĝ = g·w: dx = σ⁻¹·(ĝ − mean_C ĝ − x̂·mean_C(ĝ·x̂)), dw = Σ g·x̂, db = Σ g.
//! The statistics are recomputed two-pass in f64 as the forward does. One kernel returns dx, dw and db
//! concatenated (rayon over row chunks, or over (sample, position chunk) for channels-first; each task keeps
//! its own dw/db, summed at the end).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Gradients of the channel LayerNorm of `x` [outer, C, inner] with affine `w`, `b` [C].
pub(super) fn backward(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    grad: &Tensor,
    eps: f64,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    if !x.track_op() && !w.track_op() && !b.track_op() {
        return Ok((None, None, None));
    }
    let (outer, c, inner) = x.dims3()?;
    let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &NormGrad { eps })?;
    let n = outer * c * inner;
    let dx = if x.track_op() { Some(all.narrow(0, 0, n)?.reshape((outer, c, inner))?) } else { None };
    let dw = if w.track_op() { Some(all.narrow(0, n, c)?) } else { None };
    let db = if b.track_op() { Some(all.narrow(0, n + c, c)?) } else { None };
    Ok((dx, dw, db))
}

/// (x, w, g) → `[dx (outer·C·inner) ; dw (C) ; db (C)]`.
struct NormGrad {
    eps: f64,
}

/// Per-task sums of g·x̂ and g for each channel.
type Partial = (Vec<f64>, Vec<f64>);

fn add_partials(mut a: Partial, b: Partial) -> Partial {
    a.0.iter_mut().zip(&b.0).for_each(|(a, b)| *a += b);
    a.1.iter_mut().zip(&b.1).for_each(|(a, b)| *a += b);
    a
}

impl CustomOp3 for NormGrad {
    fn name(&self) -> &'static str {
        "channel-layer-norm-grad"
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
        let what = "layer norm backward: operand";
        let x = super::contiguous_f32(s1, l1, what)?;
        let w = super::contiguous_f32(s2, l2, what)?;
        let g = super::contiguous_f32(s3, l3, what)?;
        let (outer, c, inner) = l1.shape().dims3()?;
        if g.len() != x.len() || w.len() != c {
            candle_core::bail!(
                "layer norm backward: {:?} / {:?} / {:?} do not fit",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (eps, cf) = (self.eps, c as f64);
        let zero = || (vec![0f64; c], vec![0f64; c]);
        let mut dx = vec![0f32; x.len()];
        let (dw, db) = if inner == 1 {
            let rows = 64 * c;
            dx.par_chunks_mut(rows)
                .zip(x.par_chunks(rows).zip(g.par_chunks(rows)))
                .map(|(d, (x, g))| {
                    let (mut dw, mut db) = zero();
                    for ((drow, xrow), grow) in d.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(g.chunks_exact(c)) {
                        let mean = xrow.iter().map(|&v| v as f64).sum::<f64>() / cf;
                        let var = xrow.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cf;
                        let inv = 1.0 / (var + eps).sqrt();
                        let (mut m1, mut m2) = (0f64, 0f64);
                        for ((&xv, &gv), &wv) in xrow.iter().zip(grow).zip(w) {
                            let gh = gv as f64 * wv as f64;
                            m1 += gh;
                            m2 += gh * (xv as f64 - mean) * inv;
                        }
                        let (m1, m2) = (m1 / cf, m2 / cf);
                        for (ch, ((dv, &xv), &gv)) in drow.iter_mut().zip(xrow).zip(grow).enumerate() {
                            let xh = (xv as f64 - mean) * inv;
                            *dv = (inv * (gv as f64 * w[ch] as f64 - m1 - xh * m2)) as f32;
                            dw[ch] += gv as f64 * xh;
                            db[ch] += gv as f64;
                        }
                    }
                    (dw, db)
                })
                .reduce(zero, add_partials)
        } else {
            let chunk = 256usize;
            let tasks: Vec<(usize, usize)> =
                (0..outer).flat_map(|s| (0..inner).step_by(chunk).map(move |p0| (s, p0))).collect();
            let results: Vec<(Vec<f32>, Partial)> = tasks
                .par_iter()
                .map(|&(s, p0)| {
                    let len = chunk.min(inner - p0);
                    let base = s * c * inner + p0;
                    let at = |ch: usize| base + ch * inner..base + ch * inner + len;
                    let mut mean = vec![0f64; len];
                    for ch in 0..c {
                        mean.iter_mut().zip(&x[at(ch)]).for_each(|(m, &v)| *m += v as f64);
                    }
                    mean.iter_mut().for_each(|m| *m /= cf);
                    let mut var = vec![0f64; len];
                    for ch in 0..c {
                        for ((a, &v), &m) in var.iter_mut().zip(&x[at(ch)]).zip(&mean) {
                            *a += (v as f64 - m).powi(2);
                        }
                    }
                    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v / cf + eps).sqrt()).collect();
                    let (mut m1, mut m2) = (vec![0f64; len], vec![0f64; len]);
                    for (ch, &wv) in w.iter().enumerate() {
                        for (i, (&xv, &gv)) in x[at(ch)].iter().zip(&g[at(ch)]).enumerate() {
                            let gh = gv as f64 * wv as f64;
                            m1[i] += gh;
                            m2[i] += gh * (xv as f64 - mean[i]) * inv[i];
                        }
                    }
                    let (mut dw, mut db) = zero();
                    let mut o = vec![0f32; c * len];
                    for (ch, &wv) in w.iter().enumerate() {
                        let dst = &mut o[ch * len..(ch + 1) * len];
                        for (i, ((dv, &xv), &gv)) in dst.iter_mut().zip(&x[at(ch)]).zip(&g[at(ch)]).enumerate() {
                            let xh = (xv as f64 - mean[i]) * inv[i];
                            *dv = (inv[i] * (gv as f64 * wv as f64 - m1[i] / cf - xh * m2[i] / cf)) as f32;
                            dw[ch] += gv as f64 * xh;
                            db[ch] += gv as f64;
                        }
                    }
                    (o, (dw, db))
                })
                .collect();
            let mut sums = zero();
            for (&(s, p0), (o, part)) in tasks.iter().zip(results) {
                let len = o.len() / c;
                for ch in 0..c {
                    let at = s * c * inner + ch * inner + p0;
                    dx[at..at + len].copy_from_slice(&o[ch * len..(ch + 1) * len]);
                }
                sums = add_partials(sums, part);
            }
            sums
        };
        dx.extend(dw.iter().chain(&db).map(|&v| v as f32));
        Ok((CpuStorage::F32(dx), Shape::from(outer * c * inner + 2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::grad_checks::{fd_check, FdOptions};
    use super::super::layer_norm::{layer_norm_channels, layer_norm_last};
    use candle_core::{DType, Tensor};

    fn rand(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
        super::super::grad_checks::uniform(shape, seed, lo, hi).expect("tensor")
    }

    /// f64 reference of the LayerNorm over `axis` (the ops' composed path computes in f32).
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, axis: usize, eps: f64) -> candle_core::Result<Tensor> {
        let mut shape = vec![1usize; x.rank()];
        shape[axis] = w.dim(0)?;
        let mean = x.mean_keepdim(axis)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(axis)?;
        let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
        y.broadcast_mul(&w.reshape(shape.as_slice())?)?.broadcast_add(&b.reshape(shape.as_slice())?)
    }

    /// Both layouts against f64 central differences; channels-first with 300 positions spans two tasks.
    #[test]
    fn gradients_match_finite_differences() {
        let opts = FdOptions { probes: 10, ..FdOptions::f64() };
        for (shape, first) in [(vec![2usize, 5, 3, 100], true), (vec![70, 6], false), (vec![3, 2, 8], false)] {
            let c = if first { shape[1] } else { shape[shape.len() - 1] };
            let axis = if first { 1 } else { shape.len() - 1 };
            let inputs = [rand(&shape, 1, -2.0, 3.0), rand(&[c], 2, 0.5, 1.5), rand(&[c], 3, -1.0, 1.0)];
            let f = |t: &[Tensor]| {
                if t[0].dtype() == DType::F64 {
                    reference(&t[0], &t[1], &t[2], axis, 1e-5)
                } else if first {
                    layer_norm_channels(&t[0], &t[1], &t[2], 1e-5)
                } else {
                    layer_norm_last(&t[0], &t[1], &t[2], 1e-5)
                }
            };
            let e = fd_check(&inputs, &[0, 1, 2], f, opts).expect("fd").worst_rel();
            assert!(e < 1e-4, "{shape:?}: {e}");
        }
    }
}
