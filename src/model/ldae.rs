//! The LDAE model as one object: load a model directory, encode a model-input volume to codes
//! (`y_sem`, DDIM-inverted `x_t`, AEKL `latent_mu`/`latent_logvar`), decode codes back to a volume, interpolate two
//! encodings, and manipulate one along a semantic direction (SPEC §5).
//!
//! Choices (SPEC §8.10): the latent is the posterior mean `mu` (deterministic), not the reference's sampled
//! `mu + sigma·eps`. `--dtype` f16/bf16 applies to the ShiftUNet (the 2·N network calls); the AEKL, the semantic
//! encoder and the DDIM arithmetic stay float32. slerp falls back to lerp when x_T of the two scans are
//! (anti)parallel (see [`interp::slerp`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::autoencoder::AutoencoderKl;
use super::config::ModelConfig;
use super::ddim::{DdimTables, Schedule};
use super::error::{Context, ModelError};
use super::interp;
use super::semantic::SemanticEncoder;
use super::unet::ShiftUnet;
use super::weights::{self, WeightsFile};

/// A scan's LDAE codes. All tensors carry a leading batch dimension of 1.
#[derive(Debug, Clone)]
pub struct Codes {
    /// Semantic code `[1, E]`.
    pub y_sem: Tensor,
    /// DDIM-inverted noise `[1, C, d, h, w]` (diffusion space, i.e. of the scaled latent).
    pub x_t: Tensor,
    /// AEKL posterior mean (unscaled) `[1, C, d, h, w]`.
    pub latent_mu: Tensor,
    /// AEKL clamped log-variance `[1, C, d, h, w]`.
    pub latent_logvar: Tensor,
}

