//! 3-D convolution (candle 0.11 has none): `[N,Ci,D,H,W] * [Co,Ci,kd,kh,kw] + b → [N,Co,Do,Ho,Wo]` with
//! per-axis stride and separate before/after zero padding (the AEKL's Downsample pads only at the end).
//!
//! CPU: a candle `CustomOp3` that cuts the output rows (counted across depth slices) into tiles, unfolds each
//! tile's input windows into a `[Ci·kd·kh·kw, rows·Wo]` column matrix in a per-thread buffer, and multiplies
//! it with the weight (which, contiguous, already is the `[Co, Ci·kd·kh·kw]` matrix) with the `gemm` crate,
//! writing straight into the output with the bias as the accumulator's start value. Tiles run in parallel
//! with rayon; when there are fewer tiles than threads, each gemm splits itself across the threads instead.
//! Wide planes take conv3d_shifted.rs instead, which unfolds a kw-th of the columns.
//! Other devices (CUDA): depth-folded conv2d through candle's own kernels (one conv2d per depth tap).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::{matmul, Strided};

/// Geometry of a 3-D convolution: stride and zero padding per spatial axis (D, H, W).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dParams {
    pub stride: [usize; 3],
    pub pad_before: [usize; 3],
    pub pad_after: [usize; 3],
}

impl Conv3dParams {
    /// Stride 1, symmetric padding `p` (k3 p1 "same" convolution, or k1 p0).
    pub fn same(p: usize) -> Self {
        Conv3dParams { stride: [1; 3], pad_before: [p; 3], pad_after: [p; 3] }
    }

    /// Stride 2 after a zero pad of 1 at the end of every axis (monai-generative's Downsample).
    pub fn down_end_pad() -> Self {
        Conv3dParams { stride: [2; 3], pad_before: [0; 3], pad_after: [1; 3] }
    }

    pub(super) fn out_len(&self, axis: usize, n: usize, k: usize) -> Result<usize> {
        let padded = n + self.pad_before[axis] + self.pad_after[axis];
        if padded < k {
            candle_core::bail!("conv3d: axis {axis} of length {n} (padded {padded}) is shorter than the kernel {k}");
        }
        Ok((padded - k) / self.stride[axis] + 1)
    }
}

/// `x [N,Ci,D,H,W]`, `w [Co,Ci,kd,kh,kw]`, `b [Co]`.
pub fn conv3d(x: &Tensor, w: &Tensor, b: &Tensor, p: Conv3dParams) -> Result<Tensor> {
    let (_, ci, _, _, _) = x.dims5()?;
    let (co, wci, _, _, _) = w.dims5()?;
    if ci != wci {
        candle_core::bail!("conv3d: input has {ci} channels, weight expects {wci}");
    }
    if b.dims1()? != co {
        candle_core::bail!("conv3d: bias has {} entries for {co} output channels", b.dims1()?);
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let b = b.contiguous()?;
        // Tracked operands get gradients through conv3d_grad; untracked ones record nothing (same speed).
        x.apply_op3(&w, &b, Conv3dCpu(p))
    } else {
        conv3d_folded(x, w, b, p)
    }
}

/// conv3d as a sum over depth taps of conv2d with depth folded into the batch (any device, any dtype).
pub fn conv3d_folded(x: &Tensor, w: &Tensor, b: &Tensor, p: Conv3dParams) -> Result<Tensor> {
    let (n, ci, d, h, wd) = x.dims5()?;
    let (co, _, kd, kh, kw) = w.dims5()?;
    let od = p.out_len(0, d, kd)?;
    p.out_len(1, h, kh)?;
    p.out_len(2, wd, kw)?;
    // Pad D, H, W explicitly (conv2d's own padding is symmetric only).
    let x = x.pad_with_zeros(2, p.pad_before[0], p.pad_after[0])?;
    let x = x.pad_with_zeros(3, p.pad_before[1], p.pad_after[1])?;
    let x = x.pad_with_zeros(4, p.pad_before[2], p.pad_after[2])?;
    let (hp, wp) = (x.dim(3)?, x.dim(4)?);
    // [N, D, Ci, H, W]
    let xt = x.permute((0, 2, 1, 3, 4))?.contiguous()?;
    let mut acc: Option<Tensor> = None;
    for t in 0..kd {
        // Depth positions t, t+s, ..., t+(od-1)s.
        let idx: Vec<u32> = (0..od).map(|o| (t + o * p.stride[0]) as u32).collect();
        let idx = Tensor::new(idx.as_slice(), x.device())?;
        let win = xt.index_select(&idx, 1)?.reshape((n * od, ci, hp, wp))?;
        let wt = w.narrow(2, t, 1)?.squeeze(2)?.contiguous()?;
        let y = if p.stride[1] == p.stride[2] {
            win.conv2d(&wt, 0, p.stride[1], 1, 1)?
        } else {
            candle_core::bail!("conv3d_folded: H and W strides must be equal");
        };
        acc = Some(match acc {
            None => y,
            Some(a) => (a + y)?,
        });
    }
    let y = acc.ok_or_else(|| candle_core::Error::Msg("conv3d: empty kernel".into()))?;
    let (_, _, oh, ow) = y.dims4()?;
    let y = y.reshape((n, od, co, oh, ow))?.permute((0, 2, 1, 3, 4))?;
    y.broadcast_add(&b.reshape((1, co, 1, 1, 1))?)?.contiguous()
}

