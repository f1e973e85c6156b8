//! LDAE stage timings against PyTorch on the same machine, same configuration, same random weights, same thread
//! count: AEKL encode, AEKL decode, semantic encoder, one ShiftUNet forward, full encode (AEKL + semantic + DDIM
//! inversion). Prints one line per stage with both medians and the ratio torch/ldae (> 1: ldae is faster).
//!
//! Run with `scripts/bench-model.sh` (installs torch in a private venv, builds in release, runs this), or
//! `cargo bench --bench model` with `LDAE_BENCH_PYTHON` pointing at a python that has torch, numpy, safetensors.
//! Environment: `LDAE_BENCH_THREADS` (default 2), `LDAE_BENCH_STEPS` (DDIM steps of the full encode, default 10),
//! `LDAE_BENCH_REPS` (default 3), `LDAE_BENCH_SIZE` (`mid`, default, or `paper` for the published sizes),
//! `LDAE_BENCH_DEVICE` (`cpu` or `cuda`), `LDAE_BENCH_DTYPE` (`f32`, `f16`, `bf16`; the ShiftUNet's, CUDA only),
//! `LDAE_BENCH_TORCH_SCRIPT` (where model_torch.py is, when the binary runs away from its source tree),
//! `LDAE_BENCH_STAGES` (a comma list of the stages to time on the ldae side, e.g. `semantic` under a profiler).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ldae::model::config::{ModelConfig, PerLevel};
use ldae::model::keyset::{expected_keys, WeightsFile};
use ldae::model::ldae::{no_progress, Ldae};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// A configuration that runs in minutes on 2 cores: the paper's architecture at about half its widths, a
/// 64×96×64 input (latent 8×12×8: H and W divisible by 4 for the UNet's two poolings) and 64 axial slices.
fn mid_config() -> ModelConfig {
    let mut c = ModelConfig::paper();
    c.vae_args.num_channels = vec![16, 32, 32, 32];
    c.vae_args.num_res_blocks = PerLevel::One(2);
    c.vae_args.norm_num_groups = 16;
    c.unet_args.base_channel = 128;
    c.unet_args.channel_multiplier = vec![1, 2, 3];
    c.unet_args.latent_dim = Some(256);
    c.enc_args.backbone_args.convnext_block_setting =
        Some(vec![(32, Some(64), 1), (64, Some(128), 1), (128, Some(256), 3), (256, None, 1)]);
    c.enc_args.emb_chans = 256;
    c.enc_args.seq_len = 64;
    c.data.resize_to = [64, 96, 64];
    c.data.pixdim = 3.0;
    c
}

