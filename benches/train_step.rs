//! One training step of each LDAE stage — forward, backward, global-norm clip 1.0 and an Adam update — in ldae
//! (`ldae::model::train`) against the same step in PyTorch (benches/train_step_torch.py, the modules of
//! scripts/ldae_torch.py) on the same machine, configuration, weights, batch size (1) and thread count. Prints one
//! line per stage with both medians and the ratio torch/ldae (> 1: ldae is faster).
//!
//! Stages: `aekl` (SPEC §1a, L1 + 1e-7·KL on a sampled latent), `ddpm` (§1b, the epsilon path), `repr` (§1c,
//! semantic encoder + shift branch trained, epsilon path frozen).
//!
//! Run: `LDAE_BENCH_PYTHON=~/.cache/ldae-torch-venv/bin/python cargo bench --bench train_step` (that venv, or the
//! one scripts/bench-model.sh makes). Environment: `LDAE_BENCH_THREADS` (default 2), `LDAE_BENCH_REPS` (default
//! 3), `LDAE_BENCH_CONFIG` (a model config.json to use instead of the demo-like default), `LDAE_BENCH_DEVICE`
//! (`cpu` or `cuda`), `LDAE_BENCH_TORCH_SCRIPT` (where train_step_torch.py is, away from the source tree).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use ldae::model::config::ModelConfig;
use ldae::model::ddim::Schedule;
use ldae::model::keyset::WeightsFile;
use ldae::model::semantic::SemanticEncoder;
use ldae::model::train::optim::{Adam, AdamParams, Grads};
use ldae::model::train::{aekl, ddpm, params, repr};
use ldae::model::unet::ShiftUnet;

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// The demo model's recipe configuration (config/demo-model.json: 48×64×56 at 3 mm, the sizes weights/demo is
/// trained at by scripts/train-demo.sh).
fn demo_like_config() -> ModelConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/demo-model.json");
    ModelConfig::load(&path).expect("config/demo-model.json")
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

/// Reading one value forces completion on asynchronous devices.
fn sync(t: &Tensor) {
    let _ = t.flatten_all().and_then(|f| f.narrow(0, 0, 1)).and_then(|f| f.to_vec1::<f32>());
}

/// `(name, Var)` of `vm` for which `trained` holds, sorted.
fn trained(vm: &VarMap, trained: impl Fn(&str) -> bool) -> Vec<(String, Var)> {
    params::sorted_vars(vm).expect("vars").into_iter().filter(|(k, _)| trained(k)).collect()
}

/// Backward of `loss`, clip to norm 1, one Adam step.
fn update(loss: &Tensor, vars: &[(String, Var)], opt: &mut Adam) {
    let mut g = Grads::default();
    g.accumulate(vars, &loss.backward().expect("backward")).expect("grads");
    g.clip(1.0).expect("clip");
    opt.step(&g).expect("adam");
    sync(loss);
}

fn adam(vars: &[(String, Var)]) -> Adam {
    Adam::new(vars.to_vec(), AdamParams { lr: 2.5e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8 }).expect("adam")
}

