//! Backward passes of the CPU depthwise conv2d kernels (`depthwise.rs`), channels-first and channels-last,
//! so ConvNeXt training gets gradients through the same ops the inference runs.
//!
//! Channels-first: dX plane by plane (rayon over (sample, channel)), each output row's tap contribution added
//! back as an `axpy` onto the input row it read; dW channel by channel (rayon), a dot product per tap and row.
//! Channels-last: dX gathered per input row (rayon over rows, so no two tasks write one element), the inner
//! loops over the contiguous channels; dW per tap and channel summed over output rows with one accumulator
//! per rayon worker. db is the sum of the output gradient over everything but the channels.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, &format!("depthwise_conv2d backward: {what}"))
}

/// Output columns `x0..x1` whose tap `dx` reads a real input column (not padding), for input width `w`.
fn valid_cols(dx: usize, p: usize, w: usize, ow: usize) -> (usize, usize) {
    (p.saturating_sub(dx), (w + p).saturating_sub(dx).min(ow))
}

/// Gradients of the channels-first kernel: `x` [N,C,H,W], `w` [C,1,KH,KW], output gradient `grad`.
pub(super) fn backward_nchw(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    grad: &Tensor,
    padding: usize,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let (_, _, h, wd) = x.dims4()?;
    let dx = if x.track_op() { Some(grad.apply_op2_no_bwd(w, &NchwData { padding, hw: [h, wd] })?) } else { None };
    let dw = if w.track_op() {
        let (_, _, kh, kw) = w.dims4()?;
        Some(x.apply_op2_no_bwd(&grad, &NchwFilter { padding, k: [kh, kw] })?)
    } else {
        None
    };
    let db = if b.track_op() { Some(grad.sum((0, 2, 3))?) } else { None };
    Ok((dx, dw, db))
}

/// Gradients of the channels-last kernel: `x` [N,H,W,C], taps-major `wt` [KH,KW,C], output gradient `grad`.
pub(super) fn backward_nhwc(
    x: &Tensor,
    wt: &Tensor,
    b: &Tensor,
    grad: &Tensor,
    padding: usize,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let (_, h, wd, _) = x.dims4()?;
    let dx = if x.track_op() { Some(grad.apply_op2_no_bwd(wt, &NhwcData { padding, hw: [h, wd] })?) } else { None };
    let dw = if wt.track_op() {
        let (kh, kw, _) = wt.dims3()?;
        Some(x.apply_op2_no_bwd(&grad, &NhwcFilter { padding, k: [kh, kw] })?)
    } else {
        None
    };
    let db = if b.track_op() { Some(grad.sum((0, 1, 2))?) } else { None };
    Ok((dx, dw, db))
}

/// Output size of a stride-1 conv with `p` zeros on every side, or an error when the gradient does not fit.
fn out_hw(h: usize, w: usize, kh: usize, kw: usize, p: usize, got: (usize, usize)) -> Result<(usize, usize)> {
    let want = (h + 2 * p + 1 - kh, w + 2 * p + 1 - kw);
    if got != want {
        candle_core::bail!("depthwise_conv2d backward: gradient plane {got:?}, expected {want:?}");
    }
    Ok(want)
}

/// dX, channels-first: (grad [N,C,OH,OW], w [C,1,KH,KW]) → [N,C,H,W].
struct NchwData {
    padding: usize,
    hw: [usize; 2],
}