/// Random weights with the fixtures' recipe: matrices N(0,1)/sqrt(fan_in), biases 0.1·N, norm weights 1+0.2·N,
/// ConvNeXt layer_scale 0.5+0.2·N; the positional-encoding buffer gets its formula.
fn random_tensor(name: &str, shape: &[usize], rng: &mut rand::rngs::StdRng, e: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let mut g = || -> f32 { StandardNormal.sample(rng) };
    let v: Vec<f32> = if name.ends_with("positional_encoding.pe") {
        let s = shape[1];
        let mut pe = vec![0f32; s * e];
        for k in 0..s {
            for i in (0..e).step_by(2) {
                let div = (-(i as f32) * (10000f32.ln() / e as f32)).exp();
                pe[k * e + i] = (k as f32 * div).sin();
                if i + 1 < e {
                    pe[k * e + i + 1] = (k as f32 * div).cos();
                }
            }
        }
        pe
    } else if shape.len() >= 2 {
        let fan_in = (n / shape[0]).max(1) as f32;
        (0..n).map(|_| g() / fan_in.sqrt()).collect()
    } else if name.ends_with("bias") {
        (0..n).map(|_| 0.1 * g()).collect()
    } else if name.ends_with("layer_scale") {
        (0..n).map(|_| 0.5 + 0.2 * g()).collect()
    } else {
        (0..n).map(|_| 1.0 + 0.2 * g()).collect()
    };
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn write_model_dir(dir: &Path, cfg: &ModelConfig) {
    std::fs::create_dir_all(dir).expect("bench dir");
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(cfg).expect("json")).expect("config");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for f in WeightsFile::ALL {
        let keys = expected_keys(cfg, f).expect("key set");
        let mut map: HashMap<String, Tensor> = HashMap::new();
        let mut twins = Vec::new();
        for (k, shape) in &keys {
            if let Some(rest) = k.strip_prefix("slice_distributed.module.backbone.") {
                twins.push((k.clone(), format!("backbone.backbone.{rest}")));
                continue;
            }
            map.insert(k.clone(), random_tensor(k, shape, &mut rng, cfg.enc_args.emb_chans));
        }
        for (twin, orig) in twins {
            let t = map[&orig].clone();
            map.insert(twin, t);
        }
        candle_core::safetensors::save(&map, dir.join(format!("{}.safetensors", f.stem()))).expect("save");
    }
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up (lazy packing, allocator)
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let threads: usize = env_or("LDAE_BENCH_THREADS", 2);
    let steps: usize = env_or("LDAE_BENCH_STEPS", 10);
    let reps: usize = env_or("LDAE_BENCH_REPS", 3);
    let size: String = env_or("LDAE_BENCH_SIZE", "mid".to_string());
    let device = match env_or("LDAE_BENCH_DEVICE", "cpu".to_string()).as_str() {
        "cuda" => Device::new_cuda(0).expect("CUDA device"),
        _ => Device::Cpu,
    };
    let dtype = match env_or("LDAE_BENCH_DTYPE", "f32".to_string()).as_str() {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => DType::F32,
    };
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    let cfg = if size == "paper" { ModelConfig::paper() } else { mid_config() };
    let dir = PathBuf::from(env_or(
        "LDAE_BENCH_DIR",
        std::env::temp_dir().join(format!("ldae-bench-{size}")).display().to_string(),
    ));
    if !dir.join("decoder.safetensors").is_file()
        || ldae::model::weights::model_config(&dir).ok().as_ref() != Some(&cfg)
    {
        eprintln!("writing random {size} model to {}", dir.display());
        write_model_dir(&dir, &cfg);
    }
    let model = Ldae::load(&dir, &device, dtype).expect("load bench model");
    let [sx, sy, sz] = cfg.data.resize_to;
    let x = Tensor::rand(0f32, 1f32, (1, 1, sx, sy, sz), &Device::Cpu).expect("input");
    let xd = x.to_device(&device).expect("to device");
    let sync = |t: &Tensor| {
        // Reading one value forces completion on asynchronous devices.
        let _ = t
            .flatten_all()
            .and_then(|f| f.narrow(0, 0, 1))
            .and_then(|f| f.to_dtype(DType::F32))
            .and_then(|f| f.to_vec1::<f32>());
    };
    let (mu, _) = model.latent(&xd).expect("latent");
    let y = model.semantic(&xd).expect("semantic");
    let z = model.scale(&mu).expect("scale");
    println!(
        "ldae model benchmark: size {size}, input {:?}, latent {:?}, y_sem {}, {threads} threads, {steps} DDIM steps, device {device:?}, dtype {dtype:?}",
        cfg.data.resize_to,
        mu.dims(),
        y.dim(1).unwrap_or(0)
    );
    type Stage<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let stages: Vec<Stage> = vec![
        ("aekl_encode", Box::new(|| sync(&model.latent(&xd).expect("enc").0))),
        ("aekl_decode", Box::new(|| sync(&model.decode_latent(&z).expect("dec")))),
        ("semantic", Box::new(|| sync(&model.semantic(&xd).expect("sem")))),
        ("unet_forward", Box::new(|| sync(&model.denoise(&z, 500.0, &y).expect("unet").0))),
        ("full_encode", Box::new(|| sync(&model.encode(&x, steps, &no_progress).expect("encode").x_t))),
    ];
    let only: Option<Vec<String>> =
        std::env::var("LDAE_BENCH_STAGES").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let ours: Vec<(&str, f64)> = stages
        .iter()
        .filter(|(name, _)| only.as_ref().is_none_or(|o| o.iter().any(|s| s == name)))
        .map(|(name, run)| (*name, median_ms(if *name == "full_encode" { reps.min(2) } else { reps }, &**run)))
        .collect();

    let py = std::env::var("LDAE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::env::var_os("LDAE_BENCH_TORCH_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/model_torch.py"));
    let torch_dev = if device.is_cpu() { "cpu" } else { "cuda" };
    let out = Command::new(&py)
        .arg(&script)
        .arg(&dir)
        .args([threads.to_string(), steps.to_string(), reps.to_string(), torch_dev.to_string()])
        .output();
    let theirs: HashMap<String, f64> = match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or_default(),
        Ok(o) => {
            println!("PyTorch side failed ({py}): {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""));
            HashMap::new()
        }
        Err(e) => {
            println!("PyTorch side unavailable ({py}: {e}); set LDAE_BENCH_PYTHON or run scripts/bench-model.sh");
            HashMap::new()
        }
    };
    println!("{:<14} {:>12} {:>12} {:>14}", "stage", "ldae ms", "torch ms", "torch/ldae");
    for (name, ms) in ours {
        match theirs.get(name) {
            Some(t) => println!("{name:<14} {ms:>12.1} {t:>12.1} {:>13.2}x", t / ms),
            None => println!("{name:<14} {ms:>12.1} {:>12} {:>14}", "-", "-"),
        }
    }
}