struct Conv3dCpu(Conv3dParams);

/// Unfolded-column budget per tile (floats).
pub(super) const COL_BUDGET: usize = 1 << 20;

thread_local! {
    /// Each thread's unfolded-column buffer, kept between convolutions (forward and gradients): a fresh one
    /// per call would be a fresh multi-MiB allocation whose pages the kernel zeroes on first touch.
    pub(super) static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl CustomOp3 for Conv3dCpu {
    fn name(&self) -> &'static str {
        "ldae-conv3d"
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        super::conv3d_grad::backward(x, w, b, grad, self.0)
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
        let p = self.0;
        let (x, w, b) = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => (x, w, b),
            _ => candle_core::bail!("ldae-conv3d: f32 only on CPU"),
        };
        let contiguous = |l: &Layout, s: &'static str| {
            l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("ldae-conv3d: {s} not contiguous")))
        };
        let (xo, xe) = contiguous(l1, "input")?;
        let (wo, we) = contiguous(l2, "weight")?;
        let (bo, be) = contiguous(l3, "bias")?;
        let (x, w, b) = (&x[xo..xe], &w[wo..we], &b[bo..be]);
        let (n, ci, d, h, wd) = l1.shape().dims5()?;
        let (co, _, kd, kh, kw) = l2.shape().dims5()?;
        let (od, oh, ow) = (p.out_len(0, d, kd)?, p.out_len(1, h, kh)?, p.out_len(2, wd, kw)?);
        let g = Geom { ci, d, h, w: wd, kd, kh, kw, oh, ow };
        let kdim = ci * kd * kh * kw;
        let vol_out = od * oh * ow;
        // Start from the bias, written once (no zeroing pass first): the gemms accumulate onto it.
        let mut out: Vec<f32> = (0..n * co).flat_map(|i| std::iter::repeat_n(b[i % co], vol_out)).collect();
        if super::conv3d_shifted::worth_it(&g, &p) {
            super::conv3d_shifted::forward(x, w, &g, &p, (n, co, od), &mut out);
            return Ok((CpuStorage::F32(out), Shape::from((n, co, od, oh, ow))));
        }
        // Tiles of whole output rows, counted across depth slices (row g is depth g / oh, row g % oh), so that a
        // small deep-level volume is one gemm that reads its weight once instead of one gemm per depth slice.
        let tiling = RowTiling::new(n, kdim, ow, od * oh);
        let inner = tiling.gemm_parallelism();
        let out_ptr = SendPtr(out.as_mut_ptr());
        let job = |&tile: &(usize, usize)| {
            tiling.unfolded(x, &g, &p, tile, |col, ncols| {
                // out[bi, :, rows g0.., :] (Co x ncols, row stride vol_out) += w (Co x kdim) * col (kdim x ncols)
                let dst_off = tile.0 * co * vol_out + tile.1 * ow;
                // SAFETY: every job writes a disjoint set of output elements (its own (bi, rows) window of each
                // channel); `out` outlives the loop; the sizes passed match the buffers.
                unsafe {
                    matmul(
                        co,
                        ncols,
                        kdim,
                        Strided::rows(out_ptr.get().add(dst_off), vol_out),
                        true,
                        Strided::rows(w.as_ptr(), kdim),
                        Strided::rows(col.as_ptr(), ncols),
                        inner,
                    );
                }
            })
        };
        if tiling.split_gemm {
            tiling.jobs.iter().for_each(job);
        } else {
            tiling.jobs.par_iter().for_each(job);
        }
        Ok((CpuStorage::F32(out), Shape::from((n, co, od, oh, ow))))
    }
}

