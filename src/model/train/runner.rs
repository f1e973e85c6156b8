//! The training loop shared by the three stages: data order, micro-batches with gradient accumulation, global
//! gradient clipping, Adam, EMA, validation (reconstruction SSIM) with early stopping, checkpoints every N steps
//! and `--resume`, a progress bar on stderr, and a JSON-lines log (`<out>/train-log.jsonl`).
//!
//! Randomness is a function of (seed, step, micro-batch): a resumed run draws what an uninterrupted run would
//! have drawn. Validation: stage aekl decodes the posterior mean; stages ddpm/repr reconstruct in one step from
//! `z_t` at the DDPM timestep `run.val_t` (a fixed noise per volume) with the current (not EMA) weights, decode
//! with the AEKL and compare with the input — a cheap stand-in for the reference's DDIM-100 reconstruction.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;

use super::aekl::{self, AeklLossWeights};
use super::checkpoint::{self, CheckpointState};
use super::config::{DeviceKind, Precision, TrainConfig};
use super::error::{Ctx, TrainError};
use super::optim::{Adam, AdamParams, Ema, Grads};
use super::params::{self, is_buffer_key, is_shift_key, var_builder};
use super::schedule::lr_at;
use super::{ddpm, repr, ssim, Stage};
use crate::model::autoencoder::AutoencoderKl;
use crate::model::config::ModelConfig;
use crate::model::ddim::Schedule;
use crate::model::keyset::WeightsFile;
use crate::model::semantic::SemanticEncoder;
use crate::model::unet::ShiftUnet;

/// How to run (from the command line).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output model directory (also holds the checkpoint and the log).
    pub out: PathBuf,
    /// Model directory to start from (its config.json, and the weights files this stage does not train or
    /// fine-tunes). Stages ddpm and repr need it (the AEKL that makes the latents; repr also the epsilon UNet).
    pub init: Option<PathBuf>,
    /// Continue from `<out>/checkpoint`.
    pub resume: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a run reports at the end (the CLI prints it; `--json` as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub stage: Stage,
    pub out: PathBuf,
    /// Step count at the start (0, or the checkpoint's with --resume) and at the end.
    pub start_step: u64,
    pub end_step: u64,
    /// The loss on a fixed batch (first training volumes, fixed noise/timesteps) before and after this run.
    pub fixed_loss_before: f64,
    pub fixed_loss_after: f64,
    /// Mean loss of the last step.
    pub last_loss: f64,
    pub last_ssim: Option<f64>,
    pub best_ssim: Option<f64>,
    pub stopped_early: bool,
    pub steps_per_s: f64,
    pub seconds: f64,
    pub train_volumes: usize,
    pub val_volumes: usize,
}

/// The files a stage trains.
fn trained_files(stage: Stage) -> &'static [WeightsFile] {
    match stage {
        Stage::Aekl => &[WeightsFile::Autoencoder],
        Stage::Ddpm => &[WeightsFile::Decoder],
        Stage::Repr => &[WeightsFile::Encoder, WeightsFile::Decoder],
    }
}

/// Whether `key` of `file` gets optimiser steps in `stage`.
fn is_trained(stage: Stage, file: WeightsFile, key: &str) -> bool {
    match (stage, file) {
        (Stage::Aekl, WeightsFile::Autoencoder) => true,
        (Stage::Ddpm, WeightsFile::Decoder) => !is_shift_key(key),
        (Stage::Repr, WeightsFile::Encoder) => !is_buffer_key(key),
        (Stage::Repr, WeightsFile::Decoder) => is_shift_key(key),
        _ => false,
    }
}

fn device(kind: DeviceKind) -> Result<Device, TrainError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => Device::new_cuda(0)
            .map_err(|e| TrainError::Unsupported(format!("run.device = \"cuda\": {e} (build with --features cuda)"))),
    }
}

fn dtype(p: Precision) -> DType {
    match p {
        Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
        Precision::F16 => DType::F16,
    }
}

fn randn(rng: &mut rand::rngs::StdRng, dims: &[usize], dev: &Device) -> Result<Tensor, TrainError> {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
    Tensor::from_vec(v, dims, dev).ctx("noise")
}