fn main() {
    let threads: usize = env_or("LDAE_BENCH_THREADS", 2);
    let reps: usize = env_or("LDAE_BENCH_REPS", 3);
    let dev = match env_or("LDAE_BENCH_DEVICE", "cpu".to_string()).as_str() {
        "cuda" => Device::new_cuda(0).expect("CUDA device"),
        _ => Device::Cpu,
    };
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    let cfg = match std::env::var_os("LDAE_BENCH_CONFIG") {
        Some(p) => ModelConfig::load(&PathBuf::from(p)).expect("LDAE_BENCH_CONFIG"),
        None => demo_like_config(),
    };
    let dir = std::env::temp_dir().join(format!("ldae-bench-train-step-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).expect("json")).expect("config");
    let vm_a = params::init_varmap(&cfg, WeightsFile::Autoencoder, 1, &dev).expect("init aekl");
    let vm_e = params::init_varmap(&cfg, WeightsFile::Encoder, 2, &dev).expect("init encoder");
    let vm_d = params::init_varmap(&cfg, WeightsFile::Decoder, 3, &dev).expect("init decoder");
    for (vm, f) in [(&vm_a, WeightsFile::Autoencoder), (&vm_e, WeightsFile::Encoder), (&vm_d, WeightsFile::Decoder)] {
        params::save_published(vm, f, &dir.join(format!("{}.safetensors", f.stem()))).expect("save weights");
    }

    let [sx, sy, sz] = cfg.data.resize_to;
    let f = 1 << (cfg.vae_args.num_channels.len() - 1);
    let lat = (1, cfg.vae_args.latent_channels, sx / f, sy / f, sz / f);
    let x = Tensor::rand(0f32, 1f32, (1, 1, sx, sy, sz), &dev).expect("x");
    let eps = Tensor::randn(0f32, 1f32, lat, &dev).expect("eps");
    let z0 = Tensor::randn(0f32, 1f32, lat, &dev).expect("z0");
    let noise = Tensor::randn(0f32, 1f32, lat, &dev).expect("noise");
    let t = [500usize];
    let sched = Schedule::new(&cfg.timesteps_args).expect("schedule");
    println!(
        "ldae training-step benchmark: input {:?} at {} mm, latent {lat:?}, batch 1, {threads} threads, device {dev:?}",
        cfg.data.resize_to, cfg.data.pixdim
    );

    // (a) AEKL: every tensor trained.
    let ae = params::build_aekl(&vm_a, &cfg, &dev).expect("aekl");
    let va = trained(&vm_a, |_| true);
    let mut oa = adam(&va);
    let w = aekl::AeklLossWeights::default();
    let aekl_ms = median_ms(reps, || update(&aekl::loss(&ae, &x, &eps, &w).expect("aekl loss").total, &va, &mut oa));

    // (b) DDPM: the epsilon path trained, the shift branch unused.
    let unet = params::build_unet(&vm_d, &cfg, &dev).expect("unet");
    let vd = trained(&vm_d, |k| !params::is_shift_key(k));
    let mut od = adam(&vd);
    let ddpm_ms =
        median_ms(reps, || update(&ddpm::loss(&unet, &z0, &t, &noise, &sched).expect("ddpm loss"), &vd, &mut od));

    // (c) repr: encoder + shift branch trained; the epsilon path frozen (detached, no gradient tracked).
    let frozen = |k: &str| !params::is_shift_key(k);
    let vb = params::var_builder(&vm_d, &frozen, DType::F32, &dev).expect("frozen vb");
    let unet_r = ShiftUnet::new(vb, &cfg.unet_args, cfg.latent_dim()).expect("unet");
    let encoder: SemanticEncoder = params::build_encoder(&vm_e, &cfg, &dev).expect("encoder");
    let mut vr = trained(&vm_e, |k| !params::is_buffer_key(k));
    vr.extend(trained(&vm_d, params::is_shift_key));
    let mut or = adam(&vr);
    let x_axial = repr::axial(&x).expect("axial");
    let nets = repr::ReprNets { encoder: &encoder, unet: &unet_r };
    let repr_ms = median_ms(reps, || {
        update(&repr::loss(&nets, &x_axial, &z0, &t, &noise, &sched).expect("repr loss"), &vr, &mut or)
    });

    let py = std::env::var("LDAE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::env::var_os("LDAE_BENCH_TORCH_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/train_step_torch.py"));
    let torch_dev = if dev.is_cpu() { "cpu" } else { "cuda" };
    let out = Command::new(&py)
        .arg(&script)
        .arg(&dir)
        .args([threads.to_string(), reps.to_string(), torch_dev.to_string()])
        .output();
    let theirs: HashMap<String, f64> = match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or_default(),
        Ok(o) => {
            println!("PyTorch side failed ({py}): {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""));
            HashMap::new()
        }
        Err(e) => {
            println!("PyTorch side unavailable ({py}: {e}); set LDAE_BENCH_PYTHON to a python with torch");
            HashMap::new()
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    println!("{:<8} {:>12} {:>12} {:>14}", "stage", "ldae ms", "torch ms", "torch/ldae");
    for (name, ms) in [("aekl", aekl_ms), ("ddpm", ddpm_ms), ("repr", repr_ms)] {
        match theirs.get(name) {
            Some(t) => println!("{name:<8} {ms:>12.1} {t:>12.1} {:>13.2}x", t / ms),
            None => println!("{name:<8} {ms:>12.1} {:>12} {:>14}", "-", "-"),
        }
    }
}
