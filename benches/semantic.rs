//! Semantic-encoder speed: ldae's direct depthwise 7×7 kernel against candle's grouped conv2d (the peer in this
//! process) and PyTorch (benches/semantic_torch.py, when a Python with torch is available: `LDAE_BENCH_PYTHON`,
//! default `python3`), at the paper's four ConvNeXt stage shapes for 128 slices, and the whole encoder at the paper
//! configuration for one scan (random weights). The ldae column is the channels-last kernel the encoder uses;
//! the channels-first one is printed above the table. Prints median milliseconds and ratios from one run.
//!
//! `cargo bench --bench semantic` (env `LDAE_BENCH_REPS`, default 5).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ldae::model::config::ModelConfig;
use ldae::model::keyset::{expected_keys, WeightsFile, ENCODER_BACKBONE_TWIN};
use ldae::model::ops::depthwise::{depthwise_conv2d, depthwise_conv2d_nhwc};
use ldae::model::semantic::SemanticEncoder;

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn torch_times(reps: usize, threads: usize) -> Option<HashMap<String, f64>> {
    let py = std::env::var("LDAE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/semantic_torch.py");
    let out = std::process::Command::new(&py).arg(script).arg(reps.to_string()).arg(threads.to_string()).output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).ok(),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            println!("PyTorch side unavailable ({py}): {}", err.lines().last().unwrap_or(""));
            None
        }
        Err(e) => {
            println!("PyTorch side unavailable ({py}: {e})");
            None
        }
    }
}

fn main() -> candle_core::Result<()> {
    let reps: usize = std::env::var("LDAE_BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let dev = Device::Cpu;
    println!("semantic encoder bench: {threads} threads, median of {reps}");
    let mut rows: Vec<(String, f64, Option<f64>)> = Vec::new();
    for (c, h, w) in [(96usize, 32usize, 40usize), (192, 16, 20), (384, 8, 10), (768, 4, 5)] {
        let x = Tensor::rand(0f32, 1f32, (128, c, h, w), &dev)?;
        let k = Tensor::randn(0f32, 1f32, (c, 1, 7, 7), &dev)?;
        let b = Tensor::randn(0f32, 1f32, c, &dev)?;
        let ours = median_ms(reps, || {
            let _ = depthwise_conv2d(&x, &k, &b, 3).expect("ldae depthwise");
        });
        let peer = median_ms(reps.min(3), || {
            let _ = x.conv2d(&k, 3, 1, 1, c).and_then(|y| y.broadcast_add(&b.reshape((1, c, 1, 1))?)).expect("candle");
        });
        let xl = x.permute((0, 2, 3, 1))?.contiguous()?;
        let nhwc = median_ms(reps, || {
            let _ = depthwise_conv2d_nhwc(&xl, &k, &b, 3).expect("ldae depthwise nhwc");
        });
        println!(
            "depthwise {c}x{h}x{w}: ldae channels-first {ours:.1} ms, channels-last (used by the encoder) {nhwc:.1} ms"
        );
        rows.push((format!("depthwise {c}x{h}x{w} (128 slices)"), nhwc, Some(peer)));
    }
    // Whole encoder at the paper configuration, random weights of the published shapes.
    let cfg = ModelConfig::paper();
    let keys = expected_keys(&cfg, WeightsFile::Encoder).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut map = HashMap::new();
    for (k, shape) in keys {
        if k.starts_with(ENCODER_BACKBONE_TWIN) {
            continue;
        }
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let t = if shape.len() == 1 && k.ends_with("weight") {
            (Tensor::randn(0f32, 0.2, shape.as_slice(), &dev)? + 1.0)?
        } else {
            Tensor::randn(0f32, (1.0 / fan_in as f32).sqrt(), shape.as_slice(), &dev)?
        };
        map.insert(k, t);
    }
    let enc = SemanticEncoder::new(VarBuilder::from_tensors(map, DType::F32, &dev), &cfg)?;
    let x = Tensor::rand(0f32, 1f32, (1, 1, 128, 128, 160), &dev)?;
    let enc_ms = median_ms((reps / 5).max(1), || {
        let _ = enc.forward(&x).expect("encoder");
    });
    rows.push(("semantic encoder, paper size, 1 scan".into(), enc_ms, None));

    let torch = torch_times(reps, threads);
    println!(
        "{:<40} {:>10} {:>12} {:>10} {:>14} {:>14}",
        "stage", "ldae ms", "candle ms", "torch ms", "candle/ldae", "ldae/torch"
    );
    for (name, ours, peer) in rows {
        let t = torch.as_ref().and_then(|m| m.get(&name).copied());
        let f = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        let r = |v: Option<f64>| v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
        println!(
            "{name:<40} {ours:>10.1} {:>12} {:>10} {:>14} {:>14}",
            f(peer),
            f(t),
            r(peer.map(|p| p / ours)),
            r(t.map(|t| ours / t))
        );
    }
    Ok(())
}