/// Sizes one unfolding needs: input channels and spatial extent, kernel extent, output width.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    pub ci: usize,
    pub d: usize,
    pub h: usize,
    pub w: usize,
    pub kd: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Output rows per tile so that the unfolded columns (`kdim` rows of `rows · ow`) stay under [`COL_BUDGET`].
pub(super) fn rows_per_tile(kdim: usize, ow: usize, rows: usize) -> usize {
    (COL_BUDGET / (kdim * ow).max(1)).clamp(1, rows.max(1))
}

/// How the forward and the weight gradient cut a convolution's output rows (all depth slices of every
/// sample, `rows` per sample) into tiles that each unfold into one thread's column buffer.
pub(super) struct RowTiling {
    rows_per_tile: usize,
    rows: usize,
    /// `(sample, first row)` of every tile.
    pub jobs: Vec<(usize, usize)>,
    /// Fewer tiles than threads: the tiles run one after another and each gemm splits itself across threads.
    pub split_gemm: bool,
}

impl RowTiling {
    pub(super) fn new(n: usize, kdim: usize, ow: usize, rows: usize) -> Self {
        let threads = rayon::current_num_threads();
        let mut rows_per_tile = rows_per_tile(kdim, ow, rows);
        // Few tiles (fewer than 4 a thread) are cut into a multiple of the thread count: 3 tiles on 2 threads
        // leave one idle for a third of the convolution (the UNet's first level was such a case). Many tiles
        // balance themselves well enough, and smaller ones measured slower on the AEKL's planes.
        let tiles = n * rows.div_ceil(rows_per_tile.max(1));
        if tiles >= threads && tiles < 4 * threads && tiles % threads != 0 {
            let per_sample = (tiles.div_ceil(threads) * threads).div_ceil(n.max(1));
            rows_per_tile = rows.div_ceil(per_sample).max(1);
        }
        let jobs: Vec<_> = (0..n).flat_map(|bi| (0..rows).step_by(rows_per_tile).map(move |g| (bi, g))).collect();
        let split_gemm = jobs.len() < threads;
        RowTiling { rows_per_tile, rows, jobs, split_gemm }
    }

    /// Output rows in the tile that starts at row `g0`.
    pub(super) fn tile_rows(&self, g0: usize) -> usize {
        self.rows_per_tile.min(self.rows - g0)
    }

    /// The parallelism each tile's gemm gets.
    pub(super) fn gemm_parallelism(&self) -> gemm::Parallelism {
        if self.split_gemm {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        }
    }

    /// Unfold tile `(sample, first row)` of `x` (all samples, [N,Ci,D,H,W]) into this thread's column buffer
    /// and call `f(columns [kdim, ncols], ncols)`.
    pub(super) fn unfolded<R>(
        &self,
        x: &[f32],
        g: &Geom,
        p: &Conv3dParams,
        (bi, g0): (usize, usize),
        f: impl FnOnce(&[f32], usize) -> R,
    ) -> R {
        crate::scratch::with(&COLUMNS, |col| {
            let rows = self.tile_rows(g0);
            let ncols = rows * g.ow;
            col.resize(g.ci * g.kd * g.kh * g.kw * ncols, 0.0);
            let sample = g.ci * g.d * g.h * g.w;
            unfold_rows(&x[bi * sample..(bi + 1) * sample], g, p, g0, rows, col);
            f(col, ncols)
        })
    }
}