impl CustomOp2 for NchwData {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-data-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s1, l1, "output gradient")?;
        let w = slice(s2, l2, "weight")?;
        let (n, c, goh, gow) = l1.shape().dims4()?;
        let (_, _, kh, kw) = l2.shape().dims4()?;
        let ([h, wd], p) = (self.hw, self.padding);
        let (oh, ow) = out_hw(h, wd, kh, kw, p, (goh, gow))?;
        let mut dx = vec![0f32; n * c * h * wd];
        dx.par_chunks_mut(h * wd).enumerate().for_each(|(plane, d)| {
            let ch = plane % c;
            let gp = &g[plane * oh * ow..(plane + 1) * oh * ow];
            let k = &w[ch * kh * kw..(ch + 1) * kh * kw];
            for (y, grow) in gp.chunks_exact(ow).enumerate() {
                for dy in 0..kh {
                    let iy = y + dy;
                    if iy < p || iy - p >= h {
                        continue;
                    }
                    let drow = &mut d[(iy - p) * wd..(iy - p + 1) * wd];
                    for dxx in 0..kw {
                        let (x0, x1) = valid_cols(dxx, p, wd, ow);
                        if x0 >= x1 {
                            continue;
                        }
                        let wt = k[dy * kw + dxx];
                        let i0 = x0 + dxx - p;
                        for (dst, &gv) in drow[i0..i0 + (x1 - x0)].iter_mut().zip(&grow[x0..x1]) {
                            *dst += wt * gv;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, wd))))
    }
}

/// dW, channels-first: (x [N,C,H,W], grad [N,C,OH,OW]) → [C,1,KH,KW].
struct NchwFilter {
    padding: usize,
    k: [usize; 2],
}

