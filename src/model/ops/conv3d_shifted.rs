//! The CPU conv3d forward for wide planes (stride 1 along W, kw > 1): unfold by (channel, depth tap, row tap)
//! only, into rows that hold each output row's input row with its W padding, and let the W tap be a shifted
//! view of the same rows — one gemm per W tap, accumulated. The column matrix is kw× smaller than a full
//! im2col (a 3-wide kernel writes a third of the floats), for at most (kw − 1) / Wo more multiply-adds, spent
//! on the padding columns between output rows, which the final add onto the output (holding the bias) leaves out.
//!
//! Used where the extra columns are few (see [`worth_it`]): the AEKL's full-resolution planes, where unfolding
//! was a fifth of an encode or decode. Narrow planes (the UNet's latent) keep the full unfold in conv3d.rs.

use rayon::prelude::*;

use super::conv3d::{row_sources, Conv3dParams, Geom, RowTiling, SendPtr, COLUMNS};
use super::matmul::{matmul, Strided};

/// Output width from which the shifted form pays: the wasted columns ((kw − 1) / Wo, 6 % at 32) cost less
/// than the unfolding they save.
const MIN_OW: usize = 32;

thread_local! {
    /// Each thread's tile of gemm output (with the padding columns), kept between convolutions.
    static TILE_OUT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `conv3d` should take this path for kernel `g` and parameters `p`.
pub(super) fn worth_it(g: &Geom, p: &Conv3dParams) -> bool {
    p.stride[2] == 1 && g.kw > 1 && g.ow >= MIN_OW
}

/// `out [N, Co, od·oh·ow]` += conv(`x`, `w`) for `(n, co, od)` = (samples, output channels, output depth) of
/// geometry `g`; `out` comes in holding the bias.
pub(super) fn forward(x: &[f32], w: &[f32], g: &Geom, p: &Conv3dParams, dims: (usize, usize, usize), out: &mut [f32]) {
    let (n, co, od) = dims;
    let Geom { ci, kd, kh, kw, oh, ow, .. } = *g;
    let kdim = ci * kd * kh * kw;
    let taps = ci * kd * kh;
    // One padded input row per output row: Wo + kw − 1 = W + pad_before + pad_after entries.
    let pw = ow + kw - 1;
    let vol_out = od * oh * ow;
    let tiling = RowTiling::new(n, taps, pw, od * oh);
    let inner = tiling.gemm_parallelism();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let job = |&(bi, g0): &(usize, usize)| {
        let rows = tiling.tile_rows(g0);
        // The kw − 1 trailing entries let the last W tap's view run to the end of the last row.
        let stride = rows * pw + kw - 1;
        let ncols = rows * pw;
        crate::scratch::with(&COLUMNS, |col| {
            col.resize(taps * stride, 0.0);
            let sample = ci * g.d * g.h * g.w;
            unfold_padded_rows(&x[bi * sample..(bi + 1) * sample], g, p, g0, rows, stride, col);
            crate::scratch::with(&TILE_OUT, |acc| {
                acc.resize(co * ncols, 0.0);
                for cc in 0..kw {
                    // acc (Co × ncols) (+)= w[:, :, :, :, cc] (Co × taps, row stride kdim, column stride kw)
                    //   · col shifted by cc (taps × ncols, row stride `stride`)
                    // SAFETY: the operands address `w` (cc + (Co−1)·kdim + (taps−1)·kw < Co·kdim), `col`
                    // (cc + (taps−1)·stride + ncols − 1 < taps·stride since cc ≤ kw − 1) and `acc`
                    // (Co·ncols), all live and distinct; `acc` is this thread's own.
                    unsafe {
                        matmul(
                            co,
                            ncols,
                            taps,
                            Strided::rows(acc.as_mut_ptr(), ncols),
                            cc > 0,
                            Strided { ptr: w.as_ptr().add(cc), row: kdim as isize, col: kw as isize },
                            Strided::rows(col.as_ptr().add(cc), stride),
                            inner,
                        );
                    }
                }
                for (o, acc_o) in acc.chunks(ncols).enumerate() {
                    let start = bi * co * vol_out + o * vol_out + g0 * ow;
                    // SAFETY: every job writes its own (sample, rows) window of each channel, disjoint from the
                    // others'; `out` outlives the loop and holds `start + rows·ow` elements.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), rows * ow) };
                    for (d, a) in dst.chunks_mut(ow).zip(acc_o.chunks(pw)) {
                        for (d, &a) in d.iter_mut().zip(a) {
                            *d += a;
                        }
                    }
                }
            })
        })
    };
    if tiling.split_gemm {
        tiling.jobs.iter().for_each(job);
    } else {
        tiling.jobs.par_iter().for_each(job);
    }
}

/// Unfold output rows `g0..g0 + rows` of one sample `xb` [Ci,D,H,W] into `col` [Ci·kd·kh, `stride`]: row
/// (c, a, bb), entry r·(Wo + kw − 1) + t is input x = t − pad_before along W of the row that depth tap a and
/// row tap bb of output row g0 + r read; zero in the padding, in rows outside the volume and in the tail.
fn unfold_padded_rows(xb: &[f32], g: &Geom, p: &Conv3dParams, g0: usize, rows: usize, stride: usize, col: &mut [f32]) {
    let Geom { ci, d, h, w: wd, kd, kh, kw, ow, .. } = *g;
    let pw = ow + kw - 1;
    let before = p.pad_before[2].min(pw);
    let valid = wd.min(pw - before);
    let sources = row_sources(g, p, g0, rows);
    for (c, plane) in col.chunks_mut(kd * kh * stride).take(ci).enumerate() {
        let xc = &xb[c * d * h * wd..(c + 1) * d * h * wd];
        for (dst, src) in plane.chunks_mut(stride).zip(sources.chunks(rows)) {
            for (drow, s) in dst.chunks_mut(pw).zip(src) {
                match s {
                    Some(s) => {
                        drow[..before].fill(0.0);
                        drow[before..before + valid].copy_from_slice(&xc[*s..*s + valid]);
                        drow[before + valid..].fill(0.0);
                    }
                    None => drow.fill(0.0),
                }
            }
            dst[rows * pw..].fill(0.0);
        }
    }
}