/// A generator for (seed, a, b): independent streams per step and micro-batch.
fn stream(seed: u64, a: u64, b: u64) -> rand::rngs::StdRng {
    let mix = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(17);
    rand::rngs::StdRng::seed_from_u64(mix)
}

/// The volume index at position `k` of the endless, per-epoch shuffled data order.
fn order_index(seed: u64, n: usize, k: u64) -> usize {
    let epoch = k / n as u64;
    let pos = (k % n as u64) as usize;
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng = stream(seed, 0xDA7A, epoch);
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        perm.swap(i, j);
    }
    perm[pos]
}

/// The weights of one model directory being trained.
struct Weights {
    cfg: ModelConfig,
    maps: HashMap<WeightsFile, VarMap>,
}

impl Weights {
    fn map(&self, f: WeightsFile) -> Result<&VarMap, TrainError> {
        self.maps.get(&f).ok_or_else(|| TrainError::Unsupported(format!("{f:?} weights missing")))
    }
}

/// The JSON-lines log.
struct Log(std::fs::File, PathBuf);

impl Log {
    fn open(path: PathBuf) -> Result<Self, TrainError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::File { path: path.clone(), reason: e.to_string() })?;
        Ok(Log(f, path))
    }

    fn event(&mut self, v: serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.0, "{v}").map_err(|e| TrainError::File { path: self.1.clone(), reason: e.to_string() })
    }
}

/// The networks of a step, built over the VarMaps in the forward dtype.
enum Nets {
    Aekl(Box<AutoencoderKl>),
    Ddpm(Box<ShiftUnet>),
    Repr(Box<SemanticEncoder>, Box<ShiftUnet>),
}

fn build_nets(stage: Stage, w: &Weights, dt: DType, dev: &Device) -> Result<Nets, TrainError> {
    let cfg = &w.cfg;
    let frozen = |f: WeightsFile| move |k: &str| !is_trained(stage, f, k);
    Ok(match stage {
        Stage::Aekl => {
            let f = WeightsFile::Autoencoder;
            let vb = var_builder(w.map(f)?, &frozen(f), dt, dev)?;
            Nets::Aekl(Box::new(AutoencoderKl::new(vb, &cfg.vae_args).ctx("building the AutoencoderKL")?))
        }
        Stage::Ddpm => {
            let f = WeightsFile::Decoder;
            let vb = var_builder(w.map(f)?, &frozen(f), dt, dev)?;
            Nets::Ddpm(Box::new(ShiftUnet::new(vb, &cfg.unet_args, cfg.latent_dim()).ctx("building the ShiftUNet")?))
        }
        Stage::Repr => {
            let (fe, fd) = (WeightsFile::Encoder, WeightsFile::Decoder);
            let enc = SemanticEncoder::new(var_builder(w.map(fe)?, &frozen(fe), dt, dev)?, cfg)
                .ctx("building the semantic encoder")?;
            let unet = ShiftUnet::new(var_builder(w.map(fd)?, &frozen(fd), dt, dev)?, &cfg.unet_args, cfg.latent_dim())
                .ctx("building the ShiftUNet")?;
            Nets::Repr(Box::new(enc), Box::new(unet))
        }
    })
}

/// Everything a micro-batch loss needs besides the networks.
struct Batches<'a> {
    x: &'a [Tensor],
    /// Scaled latents (stages ddpm/repr).
    z0: &'a [Tensor],
    latent_dims: [usize; 4],
    sched: &'a Schedule,
    weights: AeklLossWeights,
    dt: DType,
    dev: &'a Device,
}

