//! Backward pass of the CPU conv3d kernel (`conv3d.rs`), so training gets gradients through the same op the
//! inference runs.
//!
//! * dW: the forward's im2col tiles again, `dW [Co, Ci·kd·kh·kw] += g_tile [Co, cols] · colᵀ` with `gemm`,
//!   parallel over (sample, output depth, row tile) jobs, each rayon worker summing into its own dW.
//! * dX: for every input depth slice (in parallel) and every kernel depth tap that reads it,
//!   `col = W_aᵀ [Ci·kh·kw, Co] · g_tile [Co, cols]`, then col2im adds the columns back onto the slice; each job
//!   owns its input slice, so no two jobs write the same element.
//! * db: the sum of the output gradient over every axis but the channels.
//!
//! Both are themselves custom ops without a backward (no second derivatives).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::{matmul, Strided};

use super::conv3d::{rows_per_tile, Conv3dParams, Geom, RowTiling, COLUMNS};

/// Gradients of `conv3d(x, w, b)` for the output gradient `grad`; `None` for an operand nothing tracks.
pub(super) fn backward(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    grad: &Tensor,
    p: Conv3dParams,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let dx = if x.track_op() {
        let (_, _, d, h, wd) = x.dims5()?;
        Some(grad.apply_op2_no_bwd(w, &DataGrad { p, dhw: [d, h, wd] })?)
    } else {
        None
    };
    let dw = if w.track_op() {
        let (_, _, kd, kh, kw) = w.dims5()?;
        Some(x.apply_op2_no_bwd(&grad, &FilterGrad { p, k: [kd, kh, kw] })?)
    } else {
        None
    };
    // Summed in f64: an f32 running sum over a whole volume drifts ~1e-4 relative where signs cancel.
    let db = if b.track_op() {
        Some(grad.to_dtype(candle_core::DType::F64)?.sum((0, 2, 3, 4))?.to_dtype(grad.dtype())?)
    } else {
        None
    };
    Ok((dx, dw, db))
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, &format!("conv3d backward: {what}"))
}

/// dW from (x, grad): `[N,Ci,D,H,W]`, `[N,Co,Do,Ho,Wo]` → `[Co,Ci,kd,kh,kw]`.
struct FilterGrad {
    p: Conv3dParams,
    k: [usize; 3],
}

impl CustomOp2 for FilterGrad {
    fn name(&self) -> &'static str {
        "ldae-conv3d-filter-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (p, [kd, kh, kw]) = (self.p, self.k);
        let x = slice(s1, l1, "input")?;
        let g = slice(s2, l2, "output gradient")?;
        let (n, ci, d, h, wd) = l1.shape().dims5()?;
        let (gn, co, od, oh, ow) = l2.shape().dims5()?;
        if gn != n || (od, oh, ow) != (p.out_len(0, d, kd)?, p.out_len(1, h, kh)?, p.out_len(2, wd, kw)?) {
            candle_core::bail!("conv3d backward: gradient {:?} does not fit input {:?}", l2.shape(), l1.shape());
        }
        let geom = Geom { ci, d, h, w: wd, kd, kh, kw, oh, ow };
        let kdim = ci * kd * kh * kw;
        let vol_out = od * oh * ow;
        // Tiles of output rows across depth slices, as in the forward.
        let tiling = RowTiling::new(n, kdim, ow, od * oh);
        let inner = tiling.gemm_parallelism();
        let dw = tiling
            .jobs
            .par_iter()
            .fold(
                || vec![0f32; co * kdim],
                |mut acc: Vec<f32>, &tile| {
                    tiling.unfolded(x, &geom, &p, tile, |col, ncols| {
                        let g_off = tile.0 * co * vol_out + tile.1 * ow;
                        // SAFETY: acc is [co, kdim] (row stride kdim); the gradient tile is [co, ncols] with row
                        // stride vol_out starting at g_off, whose last element (co-1)·vol_out + ncols - 1 lies
                        // inside g; colᵀ is [ncols, kdim] read from col [kdim, ncols].
                        unsafe {
                            matmul(
                                co,
                                kdim,
                                ncols,
                                Strided::rows(acc.as_mut_ptr(), kdim),
                                true,
                                Strided::rows(g.as_ptr().add(g_off), vol_out),
                                Strided::transposed(col.as_ptr(), ncols),
                                inner,
                            );
                        }
                    });
                    acc
                },
            )
            .reduce(
                || vec![0f32; co * kdim],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        Ok((CpuStorage::F32(dw), Shape::from((co, ci, kd, kh, kw))))
    }
}

