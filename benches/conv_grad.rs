//! conv3d forward + backward (dX, dW, db) through ldae's CPU kernels (`ops::conv3d`, im2col/col2im + gemm)
//! against the composed depth-folded conv2d path (`ops::conv3d_folded`, candle's autograd), on layer shapes
//! the networks use. Prints the median of each and the ratio composed/kernels (> 1: the kernels are faster).
//!
//! `cargo bench --bench conv_grad`. Environment: `LDAE_BENCH_THREADS` (rayon threads, default 2; candle's
//! own conv2d threads follow `RAYON_NUM_THREADS`), `LDAE_BENCH_REPS` (default 3).

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use ldae::model::ops::conv3d::{conv3d, conv3d_folded, Conv3dParams};

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

type Conv = fn(&Tensor, &Tensor, &Tensor, Conv3dParams) -> Result<Tensor>;

/// One forward + backward; returns the seconds and the gradients' total (so nothing is optimised away).
fn step(conv: Conv, x: &Var, w: &Var, b: &Var, r: &Tensor, p: Conv3dParams) -> Result<(f64, f32)> {
    let t = Instant::now();
    let y = conv(x.as_tensor(), w.as_tensor(), b.as_tensor(), p)?;
    let g = y.mul(r)?.sum_all()?.backward()?;
    let mut total = 0f32;
    for v in [x, w, b] {
        let gv = g.get(v.as_tensor()).ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?;
        total += gv.sum_all()?.to_scalar::<f32>()?;
    }
    Ok((t.elapsed().as_secs_f64(), total))
}

fn main() -> Result<()> {
    let threads: usize = env_or("LDAE_BENCH_THREADS", 2);
    let reps: usize = env_or("LDAE_BENCH_REPS", 3);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    let dev = Device::Cpu;
    // (what, input [N,C,D,H,W], output channels, params)
    let cases = [
        ("AEKL level-1 k3 same", [1, 32, 32, 48, 32], 32, Conv3dParams::same(1)),
        ("AEKL downsample k3 s2", [1, 32, 32, 48, 32], 32, Conv3dParams::down_end_pad()),
        ("ShiftUNet k3 same", [2, 128, 8, 12, 8], 128, Conv3dParams::same(1)),
    ];
    println!("conv3d fwd+bwd, {threads} threads, median of {reps}");
    for (what, dims, co, p) in cases {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, dims.as_slice(), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.05, (co, dims[1], 3, 3, 3), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, co, &dev)?)?;
        let r = conv3d(x.as_tensor(), w.as_tensor(), b.as_tensor(), p)?.randn_like(0.0, 1.0)?;
        let mut sums = [0f32; 2];
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..reps {
            for (i, conv) in [conv3d as Conv, conv3d_folded as Conv].into_iter().enumerate() {
                let (s, total) = step(conv, &x, &w, &b, &r, p)?;
                times[i].push(s);
                sums[i] = total;
            }
        }
        let (ours, composed) = (median(times[0].clone()), median(times[1].clone()));
        let agree = (sums[0] - sums[1]).abs() <= 1e-3 * sums[0].abs().max(sums[1].abs()).max(1.0);
        println!(
            "{what:<24} {dims:?}->{co}: kernels {:8.1} ms, composed {:8.1} ms, ratio {:5.2}x{}",
            ours * 1e3,
            composed * 1e3,
            composed / ours,
            if agree { "" } else { "  (GRADIENT SUMS DIFFER)" }
        );
    }
    Ok(())
}