impl Batches<'_> {
    /// The loss (f32 scalar) of the volumes `idx` with randomness from `rng`.
    fn loss(&self, nets: &Nets, idx: &[usize], rng: &mut rand::rngs::StdRng) -> Result<Tensor, TrainError> {
        let b = idx.len();
        let cast = |t: Tensor| t.to_dtype(self.dt).ctx("autocast");
        let cat = |v: &[Tensor]| -> Result<Tensor, TrainError> {
            let items: Vec<&Tensor> = idx.iter().map(|&i| &v[i]).collect();
            super::data::batch(&items, self.dev)
        };
        let [c, d, h, w] = self.latent_dims;
        let steps = self.sched.timesteps();
        let l = match nets {
            Nets::Aekl(ae) => {
                let x = cast(cat(self.x)?)?;
                let eps = cast(randn(rng, &[b, c, d, h, w], self.dev)?)?;
                aekl::loss(ae, &x, &eps, &self.weights)?.total
            }
            Nets::Ddpm(unet) => {
                let z0 = cast(cat(self.z0)?)?;
                let t: Vec<usize> = (0..b).map(|_| rng.random_range(0..steps)).collect();
                let noise = cast(randn(rng, z0.dims(), self.dev)?)?;
                ddpm::loss(unet, &z0, &t, &noise, self.sched)?
            }
            Nets::Repr(enc, unet) => {
                let x = cast(repr::axial(&cat(self.x)?)?)?;
                let z0 = cast(cat(self.z0)?)?;
                let t: Vec<usize> = (0..b).map(|_| rng.random_range(0..steps)).collect();
                let noise = cast(randn(rng, z0.dims(), self.dev)?)?;
                repr::loss(&repr::ReprNets { encoder: enc, unet }, &x, &z0, &t, &noise, self.sched)?
            }
        };
        l.to_dtype(DType::F32).ctx("loss")
    }
}

/// The standard deviation of sampled (unscaled) latents over the training volumes, each drawn with the stream the
/// training latents use, so the factor matches what training sees.
fn latent_std(ae: &AutoencoderKl, xs: &[Tensor], seed: u64, dev: &Device) -> Result<f64, TrainError> {
    let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
    for (i, x) in xs.iter().enumerate() {
        let p = ae.encode(x).ctx("AutoencoderKL encode")?;
        let mut rng = stream(seed, 0x1A7E, i as u64);
        let eps = randn(&mut rng, p.mu.dims(), dev)?;
        let z = (&p.mu + (p.sigma().ctx("sigma")? * eps).ctx("sample")?).ctx("sample")?;
        let v: Vec<f32> = z.flatten_all().and_then(|t| t.to_vec1()).ctx("latent statistics")?;
        for a in v {
            let a = a as f64;
            n += 1.0;
            sum += a;
            sq += a * a;
        }
    }
    let var = sq / n.max(1.0) - (sum / n.max(1.0)).powi(2);
    if !(var.is_finite() && var > 0.0) {
        return Err(TrainError::Unsupported(format!("the training latents have variance {var}: cannot rescale")));
    }
    Ok(var.sqrt())
}

fn scalar(t: &Tensor) -> Result<f64, TrainError> {
    t.to_dtype(DType::F32).and_then(|t| t.to_scalar::<f32>()).map(|v| v as f64).ctx("reading the loss")
}

/// The weights files of a fresh run: from `init` (key-checked) or freshly initialised.
fn initial_weights(
    cfg: &ModelConfig,
    init: Option<&Path>,
    seed: u64,
    dev: &Device,
) -> Result<HashMap<WeightsFile, VarMap>, TrainError> {
    let mut maps = HashMap::new();
    for f in WeightsFile::ALL {
        let vm = match init {
            Some(dir) => params::varmap_from_model_dir(dir, f, cfg, dev)?,
            None => params::init_varmap(cfg, f, seed, dev)?,
        };
        maps.insert(f, vm);
    }
    Ok(maps)
}

fn named(prefix_of: impl Fn(WeightsFile) -> &'static str, f: WeightsFile, k: &str) -> String {
    format!("{}/{k}", prefix_of(f))
}