impl Codes {
    /// Names used in code files.
    pub const NAMES: [&'static str; 4] = ["y_sem", "x_t", "latent_mu", "latent_logvar"];

    /// `(name, tensor)` pairs, in [`Codes::NAMES`] order.
    pub fn named(&self) -> [(&'static str, &Tensor); 4] {
        [
            ("y_sem", &self.y_sem),
            ("x_t", &self.x_t),
            ("latent_mu", &self.latent_mu),
            ("latent_logvar", &self.latent_logvar),
        ]
    }
}

/// Progress callback: `(stage, done, total)`.
pub type Progress<'a> = &'a dyn Fn(&str, usize, usize);

/// A loaded model.
#[derive(Debug)]
pub struct Ldae {
    cfg: ModelConfig,
    device: Device,
    dtype: DType,
    aekl: AutoencoderKl,
    encoder: SemanticEncoder,
    unet: ShiftUnet,
    schedule: Schedule,
}

impl Ldae {
    /// Load `dir` (config.json + the three weights files, `.safetensors` or `.pth`), with the ShiftUNet in
    /// `dtype` (f16/bf16 only on CUDA).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        if dtype != DType::F32 && device.is_cpu() {
            return Err(ModelError::Unsupported(format!("{dtype:?} on CPU (use f32, or --device cuda)")));
        }
        let cfg = weights::model_config(dir)
            .map_err(|e| ModelError::ModelDir { path: dir.into(), message: e.to_string() })?;
        let open = |f: WeightsFile| {
            weights::open_weights(dir, f, device)
                .map_err(|e| ModelError::ModelDir { path: dir.into(), message: e.to_string() })
        };
        let aekl =
            AutoencoderKl::new(open(WeightsFile::Autoencoder)?, &cfg.vae_args).ctx("building the AutoencoderKL")?;
        let encoder = SemanticEncoder::new(open(WeightsFile::Encoder)?, &cfg).ctx("building the semantic encoder")?;
        let unet = ShiftUnet::new(open(WeightsFile::Decoder)?.set_dtype(dtype), &cfg.unet_args, cfg.latent_dim())
            .ctx("building the ShiftUNet")?;
        let schedule = Schedule::new(&cfg.timesteps_args).map_err(ModelError::Unsupported)?;
        Ok(Ldae { cfg, device: device.clone(), dtype, aekl, encoder, unet, schedule })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model-input shape (X, Y, Z).
    pub fn input_shape(&self) -> [usize; 3] {
        self.cfg.data.resize_to
    }

    /// DDIM tables for `steps` steps.
    pub fn tables(&self, steps: usize) -> Result<DdimTables, ModelError> {
        DdimTables::new(&self.schedule, steps).map_err(ModelError::BadInput)
    }

    /// Check a model input `[1, 1, X, Y, Z]` (shape and finite values) and move it to the device.
    pub fn check_input(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let [sx, sy, sz] = self.input_shape();
        let want = [1, self.cfg.vae_args.in_channels, sx, sy, sz];
        if x.dims() != want {
            return Err(ModelError::BadInput(format!(
                "input shape {:?} is not the model input shape {:?} (run `ldae preprocess` first)",
                x.dims(),
                want
            )));
        }
        let f = 1usize << (self.cfg.vae_args.num_channels.len() - 1);
        let g = 1usize << (self.cfg.unet_args.channel_multiplier.len() - 1);
        if [sx, sy, sz].iter().any(|n| n % f != 0) || [sy / f, sz / f].iter().any(|n| n % g != 0) {
            return Err(ModelError::Unsupported(format!(
                "model input {:?}: the AEKL needs every axis divisible by {f} and the UNet the latent's last two by {g}",
                [sx, sy, sz]
            )));
        }
        let finite = x.flatten_all().and_then(|f| f.to_vec1::<f32>()).ctx("reading the input")?;
        if finite.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::BadInput("input contains NaN or infinite values".into()));
        }
        x.to_device(&self.device).ctx("moving the input to the device")
    }

    /// AEKL posterior of a model input: `(mu, logvar)`.
    pub fn latent(&self, x: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let p = self.aekl.encode(x).ctx("AutoencoderKL encode")?;
        Ok((p.mu, p.logvar))
    }

    /// y_sem of a model input `[N,1,X,Y,Z]` (permuted to the encoder's axial layout `[N,1,Z,X,Y]`).
    pub fn semantic(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let axial = x.permute((0, 1, 4, 2, 3)).and_then(|t| t.contiguous()).ctx("axial permute")?;
        self.encoder.forward(&axial).ctx("semantic encoder")
    }

    /// One ShiftUNet forward `(eps, shift)` at DDPM timestep `t` (float32 in and out, the network in its dtype).
    pub fn denoise(&self, x: &Tensor, t: f32, y: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let (eps, shift) = self.unet.forward(&x.to_dtype(self.dtype).ctx("cast")?, &[t], y).ctx("ShiftUNet forward")?;
        Ok((eps.to_dtype(DType::F32).ctx("cast")?, shift.to_dtype(DType::F32).ctx("cast")?))
    }

    /// DDIM inversion of a scaled latent `z0` with condition `y` (j = 0..N-1).
    pub fn invert(&self, z0: &Tensor, y: &Tensor, steps: usize, progress: Progress) -> Result<Tensor, ModelError> {
        let tables = self.tables(steps)?;
        let mut x = z0.clone();
        for j in 0..tables.steps() {
            let (eps, shift) = self.denoise(&x, tables.model_t(j), y)?;
            x = tables.invert_step(&x, &eps, &shift, j).ctx("DDIM inversion step")?;
            progress("invert", j + 1, tables.steps());
        }
        Ok(x)
    }

    /// DDIM sampling from `x_t` with condition `y` (j = N..1); returns the scaled latent.
    pub fn sample(&self, x_t: &Tensor, y: &Tensor, steps: usize, progress: Progress) -> Result<Tensor, ModelError> {
        let tables = self.tables(steps)?;
        let mut x = x_t.clone();
        for (k, j) in (1..=tables.steps()).rev().enumerate() {
            let (eps, shift) = self.denoise(&x, tables.model_t(j), y)?;
            x = tables.sample_step(&x, &eps, &shift, j).ctx("DDIM sampling step")?;
            progress("sample", k + 1, tables.steps());
        }
        Ok(x)
    }

    /// Scale an AEKL latent into diffusion space (`z · scale_factor`).
    pub fn scale(&self, z: &Tensor) -> Result<Tensor, ModelError> {
        (z * self.cfg.scale_factor as f64).ctx("latent scale")
    }

    /// Decode a diffusion-space latent to a volume `[1,1,X,Y,Z]` (`AEKL.decode(z / scale_factor)`).
    pub fn decode_latent(&self, z0: &Tensor) -> Result<Tensor, ModelError> {
        let z = (z0 / self.cfg.scale_factor as f64).ctx("latent unscale")?;
        self.aekl.decode(&z).ctx("AutoencoderKL decode")
    }

    /// Encode a model-input volume (its grid = the model's input shape) to codes; the one path the daemon's
    /// encode stage and the CLI share.
    pub fn encode_volume(
        &self,
        v: &crate::volume::Volume,
        steps: usize,
        progress: Progress,
    ) -> Result<Codes, ModelError> {
        self.encode(&super::tensor_volume::volume_tensor(v)?, steps, progress)
    }

    /// Encode a model input `[1,1,X,Y,Z]` to codes.
    pub fn encode(&self, x: &Tensor, steps: usize, progress: Progress) -> Result<Codes, ModelError> {
        let x = self.check_input(x)?;
        let (mu, logvar) = self.latent(&x)?;
        let y = self.semantic(&x)?;
        let x_t = self.invert(&self.scale(&mu)?, &y, steps, progress)?;
        Ok(Codes { y_sem: y, x_t, latent_mu: mu, latent_logvar: logvar })
    }

    /// Check that `y` and `x_t` fit this model (shapes) and move them to the device.
    pub fn check_codes(&self, y: &Tensor, x_t: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let e = self.cfg.latent_dim();
        if y.dims() != [1, e] {
            return Err(ModelError::BadInput(format!("y_sem has shape {:?}, the model expects [1, {e}]", y.dims())));
        }
        let [sx, sy, sz] = self.input_shape();
        let levels = self.cfg.vae_args.num_channels.len() - 1;
        let f = 1usize << levels;
        let want = [1, self.cfg.vae_args.latent_channels, sx / f, sy / f, sz / f];
        if x_t.dims() != want {
            return Err(ModelError::BadInput(format!("x_t has shape {:?}, the model expects {want:?}", x_t.dims())));
        }
        let dev = |t: &Tensor| t.to_dtype(DType::F32).and_then(|t| t.to_device(&self.device)).ctx("codes to device");
        Ok((dev(y)?, dev(x_t)?))
    }

    /// Decode codes: sample from `x_t` with `y_sem`, then AEKL decode → `[1,1,X,Y,Z]`.
    pub fn decode(&self, y: &Tensor, x_t: &Tensor, steps: usize, progress: Progress) -> Result<Tensor, ModelError> {
        let (y, x_t) = self.check_codes(y, x_t)?;
        let z0 = self.sample(&x_t, &y, steps, progress)?;
        self.decode_latent(&z0)
    }

    /// Interpolate two encodings: lerp of y_sem, slerp of x_t, then decode.
    pub fn interpolate(
        &self,
        a: (&Tensor, &Tensor),
        b: (&Tensor, &Tensor),
        alpha: f32,
        steps: usize,
        progress: Progress,
    ) -> Result<Tensor, ModelError> {
        if !alpha.is_finite() {
            return Err(ModelError::BadInput(format!("alpha {alpha} is not a finite number")));
        }
        let (ya, xa) = self.check_codes(a.0, a.1)?;
        let (yb, xb) = self.check_codes(b.0, b.1)?;
        let y = interp::lerp(&ya, &yb, alpha).ctx("lerp")?;
        let x = interp::slerp(&xa, &xb, alpha).ctx("slerp")?;
        self.decode(&y, &x, steps, progress)
    }

    /// Move `y_sem` along `direction` (normalised by `mean`/`std`) by `scale`, keep `x_t`, decode.
    #[allow(clippy::too_many_arguments)]
    pub fn manipulate(
        &self,
        y: &Tensor,
        x_t: &Tensor,
        mean: &Tensor,
        std: &Tensor,
        direction: &Tensor,
        scale: f32,
        steps: usize,
        progress: Progress,
    ) -> Result<Tensor, ModelError> {
        let e = self.cfg.latent_dim();
        for (name, t) in [("mean", mean), ("std", std), ("direction", direction)] {
            if t.elem_count() != e {
                return Err(ModelError::BadInput(format!("{name} has {} values, y_sem has {e}", t.elem_count())));
            }
        }
        if !scale.is_finite() {
            return Err(ModelError::BadInput(format!("scale {scale} is not a finite number")));
        }
        let (y, x_t) = self.check_codes(y, x_t)?;
        let d = |t: &Tensor| t.to_dtype(DType::F32).and_then(|t| t.to_device(&self.device)).ctx("to device");
        let y2 = interp::manipulate_y(&y, &d(mean)?, &d(std)?, &d(direction)?, scale).ctx("manipulate y_sem")?;
        self.decode(&y2, &x_t, steps, progress)
    }
}

/// A progress callback that does nothing.
pub fn no_progress(_: &str, _: usize, _: usize) {}