/// Unfold the input windows of output rows `g0..g0 + rows` of one sample `xb` [Ci,D,H,W] into `col`
/// [Ci·kd·kh·kw, rows·ow]: output row `g` is depth `g / oh`, row `g % oh` (tiles may span depth slices); row
/// index (c, a, bb, cc), column (g - g0, ox); zero where the window reads padding. Shared by the forward and
/// the weight gradient.
fn unfold_rows(xb: &[f32], g: &Geom, p: &Conv3dParams, g0: usize, rows: usize, col: &mut [f32]) {
    let Geom { ci, d, h, w: wd, kw, ow, .. } = *g;
    let ncols = rows * ow;
    // Per (a, bb, r): the start of the input row inside one channel's volume, or None in the padding —
    // worked out once per tile rather than once per channel and W tap (the UNet's planes are 8 wide, so this
    // bookkeeping was most of the unfolding).
    let sources = row_sources(g, p, g0, rows);
    let mut dsts = col.chunks_mut(ncols);
    for c in 0..ci {
        let xc = &xb[c * d * h * wd..(c + 1) * d * h * wd];
        for src in sources.chunks(rows) {
            for cc in 0..kw {
                let Some(dst) = dsts.next() else { return };
                let off = cc as isize - p.pad_before[2] as isize;
                // Valid ox range for stride 1: 0 <= ox + off < wd.
                let lo = (-off).clamp(0, ow as isize) as usize;
                let hi = ((wd as isize - off).clamp(0, ow as isize) as usize).max(lo);
                for (drow, s) in dst.chunks_mut(ow).zip(src) {
                    let Some(s) = *s else {
                        drow.fill(0.0);
                        continue;
                    };
                    let xr = &xc[s..s + wd];
                    if p.stride[2] == 1 {
                        drow[..lo].fill(0.0);
                        let s0 = (lo as isize + off) as usize;
                        drow[lo..hi].copy_from_slice(&xr[s0..s0 + hi - lo]);
                        drow[hi..].fill(0.0);
                    } else {
                        for (ox, v) in drow.iter_mut().enumerate() {
                            let ix = (ox * p.stride[2]) as isize + off;
                            *v = if ix >= 0 && ix < wd as isize { xr[ix as usize] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}

/// For each (depth tap a, row tap bb, tile row r) in that order: where the input row that output row g0 + r
/// reads through taps (a, bb) starts inside one channel's [D,H,W] volume, or None where it is padding.
pub(super) fn row_sources(g: &Geom, p: &Conv3dParams, g0: usize, rows: usize) -> Vec<Option<usize>> {
    let mut sources = Vec::with_capacity(g.kd * g.kh * rows);
    for a in 0..g.kd {
        for bb in 0..g.kh {
            for r in 0..rows {
                let (z, oy) = ((g0 + r) / g.oh.max(1), (g0 + r) % g.oh.max(1));
                let iz = (z * p.stride[0] + a).checked_sub(p.pad_before[0]).filter(|&v| v < g.d);
                let iy = (oy * p.stride[1] + bb).checked_sub(p.pad_before[1]).filter(|&v| v < g.h);
                sources.push(iz.zip(iy).map(|(iz, iy)| (iz * g.h + iy) * g.w));
            }
        }
    }
    sources
}

#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: used only to hand disjoint output windows to rayon workers (see the gemm call).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// A Conv3d layer whose tensors sit at `<prefix>.weight` / `<prefix>.bias` (checkpoint names).
#[derive(Debug, Clone)]
pub struct Conv3d {
    weight: Tensor,
    bias: Tensor,
    params: Conv3dParams,
}

impl Conv3d {
    /// Fetch `[cout, cin, k, k, k]` weight and `[cout]` bias; nothing is computed here.
    pub fn new(vb: candle_nn::VarBuilder, cin: usize, cout: usize, k: usize, params: Conv3dParams) -> Result<Self> {
        let weight = vb.get((cout, cin, k, k, k), "weight")?;
        let bias = vb.get(cout, "bias")?;
        Ok(Conv3d { weight, bias, params })
    }
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, kd, kh, kw) = self.weight.dims5()?;
        if (kd, kh, kw) == (1, 1, 1) && self.params == Conv3dParams::same(0) {
            // Pointwise: one matmul over all positions.
            let (n, ci, d, h, w) = x.dims5()?;
            let co = self.weight.dim(0)?;
            let wm = self.weight.reshape((co, ci))?;
            let xm = x.reshape((n, ci, d * h * w))?;
            let y = wm.broadcast_left(n)?.matmul(&xm.contiguous()?)?;
            return y.broadcast_add(&self.bias.reshape((1, co, 1))?)?.reshape((n, co, d, h, w));
        }
        conv3d(x, &self.weight, &self.bias, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Direct 7-loop reference.
    #[allow(clippy::needless_range_loop)]
    fn naive(x: &Tensor, w: &Tensor, b: &Tensor, p: Conv3dParams) -> Vec<f32> {
        let (n, ci, d, h, wd) = x.dims5().unwrap();
        let (co, _, kd, kh, kw) = w.dims5().unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ws = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bs = b.to_vec1::<f32>().unwrap();
        let od = p.out_len(0, d, kd).unwrap();
        let oh = p.out_len(1, h, kh).unwrap();
        let ow = p.out_len(2, wd, kw).unwrap();
        let mut out = Vec::new();
        for bi in 0..n {
            for o in 0..co {
                for z in 0..od {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let mut s = bs[o] as f64;
                            for c in 0..ci {
                                for a in 0..kd {
                                    for bb in 0..kh {
                                        for cc in 0..kw {
                                            let iz = (z * p.stride[0] + a) as isize - p.pad_before[0] as isize;
                                            let iy = (y * p.stride[1] + bb) as isize - p.pad_before[1] as isize;
                                            let ix = (xx * p.stride[2] + cc) as isize - p.pad_before[2] as isize;
                                            if iz < 0
                                                || iy < 0
                                                || ix < 0
                                                || iz >= d as isize
                                                || iy >= h as isize
                                                || ix >= wd as isize
                                            {
                                                continue;
                                            }
                                            let xi = (((bi * ci + c) * d + iz as usize) * h + iy as usize) * wd
                                                + ix as usize;
                                            let wi = (((o * ci + c) * kd + a) * kh + bb) * kw + cc;
                                            s += xs[xi] as f64 * ws[wi] as f64;
                                        }
                                    }
                                }
                            }
                            out.push(s as f32);
                        }
                    }
                }
            }
        }
        out
    }

    fn check(p: Conv3dParams, k: usize, dims: (usize, usize, usize, usize, usize), co: usize) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., dims, &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (co, dims.1, k, k, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., co, &dev).unwrap();
        let want = naive(&x, &w, &b, p);
        for got in [conv3d(&x, &w, &b, p).unwrap(), conv3d_folded(&x, &w, &b, p).unwrap()] {
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got.len(), want.len());
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4, "max abs error {err} for {p:?}");
        }
    }

    #[test]
    fn same_padding_matches_direct_sum() {
        check(Conv3dParams::same(1), 3, (2, 3, 5, 6, 7), 4);
    }

    #[test]
    fn end_padded_stride_two_matches_direct_sum() {
        check(Conv3dParams::down_end_pad(), 3, (1, 2, 6, 7, 8), 3);
    }

    /// Odd sizes with stride 2 and end / uneven padding: the H/W tails of both paths (the folded path is the
    /// gradient checks' f64 reference).
    #[test]
    fn odd_sizes_and_uneven_padding_match_direct_sum() {
        check(Conv3dParams::down_end_pad(), 3, (1, 2, 7, 7, 9), 3);
        check(Conv3dParams { stride: [1, 2, 2], pad_before: [1, 0, 2], pad_after: [0, 1, 1] }, 3, (2, 2, 4, 6, 5), 3);
        check(Conv3dParams { stride: [2; 3], pad_before: [1; 3], pad_after: [1; 3] }, 3, (1, 2, 5, 8, 7), 2);
    }

    /// Planes at least 32 wide take conv3d_shifted.rs: "same" padding, uneven W padding, stride 2 in D only,
    /// a kernel 2 wide, and tiles cut mid-volume (the 1 M-float column budget is passed at 40 channels).
    #[test]
    fn wide_planes_match_direct_sum() {
        check(Conv3dParams::same(1), 3, (2, 2, 3, 4, 33), 3);
        check(Conv3dParams { stride: [2, 1, 1], pad_before: [1, 0, 2], pad_after: [0, 1, 0] }, 3, (1, 2, 4, 5, 34), 2);
        check(Conv3dParams { stride: [1; 3], pad_before: [0, 0, 1], pad_after: [0; 3] }, 2, (1, 1, 2, 3, 40), 2);
        check(Conv3dParams::same(1), 3, (1, 40, 6, 30, 34), 2);
    }

    #[test]
    fn mismatched_channels_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 3, 3, 3), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((1, 3, 3, 3, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(1, DType::F32, &dev).unwrap();
        assert!(conv3d(&x, &w, &b, Conv3dParams::same(1)).is_err());
    }
}
