//! A training run's configuration (`config/train-*.toml`): which stage, the network sizes (a model
//! `config.json`), the run length and schedule, Adam, EMA, validation and the stage's loss weights.
//!
//! Unknown keys are errors; every error names the file and the key. Relative paths are relative to the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::schedule::Schedule;
use super::{Stage, TrainError};

/// Arithmetic precision of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 everywhere.
    F32,
    /// bfloat16 forward with float32 master weights (CUDA only).
    Bf16,
    /// float16 forward with float32 master weights (CUDA only).
    F16,
}

/// Where to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// `[model]`: the network sizes.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model `config.json` (the reference's argument names). Ignored with `--init DIR`, whose config is used.
    pub config: PathBuf,
    /// Stage ddpm only: replace the model's `scale_factor` by 1 / (standard deviation of the training latents), as
    /// latent diffusion does for a newly trained autoencoder, and save it in the output `config.json`. Off for
    /// the published AEKL, whose factor (0.873) is fixed.
    #[serde(default)]
    pub rescale_latents: bool,
}

/// `[run]`: how long and how.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Optimiser steps in total (a resumed run continues to this count).
    pub steps: u64,
    /// Volumes per micro-batch.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Micro-batches per optimiser step (losses divided by this, gradients summed).
    #[serde(default = "one")]
    pub accumulate: usize,
    /// Seed of parameter initialisation, data order, noise and timesteps.
    #[serde(default = "seed")]
    pub seed: u64,
    /// Write a resumable checkpoint every this many steps (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Validate every this many steps (0: only at the end).
    #[serde(default)]
    pub validate_every: u64,
    /// Stop after this many validations without a better SSIM (0: never stop early).
    #[serde(default)]
    pub patience: u32,
    /// Volumes held out for validation (taken from the end of the sorted data list; 0: validate on the first
    /// training volume).
    #[serde(default)]
    pub val_count: usize,
    /// DDPM timestep of the one-step reconstruction that stages ddpm/repr validate with.
    #[serde(default = "val_t")]
    pub val_t: usize,
    #[serde(default = "cpu")]
    pub device: DeviceKind,
    #[serde(default = "f32p")]
    pub precision: Precision,
}

/// `[optim]`: Adam, clipping and EMA.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    pub lr: f64,
    #[serde(default = "b1")]
    pub beta1: f64,
    #[serde(default = "b2")]
    pub beta2: f64,
    #[serde(default = "adam_eps")]
    pub eps: f64,
    /// Global gradient-norm clip (0: none).
    #[serde(default = "clip")]
    pub grad_clip: f64,
    /// EMA decay of the saved copies (stages ddpm/repr; 0 saves the trained weights themselves).
    #[serde(default = "ema")]
    pub ema_decay: f64,
    /// Learning-rate schedule after the warm-up: constant, or cosine down to `min_lr_ratio · lr` at the last step.
    #[serde(default)]
    pub schedule: Schedule,
    /// Steps of linear warm-up from 0 to `lr` (0: none).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Where the cosine ends, as a fraction of `lr`.
    #[serde(default = "min_lr_ratio")]
    pub min_lr_ratio: f64,
}

/// `[aekl]`: generator loss weights of SPEC §1a.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AeklSection {
    #[serde(default = "kl")]
    pub kl_weight: f64,
    /// LPIPS-3D weight: must be 0 (the SqueezeNet LPIPS needs ImageNet-pretrained weights, not available offline).
    #[serde(default)]
    pub perceptual_weight: f64,
    /// PatchGAN LSGAN weight: must be 0 (the 3-D discriminator is not built in this version).
    #[serde(default)]
    pub adversarial_weight: f64,
}