/// Run one training stage on in-memory model inputs (`[1,1,X,Y,Z]` each); writes `opts.out`.
pub fn train(cfg: &TrainConfig, inputs: Vec<Tensor>, opts: &RunOptions) -> Result<Summary, TrainError> {
    let stage = cfg.stage;
    let dev = device(cfg.run.device)?;
    let dt = dtype(cfg.run.precision);
    if dt != DType::F32 && dev.is_cpu() {
        return Err(TrainError::Unsupported("bf16/f16 autocast needs CUDA; use precision = \"f32\" on CPU".into()));
    }
    if stage != Stage::Aekl && opts.init.is_none() && !opts.resume {
        return Err(TrainError::Unsupported(format!(
            "stage {stage} needs --init MODEL_DIR: the trained AutoencoderKL that makes the latents{}",
            if stage == Stage::Repr { " and the stage-ddpm UNet (epsilon path)" } else { "" }
        )));
    }
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| TrainError::File { path: opts.out.clone(), reason: e.to_string() })?;
    let model_cfg = match &opts.init {
        Some(dir) => crate::model::weights::model_config(dir)
            .map_err(|e| TrainError::File { path: dir.clone(), reason: e.to_string() })?,
        None => ModelConfig::load(&cfg.model.config)
            .map_err(|e| TrainError::Config { path: cfg.model.config.clone(), reason: e.to_string() })?,
    };
    let cfg_json = serde_json::to_value(cfg).map_err(|e| TrainError::Unsupported(e.to_string()))?;
    let mut model_json = serde_json::to_value(&model_cfg).map_err(|e| TrainError::Unsupported(e.to_string()))?;
    let rescale = cfg.model.rescale_latents;
    if rescale && stage != Stage::Ddpm {
        return Err(TrainError::Unsupported("[model] rescale_latents applies to stage ddpm only".into()));
    }

    // Weights, optimiser and EMA state: fresh or from the checkpoint.
    let loaded = if opts.resume { Some(checkpoint::load(&opts.out, &dev)?) } else { None };
    let init_maps = initial_weights(&model_cfg, opts.init.as_deref(), cfg.run.seed, &dev)?;
    let weights = Weights { cfg: model_cfg.clone(), maps: init_maps };
    let stem = |f: WeightsFile| f.stem();
    if let Some(l) = &loaded {
        if l.state.stage != stage {
            return Err(TrainError::Unsupported(format!(
                "{}: the checkpoint is of stage {}, not {stage}",
                checkpoint::checkpoint_dir(&opts.out).display(),
                l.state.stage
            )));
        }
        // A rescaled run's checkpoint holds the factor it measured; the same data and seed measure it again below.
        let mut theirs = l.state.model_config.clone();
        if rescale {
            theirs["scale_factor"] = model_json["scale_factor"].clone();
        }
        if theirs != model_json {
            return Err(TrainError::Unsupported(format!(
                "{}: the checkpoint's model configuration differs from this run's",
                checkpoint::checkpoint_dir(&opts.out).display()
            )));
        }
        for &f in trained_files(stage) {
            for (k, var) in params::sorted_vars(weights.map(f)?)? {
                let t = l
                    .params
                    .get(&named(stem, f, &k))
                    .ok_or_else(|| TrainError::Unsupported(format!("checkpoint lacks {}", named(stem, f, &k))))?;
                var.set(t).ctx("restoring a parameter")?;
            }
        }
    }
    let mut trained = Vec::new();
    for &f in trained_files(stage) {
        for (k, var) in params::sorted_vars(weights.map(f)?)? {
            if is_trained(stage, f, &k) {
                trained.push((named(stem, f, &k), var));
            }
        }
    }
    let hp = AdamParams { lr: cfg.optim.lr, beta1: cfg.optim.beta1, beta2: cfg.optim.beta2, eps: cfg.optim.eps };
    let mut adam = Adam::new(trained.clone(), hp)?;
    let ema_decay = if stage == Stage::Aekl { 0.0 } else { cfg.optim.ema_decay };
    let mut ema = Ema::new(&trained, ema_decay)?;
    let (mut best, mut bad) = (None::<f64>, 0u32);
    let start_step = match &loaded {
        Some(l) => {
            adam.load_state(&l.adam, l.state.step)?;
            for (k, e) in ema.shadow.iter_mut() {
                *e = l
                    .ema
                    .get(k)
                    .cloned()
                    .ok_or_else(|| TrainError::Unsupported(format!("checkpoint lacks EMA {k}")))?;
            }
            best = l.state.best_ssim;
            bad = l.state.bad_validations;
            l.state.step
        }
        None => 0,
    };

    // Data and, for ddpm/repr, the latents from the (frozen) AEKL: sampled once per volume, times the scale.
    let (train_x, val_x) = super::data::split(inputs, cfg.run.val_count)?;
    let to_dev = |v: Vec<Tensor>| -> Result<Vec<Tensor>, TrainError> {
        v.into_iter().map(|t| t.to_device(&dev).ctx("moving data")).collect()
    };
    let (train_x, val_x) = (to_dev(train_x)?, to_dev(val_x)?);
    let frozen_ae = AutoencoderKl::new(
        var_builder(weights.map(WeightsFile::Autoencoder)?, &|_| true, DType::F32, &dev)?,
        &model_cfg.vae_args,
    )
    .ctx("building the AutoencoderKL")?;
    let mut scale = model_cfg.scale_factor as f64;
    if rescale {
        scale = 1.0 / latent_std(&frozen_ae, &train_x, cfg.run.seed, &dev)?;
        model_json["scale_factor"] = serde_json::json!(scale as f32);
    }
    let latents = |xs: &[Tensor], salt: u64| -> Result<Vec<Tensor>, TrainError> {
        xs.iter()
            .enumerate()
            .map(|(i, x)| {
                let p = frozen_ae.encode(x).ctx("AutoencoderKL encode")?;
                let mut rng = stream(cfg.run.seed, salt, i as u64);
                let eps = randn(&mut rng, p.mu.dims(), &dev)?;
                let z = (&p.mu + (p.sigma().ctx("sigma")? * eps).ctx("sample")?).ctx("sample")?;
                (z * scale).ctx("scale")
            })
            .collect()
    };
    let (train_z, val_z) = if stage == Stage::Aekl {
        (Vec::new(), Vec::new())
    } else {
        (latents(&train_x, 0x1A7E)?, latents(&val_x, 0x7A1E)?)
    };
    let latent_dims = {
        let p = frozen_ae.encode(&train_x[0]).ctx("AutoencoderKL encode")?;
        let (_, c, d, h, w) = p.mu.dims5().ctx("latent")?;
        [c, d, h, w]
    };
    let sched = Schedule::new(&model_cfg.timesteps_args).map_err(TrainError::Unsupported)?;
    let batches = Batches {
        x: &train_x,
        z0: &train_z,
        latent_dims,
        sched: &sched,
        weights: AeklLossWeights { kl: cfg.aekl.kl_weight, perceptual: 0.0, adversarial: 0.0 },
        dt,
        dev: &dev,
    };
    let bs = cfg.run.batch_size.min(train_x.len());
    let fixed_idx: Vec<usize> = (0..bs).collect();
    let fixed_loss = |nets: &Nets| -> Result<f64, TrainError> {
        let mut rng = stream(cfg.run.seed, 0xF1CED, 0);
        scalar(&batches.loss(nets, &fixed_idx, &mut rng)?.detach())
    };

    let mut log = Log::open(opts.out.join("train-log.jsonl"))?;
    log.event(serde_json::json!({
        "event": "start", "stage": stage, "step": start_step, "steps": cfg.run.steps, "resume": opts.resume,
        "train_volumes": train_x.len(), "val_volumes": val_x.len(), "config": cfg_json,
    }))?;
    let fixed_before = fixed_loss(&build_nets(stage, &weights, dt, &dev)?)?;

    let bar = if opts.progress {
        let pb = indicatif::ProgressBar::new(cfg.run.steps);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} loss {msg} {per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_prefix(format!("train {stage}"));
        pb.set_position(start_step);
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };

    let validate = |nets: &Nets| -> Result<f64, TrainError> {
        let mut total = 0f64;
        for (i, x) in val_x.iter().enumerate() {
            let recon = match nets {
                Nets::Aekl(ae) => {
                    let p = ae.encode(&x.to_dtype(dt).ctx("autocast")?).ctx("validation encode")?;
                    ae.decode(&p.mu).ctx("validation decode")?
                }
                Nets::Ddpm(_) | Nets::Repr(..) => {
                    let z0 = &val_z[i];
                    let t = [cfg.run.val_t.min(sched.timesteps() - 1)];
                    let mut rng = stream(cfg.run.seed, 0x5A1, i as u64);
                    let noise = randn(&mut rng, z0.dims(), &dev)?;
                    let z_t = ddpm::q_sample(z0, &t, &noise, &sched)?;
                    let tf = [t[0] as f32];
                    let eps = match nets {
                        Nets::Ddpm(u) => u.forward_eps(&z_t.to_dtype(dt).ctx("autocast")?, &tf).ctx("validation")?,
                        Nets::Repr(enc, u) => {
                            let xa = repr::axial(x)?.to_dtype(dt).ctx("autocast")?;
                            let (eps, g, _) = repr::predict(
                                &repr::ReprNets { encoder: enc, unet: u },
                                &xa,
                                &z0.to_dtype(dt).ctx("autocast")?,
                                &t,
                                &noise.to_dtype(dt).ctx("autocast")?,
                                &sched,
                            )?;
                            let c = sched.shift_coef[t[0]] as f64;
                            (eps + (g * c).ctx("shift")?).ctx("shift")?
                        }
                        Nets::Aekl(_) => unreachable!("handled above"),
                    };
                    let z0_hat = ddpm::predict_z0(&z_t, &t, &eps.to_dtype(DType::F32).ctx("autocast")?, &sched)?;
                    frozen_ae.decode(&(z0_hat / scale).ctx("unscale")?).ctx("validation decode")?
                }
            };
            let (_, _, sx, sy, sz) = x.dims5().ctx("validation")?;
            let a: Vec<f32> =
                recon.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).ctx("validation")?;
            let b: Vec<f32> = x.flatten_all().and_then(|t| t.to_vec1()).ctx("validation")?;
            total += ssim::ssim3d(&a, &b, [sx, sy, sz], 1.0).ok_or_else(|| {
                TrainError::Unsupported(format!("validation SSIM needs every axis >= 7, the input is {sx}x{sy}x{sz}"))
            })?;
        }
        Ok(total / val_x.len() as f64)
    };

    let save_all = |state: &CheckpointState, adam: &Adam, ema: &Ema| -> Result<(), TrainError> {
        // Checkpoint: all tensors of the trained files, EMA shadows, Adam moments.
        let mut p = HashMap::new();
        for &f in trained_files(stage) {
            for (k, var) in params::sorted_vars(weights.map(f)?)? {
                p.insert(named(stem, f, &k), var.as_tensor().detach());
            }
        }
        let e: HashMap<String, Tensor> = ema.shadow.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        let a: HashMap<String, Tensor> = adam.state_tensors().into_iter().collect();
        checkpoint::save(&opts.out, state, &p, &e, &a)?;
        // Model directory: the trained files as their EMA copies (AEKL: the trained weights), others as loaded.
        for f in WeightsFile::ALL {
            let mut t = params::published_tensors(weights.map(f)?, f)?;
            if trained_files(stage).contains(&f) && ema.decay > 0.0 {
                for (k, v) in t.iter_mut() {
                    let key = if f == WeightsFile::Encoder {
                        k.replace(crate::model::keyset::ENCODER_BACKBONE_TWIN, crate::model::keyset::ENCODER_BACKBONE)
                    } else {
                        k.clone()
                    };
                    if let Some(s) = ema.shadow.get(&named(stem, f, &key)) {
                        *v = s.to_device(&Device::Cpu).ctx("EMA copy")?;
                    }
                }
            }
            params::save_tensors(&t, &opts.out.join(format!("{}.safetensors", f.stem())))?;
        }
        let cpath = opts.out.join("config.json");
        let text = serde_json::to_string_pretty(&model_json)
            .map_err(|e| TrainError::File { path: cpath.clone(), reason: e.to_string() })?;
        crate::nifti::write_atomic(&cpath, text.as_bytes())
            .map_err(|e| TrainError::File { path: cpath.clone(), reason: e.to_string() })?;
        // A stale manifest would fail `ldae weights check`.
        let _ = std::fs::remove_file(opts.out.join(crate::model::manifest::MANIFEST));
        Ok(())
    };

    let started = Instant::now();
    let n = train_x.len();
    let accum = cfg.run.accumulate;
    let mut step = start_step;
    let mut last_loss = f64::NAN;
    let mut last_ssim = None;
    let mut stopped_early = false;
    while step < cfg.run.steps {
        let nets = build_nets(stage, &weights, dt, &dev)?;
        let mut grads = Grads::default();
        let mut loss_sum = 0f64;
        for micro in 0..accum {
            let k0 = (step * accum as u64 + micro as u64) * bs as u64;
            let idx: Vec<usize> = (0..bs as u64).map(|j| order_index(cfg.run.seed, n, k0 + j)).collect();
            let mut rng = stream(cfg.run.seed, step + 1, micro as u64);
            let l = (batches.loss(&nets, &idx, &mut rng)? / accum as f64).ctx("loss")?;
            loss_sum += scalar(&l)?;
            grads.accumulate(adam.vars(), &l.backward().ctx("backward")?)?;
        }
        if !loss_sum.is_finite() {
            return Err(TrainError::Unsupported(format!(
                "step {}: the loss is {loss_sum} (lower optim.lr?)",
                step + 1
            )));
        }
        let norm = grads.clip(cfg.optim.grad_clip)?;
        let o = &cfg.optim;
        let lr = lr_at(o.schedule, o.lr, o.warmup_steps, o.min_lr_ratio, step + 1, cfg.run.steps);
        adam.set_lr(lr);
        adam.step(&grads)?;
        ema.update(adam.vars())?;
        step += 1;
        last_loss = loss_sum;
        let elapsed = started.elapsed().as_secs_f64();
        let rate = (step - start_step) as f64 / elapsed.max(1e-9);
        log.event(serde_json::json!({
            "event": "step", "step": step, "loss": loss_sum, "grad_norm": norm, "lr": lr,
            "steps_per_s": rate, "elapsed_s": elapsed,
        }))?;
        bar.set_message(format!("{loss_sum:.5}"));
        bar.set_position(step);
        let at = |every: u64| every > 0 && step % every == 0;
        let last = step == cfg.run.steps;
        if at(cfg.run.validate_every) || last {
            let s = validate(&build_nets(stage, &weights, dt, &dev)?)?;
            last_ssim = Some(s);
            if best.is_none_or(|b| s > b + 1e-6) {
                best = Some(s);
                bad = 0;
            } else {
                bad += 1;
            }
            log.event(serde_json::json!({"event": "val", "step": step, "ssim": s, "best_ssim": best, "bad": bad}))?;
            if cfg.run.patience > 0 && bad >= cfg.run.patience {
                stopped_early = true;
            }
        }
        if at(cfg.run.checkpoint_every) || last || stopped_early {
            let state = CheckpointState {
                stage,
                step,
                best_ssim: best,
                bad_validations: bad,
                config: cfg_json.clone(),
                model_config: model_json.clone(),
            };
            save_all(&state, &adam, &ema)?;
            log.event(serde_json::json!({"event": "checkpoint", "step": step}))?;
        }
        if stopped_early {
            log.event(serde_json::json!({"event": "early_stop", "step": step, "patience": cfg.run.patience}))?;
            break;
        }
    }
    bar.finish_and_clear();
    if step == start_step {
        // Nothing to do (a resumed run already at its step count): still leave a complete model directory.
        let state = CheckpointState {
            stage,
            step,
            best_ssim: best,
            bad_validations: bad,
            config: cfg_json.clone(),
            model_config: model_json.clone(),
        };
        save_all(&state, &adam, &ema)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let fixed_after = fixed_loss(&build_nets(stage, &weights, dt, &dev)?)?;
    let summary = Summary {
        stage,
        out: opts.out.clone(),
        start_step,
        end_step: step,
        fixed_loss_before: fixed_before,
        fixed_loss_after: fixed_after,
        last_loss,
        last_ssim,
        best_ssim: best,
        stopped_early,
        steps_per_s: (step - start_step) as f64 / seconds.max(1e-9),
        seconds,
        train_volumes: train_x.len(),
        val_volumes: val_x.len(),
    };
    log.event(serde_json::json!({"event": "end", "summary": summary}))?;
    Ok(summary)
}
