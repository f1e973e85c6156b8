//! Depthwise 2-D convolution (groups = channels, stride 1, zero padding), as ConvNeXt's 7×7 block conv uses.
//!
//! candle's grouped conv2d runs one convolution per group and is 13–22× slower than PyTorch on CPU
//! (notes/rust-stack.md). On CPU this is a direct kernel: every (sample, channel) plane is one rayon task, and for
//! each output row and kernel tap the contribution is an `axpy` over the valid output columns — a contiguous,
//! bounds-check-free inner loop the compiler vectorises. Other devices (CUDA) and dtypes use candle's grouped
//! conv2d, which is fast there. [`depthwise_conv2d_nhwc`] is the channels-last form ConvNeXt's blocks use.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x` [N,C,H,W] (any device/dtype), `w` [C,1,KH,KW], `b` [C]; stride 1, `padding` zeros on every side.
/// Output [N, C, H + 2p - KH + 1, W + 2p - KW + 1].
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (wc, one, kh, kw) = w.dims4()?;
    if wc != c || one != 1 {
        candle_core::bail!("depthwise_conv2d: weight {:?} does not fit input {:?}", w.shape(), x.shape());
    }
    if b.dims1()? != c {
        candle_core::bail!("depthwise_conv2d: bias {:?} does not fit {c} channels", b.shape());
    }
    if h + 2 * padding < kh || wd + 2 * padding < kw {
        candle_core::bail!("depthwise_conv2d: input {:?} smaller than kernel {:?}", x.shape(), w.shape());
    }
    let direct = matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32;
    if direct {
        let x = x.contiguous()?;
        let w = w.to_dtype(DType::F32)?.contiguous()?;
        let b = b.to_dtype(DType::F32)?.contiguous()?;
        x.apply_op3(&w, &b, Depthwise { padding })
    } else {
        let y = x.conv2d(&w.to_dtype(x.dtype())?, padding, 1, 1, c)?;
        y.broadcast_add(&b.to_dtype(x.dtype())?.reshape((1, c, 1, 1))?)
    }
}

struct Depthwise {
    padding: usize,
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, &format!("depthwise_conv2d: {what}"))
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        super::depthwise_grad::backward_nchw(x, w, b, grad, self.padding)
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
        let x = contiguous(s1, l1, "input")?;
        let w = contiguous(s2, l2, "weight")?;
        let b = contiguous(s3, l3, "bias")?;
        let (n, c, h, wd) = l1.shape().dims4()?;
        let (_, _, kh, kw) = l2.shape().dims4()?;
        let p = self.padding;
        let (oh, ow) = (h + 2 * p + 1 - kh, wd + 2 * p + 1 - kw);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, o)| {
            let ch = plane % c;
            let src = &x[plane * h * wd..(plane + 1) * h * wd];
            let k = &w[ch * kh * kw..(ch + 1) * kh * kw];
            plane_conv(src, h, wd, k, kh, kw, p, b[ch], o, oh, ow);
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// One channel plane: `o` [oh, ow] = bias + Σ taps; all indexing is by sub-slices so the inner loop is a plain
/// zip over two equal-length slices.
#[allow(clippy::too_many_arguments)]
fn plane_conv(
    src: &[f32],
    h: usize,
    w: usize,
    k: &[f32],
    kh: usize,
    kw: usize,
    p: usize,
    bias: f32,
    o: &mut [f32],
    oh: usize,
    ow: usize,
) {
    o.fill(bias);
    for (y, orow) in o.chunks_exact_mut(ow).enumerate().take(oh) {
        for dy in 0..kh {
            // input row iy = y + dy - p
            let iy = y + dy;
            if iy < p || iy - p >= h {
                continue;
            }
            let irow = &src[(iy - p) * w..(iy - p + 1) * w];
            for dx in 0..kw {
                let wt = k[dy * kw + dx];
                // output column x reads input column x + dx - p; valid x: p-dx <= x < w+p-dx
                let x0 = p.saturating_sub(dx);
                let x1 = (w + p).saturating_sub(dx).min(ow);
                if x0 >= x1 {
                    continue;
                }
                let i0 = x0 + dx - p;
                let dst = &mut orow[x0..x1];
                let s = &irow[i0..i0 + (x1 - x0)];
                for (d, v) in dst.iter_mut().zip(s) {
                    *d += wt * v;
                }
            }
        }
    }
}

/// Channels-last variant: `x` [N,H,W,C], `w` [C,1,KH,KW], `b` [C] → [N, OH, OW, C]. On CPU the inner loop runs
/// over the contiguous channels (vectorised for any plane size, which matters for the small late-stage planes).
pub fn depthwise_conv2d_nhwc(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize) -> Result<Tensor> {
    let (_, h, wd, c) = x.dims4()?;
    let (wc, one, kh, kw) = w.dims4()?;
    if wc != c || one != 1 || b.dims1()? != c {
        candle_core::bail!(
            "depthwise_conv2d: weight {:?} / bias {:?} do not fit input {:?}",
            w.shape(),
            b.shape(),
            x.shape()
        );
    }
    if h + 2 * padding < kh || wd + 2 * padding < kw {
        candle_core::bail!("depthwise_conv2d: input {:?} smaller than kernel {:?}", x.shape(), w.shape());
    }
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        let x = x.contiguous()?;
        // taps-major weights [KH*KW, C] so each tap's channel vector is contiguous
        let wt = w.to_dtype(DType::F32)?.reshape((c, kh * kw))?.t()?.contiguous()?.reshape((kh, kw, c))?;
        let b = b.to_dtype(DType::F32)?.contiguous()?;
        x.apply_op3(&wt, &b, DepthwiseNhwc { padding })
    } else {
        let y = depthwise_conv2d(&x.permute((0, 3, 1, 2))?, w, b, padding)?;
        y.permute((0, 2, 3, 1))?.contiguous()
    }
}