/// dX from (grad, w): `[N,Co,Do,Ho,Wo]`, `[Co,Ci,kd,kh,kw]` → `[N,Ci,D,H,W]`.
struct DataGrad {
    p: Conv3dParams,
    dhw: [usize; 3],
}

impl CustomOp2 for DataGrad {
    fn name(&self) -> &'static str {
        "ldae-conv3d-data-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (p, [d, h, wd]) = (self.p, self.dhw);
        let g = slice(s1, l1, "output gradient")?;
        let w = slice(s2, l2, "weight")?;
        let (n, co, od, oh, ow) = l1.shape().dims5()?;
        let (wco, ci, kd, kh, kw) = l2.shape().dims5()?;
        if wco != co || (od, oh, ow) != (p.out_len(0, d, kd)?, p.out_len(1, h, kh)?, p.out_len(2, wd, kw)?) {
            candle_core::bail!("conv3d backward: gradient {:?} does not fit weight {:?}", l1.shape(), l2.shape());
        }
        let taps = kh * kw;
        let krow = ci * taps;
        let (plane, vol_out, in_plane) = (oh * ow, od * oh * ow, h * wd);
        // W_a transposed per depth tap: wt[a] is [Ci·kh·kw, Co], row (c, bb, cc).
        let mut wt = vec![0f32; kd * krow * co];
        for o in 0..co {
            for c in 0..ci {
                for a in 0..kd {
                    for t in 0..taps {
                        wt[(a * krow + c * taps + t) * co + o] = w[((o * ci + c) * kd + a) * taps + t];
                    }
                }
            }
        }
        let rpt = rows_per_tile(krow, ow, oh);
        let jobs: Vec<(usize, usize)> = (0..n).flat_map(|bi| (0..d).map(move |iz| (bi, iz))).collect();
        let slices: Vec<Vec<f32>> = jobs
            .par_iter()
            .map(|&(bi, iz)| {
                crate::scratch::with(&COLUMNS, |col| {
                    // acc [Ci, H, W]: the gradient of input slice (bi, :, iz).
                    let mut acc = vec![0f32; ci * in_plane];
                    for a in 0..kd {
                        // Output depth z reads iz through tap a when z·s + a - pad = iz.
                        let num = (iz + p.pad_before[0]) as isize - a as isize;
                        if num < 0 || num as usize % p.stride[0] != 0 {
                            continue;
                        }
                        let z = num as usize / p.stride[0];
                        if z >= od {
                            continue;
                        }
                        for r0 in (0..oh).step_by(rpt) {
                            let rows = rpt.min(oh - r0);
                            let ncols = rows * ow;
                            col.resize(krow * ncols, 0.0);
                            let g_off = bi * co * vol_out + z * plane + r0 * ow;
                            // SAFETY: wt[a] is [krow, co] contiguous; the gradient tile [co, ncols] (row stride
                            // vol_out from g_off) lies inside g; col is [krow, ncols], written over.
                            unsafe {
                                matmul(
                                    krow,
                                    ncols,
                                    co,
                                    Strided::rows(col.as_mut_ptr(), ncols),
                                    false,
                                    Strided::rows(wt.as_ptr().add(a * krow * co), co),
                                    Strided::rows(g.as_ptr().add(g_off), vol_out),
                                    gemm::Parallelism::None,
                                );
                            }
                            fold_tile(col, &mut acc, ci, kh, kw, h, wd, ow, r0, rows, &p);
                        }
                    }
                    acc
                })
            })
            .collect();
        let mut dx = vec![0f32; n * ci * d * in_plane];
        for (&(bi, iz), acc) in jobs.iter().zip(&slices) {
            for c in 0..ci {
                let at = ((bi * ci + c) * d + iz) * in_plane;
                dx[at..at + in_plane].copy_from_slice(&acc[c * in_plane..(c + 1) * in_plane]);
            }
        }
        Ok((CpuStorage::F32(dx), Shape::from((n, ci, d, h, wd))))
    }
}