impl CustomOp2 for NchwFilter {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-filter-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "input")?;
        let g = slice(s2, l2, "output gradient")?;
        let (n, c, h, wd) = l1.shape().dims4()?;
        let (_, _, goh, gow) = l2.shape().dims4()?;
        let ([kh, kw], p) = (self.k, self.padding);
        let (oh, ow) = out_hw(h, wd, kh, kw, p, (goh, gow))?;
        let mut dw = vec![0f32; c * kh * kw];
        dw.par_chunks_mut(kh * kw).enumerate().for_each(|(ch, acc)| {
            for bi in 0..n {
                let plane = bi * c + ch;
                let xp = &x[plane * h * wd..(plane + 1) * h * wd];
                let gp = &g[plane * oh * ow..(plane + 1) * oh * ow];
                for (y, grow) in gp.chunks_exact(ow).enumerate() {
                    for dy in 0..kh {
                        let iy = y + dy;
                        if iy < p || iy - p >= h {
                            continue;
                        }
                        let irow = &xp[(iy - p) * wd..(iy - p + 1) * wd];
                        for dxx in 0..kw {
                            let (x0, x1) = valid_cols(dxx, p, wd, ow);
                            if x0 >= x1 {
                                continue;
                            }
                            let i0 = x0 + dxx - p;
                            let dot: f32 = grow[x0..x1].iter().zip(&irow[i0..i0 + (x1 - x0)]).map(|(a, b)| a * b).sum();
                            acc[dy * kw + dxx] += dot;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(dw), Shape::from((c, 1, kh, kw))))
    }
}

/// dX, channels-last: (grad [N,OH,OW,C], wt [KH,KW,C]) → [N,H,W,C].
struct NhwcData {
    padding: usize,
    hw: [usize; 2],
}

impl CustomOp2 for NhwcData {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-nhwc-data-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s1, l1, "output gradient")?;
        let w = slice(s2, l2, "weight")?;
        let (n, goh, gow, c) = l1.shape().dims4()?;
        let (kh, kw, _) = l2.shape().dims3()?;
        let ([h, wd], p) = (self.hw, self.padding);
        let (oh, ow) = out_hw(h, wd, kh, kw, p, (goh, gow))?;
        let mut dx = vec![0f32; n * h * wd * c];
        // One task per input row: it gathers from every output row and tap that read it.
        dx.par_chunks_mut(wd * c).enumerate().for_each(|(row, d)| {
            let (img, iy) = (row / h, row % h);
            for dy in 0..kh {
                // output row oy read input row iy through tap dy when oy + dy - p = iy
                let oy = iy + p;
                if oy < dy || oy - dy >= oh {
                    continue;
                }
                let oy = oy - dy;
                let grow = &g[(img * oh + oy) * ow * c..(img * oh + oy + 1) * ow * c];
                for dxx in 0..kw {
                    let tap = &w[(dy * kw + dxx) * c..(dy * kw + dxx + 1) * c];
                    let (x0, x1) = valid_cols(dxx, p, wd, ow);
                    for ox in x0..x1 {
                        let ix = ox + dxx - p;
                        let src = &grow[ox * c..(ox + 1) * c];
                        let dst = &mut d[ix * c..(ix + 1) * c];
                        for ((dv, &gv), &k) in dst.iter_mut().zip(src).zip(tap) {
                            *dv += k * gv;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((n, h, wd, c))))
    }
}

/// dW, channels-last: (x [N,H,W,C], grad [N,OH,OW,C]) → taps-major [KH,KW,C].
struct NhwcFilter {
    padding: usize,
    k: [usize; 2],
}

impl CustomOp2 for NhwcFilter {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-nhwc-filter-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "input")?;
        let g = slice(s2, l2, "output gradient")?;
        let (n, h, wd, c) = l1.shape().dims4()?;
        let (_, goh, gow, _) = l2.shape().dims4()?;
        let ([kh, kw], p) = (self.k, self.padding);
        let (oh, ow) = out_hw(h, wd, kh, kw, p, (goh, gow))?;
        let size = kh * kw * c;
        let dw = (0..n * oh)
            .into_par_iter()
            .fold(
                || vec![0f32; size],
                |mut acc, row| {
                    let (img, oy) = (row / oh, row % oh);
                    let grow = &g[row * ow * c..(row + 1) * ow * c];
                    for dy in 0..kh {
                        let iy = oy + dy;
                        if iy < p || iy - p >= h {
                            continue;
                        }
                        let irow = &x[(img * h + iy - p) * wd * c..(img * h + iy - p + 1) * wd * c];
                        for dxx in 0..kw {
                            let a = &mut acc[(dy * kw + dxx) * c..(dy * kw + dxx + 1) * c];
                            let (x0, x1) = valid_cols(dxx, p, wd, ow);
                            for ox in x0..x1 {
                                let ix = ox + dxx - p;
                                let gs = &grow[ox * c..(ox + 1) * c];
                                let xs = &irow[ix * c..(ix + 1) * c];
                                for ((av, &gv), &xv) in a.iter_mut().zip(gs).zip(xs) {
                                    *av += gv * xv;
                                }
                            }
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f32; size],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        Ok((CpuStorage::F32(dw), Shape::from((kh, kw, c))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::depthwise::{depthwise_conv2d, depthwise_conv2d_nhwc};
    use super::super::grad_checks::{fd_check, FdOptions};
    use candle_core::Tensor;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        super::super::grad_checks::uniform(shape, seed, -1.0, 1.0).expect("tensor")
    }

    /// Both layouts against f64 central differences (candle's grouped conv2d path), on odd sizes, a padding
    /// that keeps the size (ConvNeXt's 7×7 p3, planes smaller than the kernel included) and one that shrinks it.
    #[test]
    fn gradients_match_finite_differences() {
        let opts = FdOptions { probes: 10, ..FdOptions::f64() };
        for (shape, k, p) in [([2, 3, 5, 6], (7, 7), 3), ([1, 4, 7, 5], (3, 5), 1), ([2, 2, 3, 4], (7, 7), 3)] {
            let c = shape[1];
            let inputs = [rand(&shape, 1), rand(&[c, 1, k.0, k.1], 2), rand(&[c], 3)];
            let nchw = |t: &[Tensor]| depthwise_conv2d(&t[0], &t[1], &t[2], p);
            let e = fd_check(&inputs, &[0, 1, 2], nchw, opts).expect("nchw").worst_rel();
            assert!(e < 1e-4, "nchw {shape:?} k{k:?} p{p}: {e}");
            let nhwc =
                |t: &[Tensor]| depthwise_conv2d_nhwc(&t[0].permute((0, 2, 3, 1))?.contiguous()?, &t[1], &t[2], p);
            let e = fd_check(&inputs, &[0, 1, 2], nhwc, opts).expect("nhwc").worst_rel();
            assert!(e < 1e-4, "nhwc {shape:?} k{k:?} p{p}: {e}");
        }
    }
}