struct DepthwiseNhwc {
    padding: usize,
}

impl CustomOp3 for DepthwiseNhwc {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-nhwc"
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        super::depthwise_grad::backward_nhwc(x, w, b, grad, self.padding)
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
        let x = contiguous(s1, l1, "input")?;
        let w = contiguous(s2, l2, "weight")?;
        let b = contiguous(s3, l3, "bias")?;
        let (n, h, wd, c) = l1.shape().dims4()?;
        let (kh, kw, _) = l2.shape().dims3()?;
        let p = self.padding;
        let (oh, ow) = (h + 2 * p + 1 - kh, wd + 2 * p + 1 - kw);
        let mut out = vec![0f32; n * oh * ow * c];
        // one task per output row of one image
        out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
            let (img, y) = (row / oh, row % oh);
            for px in o.chunks_exact_mut(c) {
                px.copy_from_slice(b);
            }
            for dy in 0..kh {
                let iy = y + dy;
                if iy < p || iy - p >= h {
                    continue;
                }
                let irow = &x[((img * h) + iy - p) * wd * c..((img * h) + iy - p + 1) * wd * c];
                for dx in 0..kw {
                    let tap = &w[(dy * kw + dx) * c..(dy * kw + dx + 1) * c];
                    let x0 = p.saturating_sub(dx);
                    let x1 = (wd + p).saturating_sub(dx).min(ow);
                    for ox in x0..x1 {
                        let ix = ox + dx - p;
                        let src = &irow[ix * c..(ix + 1) * c];
                        let dst = &mut o[ox * c..(ox + 1) * c];
                        for ((d, &v), &k) in dst.iter_mut().zip(src).zip(tap) {
                            *d += k * v;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, oh, ow, c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
    }

    /// The direct kernel against candle's grouped conv2d (an independent implementation) on odd sizes,
    /// paddings that do and do not preserve the size, and a non-square kernel.
    #[test]
    fn matches_candle_grouped_conv() {
        for (shape, k, p) in [([2, 3, 9, 11], (7, 7), 3), ([1, 4, 5, 6], (3, 5), 1), ([1, 2, 8, 8], (7, 7), 0)] {
            let c = shape[1];
            let x = randn(&shape, 1);
            let w = randn(&[c, 1, k.0, k.1], 2);
            let b = randn(&[c], 3);
            let ours = depthwise_conv2d(&x, &w, &b, p).expect("ours");
            let theirs =
                x.conv2d(&w, p, 1, 1, c).and_then(|y| y.broadcast_add(&b.reshape((1, c, 1, 1))?)).expect("candle");
            assert_eq!(ours.dims(), theirs.dims());
            let err: f32 = (ours - theirs).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar()).expect("diff");
            assert!(err < 1e-5, "{shape:?} k{k:?} p{p}: max err {err}");
        }
    }

    /// The channels-last kernel equals the channels-first one on the same data.
    #[test]
    fn nhwc_matches_nchw() {
        for (shape, k, p) in [([2, 5, 9, 11], (7, 7), 3), ([1, 3, 4, 5], (7, 7), 3), ([1, 4, 6, 6], (3, 5), 0)] {
            let c = shape[1];
            let x = randn(&shape, 4);
            let w = randn(&[c, 1, k.0, k.1], 5);
            let b = randn(&[c], 6);
            let a = depthwise_conv2d(&x, &w, &b, p).expect("nchw");
            let xl = x.permute((0, 2, 3, 1)).and_then(|t| t.contiguous()).expect("nhwc input");
            let l = depthwise_conv2d_nhwc(&xl, &w, &b, p).and_then(|t| t.permute((0, 3, 1, 2))).expect("nhwc");
            let err: f32 = (a - l).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar()).expect("diff");
            assert!(err < 1e-5, "{shape:?}: {err}");
        }
    }

    #[test]
    fn rejects_mismatched_weight() {
        let x = randn(&[1, 3, 8, 8], 1);
        let w = randn(&[4, 1, 7, 7], 2);
        let b = randn(&[4], 3);
        let e = depthwise_conv2d(&x, &w, &b, 3).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
    }
}