impl Default for AeklSection {
    fn default() -> Self {
        AeklSection { kl_weight: kl(), perceptual_weight: 0.0, adversarial_weight: 0.0 }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Must match the subcommand (`ldae train aekl` refuses a ddpm file).
    pub stage: Stage,
    pub model: ModelSection,
    pub run: RunSection,
    pub optim: OptimSection,
    #[serde(default)]
    pub aekl: AeklSection,
}

fn min_lr_ratio() -> f64 {
    0.1
}
fn one() -> usize {
    1
}
fn seed() -> u64 {
    42
}
fn val_t() -> usize {
    100
}
fn cpu() -> DeviceKind {
    DeviceKind::Cpu
}
fn f32p() -> Precision {
    Precision::F32
}
fn b1() -> f64 {
    0.9
}
fn b2() -> f64 {
    0.999
}
fn adam_eps() -> f64 {
    1e-8
}
fn clip() -> f64 {
    1.0
}
fn ema() -> f64 {
    0.999
}
fn kl() -> f64 {
    1e-7
}

impl TrainConfig {
    /// Read and validate `path`; `model.config` is made absolute against the file's folder.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::Config { path: path.into(), reason: format!("reading: {e}") })?;
        let mut cfg = Self::parse(path, &text)?;
        if cfg.model.config.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            cfg.model.config = base.join(&cfg.model.config);
        }
        Ok(cfg)
    }

    /// Parse and validate TOML text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, TrainError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| TrainError::Config { path: path.into(), reason: e.to_string() })?;
        let cfg: TrainConfig = serde_path_to_error::deserialize(de).map_err(|e| TrainError::Config {
            path: path.into(),
            reason: format!("{}: {}", e.path(), e.inner().message()),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), TrainError> {
        let bad = |key: &str, why: &str| Err(TrainError::Config { path: path.into(), reason: format!("{key}: {why}") });
        let r = &self.run;
        if r.steps == 0 {
            return bad("run.steps", "must be at least 1");
        }
        if r.batch_size == 0 {
            return bad("run.batch_size", "must be at least 1");
        }
        if r.accumulate == 0 {
            return bad("run.accumulate", "must be at least 1");
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("optim.lr", "must be a positive number");
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            return bad("optim.beta1/beta2", "must be in [0, 1)");
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return bad("optim.eps", "must be a positive number");
        }
        if !(o.grad_clip.is_finite() && o.grad_clip >= 0.0) {
            return bad("optim.grad_clip", "must be >= 0 (0 disables clipping)");
        }
        if !(0.0..1.0).contains(&o.ema_decay) {
            return bad("optim.ema_decay", "must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&o.min_lr_ratio) {
            return bad("optim.min_lr_ratio", "must be in [0, 1]");
        }
        let a = &self.aekl;
        if !(a.kl_weight.is_finite() && a.kl_weight >= 0.0) {
            return bad("aekl.kl_weight", "must be >= 0");
        }
        if a.perceptual_weight != 0.0 {
            return bad(
                "aekl.perceptual_weight",
                "LPIPS-3D needs ImageNet-pretrained SqueezeNet weights, which cannot be had offline; set it to 0",
            );
        }
        if a.adversarial_weight != 0.0 {
            return bad(
                "aekl.adversarial_weight",
                "the 3-D PatchGAN discriminator is not built in this version of ldae; set it to 0",
            );
        }
        if r.device == DeviceKind::Cpu && r.precision != Precision::F32 {
            return bad("run.precision", "bf16/f16 autocast needs device = \"cuda\"; on CPU use \"f32\"");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
stage = "aekl"
[model]
config = "m.json"
[run]
steps = 3
[optim]
lr = 1e-3
"#;

    #[test]
    fn defaults_fill_in_and_bad_keys_are_named() {
        let c = TrainConfig::parse(Path::new("t.toml"), OK).unwrap();
        assert_eq!(c.stage, Stage::Aekl);
        assert_eq!(c.run.accumulate, 1);
        assert_eq!(c.optim.beta2, 0.999);
        assert_eq!(c.aekl.kl_weight, 1e-7);
        let e = TrainConfig::parse(Path::new("t.toml"), &OK.replace("steps = 3", "steps = 3\nstepz = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml: ") && e.contains("stepz"), "{e}");
        let e = TrainConfig::parse(Path::new("t.toml"), &format!("{OK}[aekl]\nperceptual_weight = 0.001\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("aekl.perceptual_weight") && e.contains("offline"), "{e}");
        let e = TrainConfig::parse(Path::new("t.toml"), &OK.replace("steps = 3", "steps = 3\nprecision = \"bf16\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("run.precision"), "{e}");
    }

    #[test]
    fn schedule_parses_and_is_checked() {
        assert_eq!(TrainConfig::parse(Path::new("t.toml"), OK).unwrap().optim.schedule, Schedule::Constant);
        let cos = OK.replace("lr = 1e-3", "lr = 1e-3\nschedule = \"cosine\"\nwarmup_steps = 5\nmin_lr_ratio = 0.2");
        let c = TrainConfig::parse(Path::new("t.toml"), &cos).unwrap();
        assert_eq!((c.optim.schedule, c.optim.warmup_steps, c.optim.min_lr_ratio), (Schedule::Cosine, 5, 0.2));
        let e = TrainConfig::parse(Path::new("t.toml"), &OK.replace("lr = 1e-3", "lr = 1e-3\nschedule = \"step\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("schedule"), "{e}");
        let e = TrainConfig::parse(Path::new("t.toml"), &cos.replace("0.2", "1.5")).unwrap_err().to_string();
        assert!(e.contains("optim.min_lr_ratio"), "{e}");
    }
}