/// col2im for one depth tap: add `col` [Ci·kh·kw, rows·ow] (row (c, bb, cc), column (oy - r0, ox)) onto the
/// input slice `acc` [Ci, H, W] at the positions the forward read them from; padding positions are dropped.
#[allow(clippy::too_many_arguments)]
fn fold_tile(
    col: &[f32],
    acc: &mut [f32],
    ci: usize,
    kh: usize,
    kw: usize,
    h: usize,
    wd: usize,
    ow: usize,
    r0: usize,
    rows: usize,
    p: &Conv3dParams,
) {
    let ncols = rows * ow;
    let mut row = 0;
    for c in 0..ci {
        let ac = &mut acc[c * h * wd..(c + 1) * h * wd];
        for bb in 0..kh {
            for cc in 0..kw {
                let src = &col[row * ncols..(row + 1) * ncols];
                row += 1;
                let off = cc as isize - p.pad_before[2] as isize;
                for oy in 0..rows {
                    let iy = ((r0 + oy) * p.stride[1] + bb) as isize - p.pad_before[1] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let arow = &mut ac[iy as usize * wd..(iy as usize + 1) * wd];
                    let srow = &src[oy * ow..(oy + 1) * ow];
                    if p.stride[2] == 1 {
                        let lo = (-off).clamp(0, ow as isize) as usize;
                        let hi = (wd as isize - off).clamp(0, ow as isize) as usize;
                        if hi > lo {
                            let s = (lo as isize + off) as usize;
                            for (a, &v) in arow[s..s + hi - lo].iter_mut().zip(&srow[lo..hi]) {
                                *a += v;
                            }
                        }
                    } else {
                        for (ox, &v) in srow.iter().enumerate() {
                            let ix = (ox * p.stride[2]) as isize + off;
                            if ix >= 0 && ix < wd as isize {
                                arow[ix as usize] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv3d::conv3d;
    use super::super::grad_checks::{fd_check, FdOptions};
    use super::*;
    use candle_core::Var;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        super::super::grad_checks::uniform(shape, seed, -1.0, 1.0).expect("tensor")
    }

    /// Worst relative error of dX, dW, db against f64 central differences (of the composed conv3d_folded path).
    fn worst(p: Conv3dParams, x: &[usize], co: usize, k: [usize; 3]) -> f64 {
        let inputs = [rand(x, 1), rand(&[co, x[1], k[0], k[1], k[2]], 2), rand(&[co], 3)];
        let f = |t: &[Tensor]| conv3d(&t[0], &t[1], &t[2], p);
        let rep = fd_check(&inputs, &[0, 1, 2], f, FdOptions { probes: 10, ..FdOptions::f64() }).expect("fd");
        assert_eq!(rep.entries.len(), 10 + 10 + co.min(10));
        rep.worst_rel()
    }

    #[test]
    fn same_padding_gradients_match_finite_differences() {
        let e = worst(Conv3dParams::same(1), &[2, 3, 5, 6, 7], 4, [3, 3, 3]);
        assert!(e < 1e-4, "worst relative error {e}");
    }

    #[test]
    fn strided_end_padded_gradients_match_finite_differences() {
        // Odd sizes: the last output reads the end padding on every axis.
        let e = worst(Conv3dParams::down_end_pad(), &[1, 2, 7, 7, 9], 3, [3, 3, 3]);
        assert!(e < 1e-4, "worst relative error {e}");
    }

    #[test]
    fn uneven_padding_and_stride_gradients_match_finite_differences() {
        let p = Conv3dParams { stride: [1, 2, 2], pad_before: [1, 0, 2], pad_after: [0, 1, 1] };
        let e = worst(p, &[2, 2, 4, 6, 5], 3, [2, 3, 3]);
        assert!(e < 1e-4, "worst relative error {e}");
    }

    /// Without tracked operands nothing is recorded (inference stays free of the graph).
    #[test]
    fn untracked_inputs_record_no_graph() {
        let (x, w, b) = (rand(&[1, 1, 3, 3, 3], 1), rand(&[1, 1, 3, 3, 3], 2), rand(&[1], 3));
        let y = conv3d(&x, &w, &b, Conv3dParams::same(1)).expect("conv");
        assert!(!y.track_op());
        let wv = Var::from_tensor(&w).expect("var");
        let y = conv3d(&x, wv.as_tensor(), &b, Conv3dParams::same(1)).expect("conv");
        let g = y.sum_all().and_then(|s| s.backward()).expect("backward");
        assert!(g.get(wv.as_tensor()).is_some() && g.get(&x).is_none());
    }
}
