//! A model directory's `config.json`: the reference's hyper-parameter names (`vae_args`, `unet_args`,
//! `enc_args`, `timesteps_args`) plus `scale_factor` and `data` (SPEC §7, fixtures' README).
//!
//! Every network size comes from here; nothing in `model/` hard-codes the paper configuration except
//! [`ModelConfig::paper`], which is the published one and the default for a model directory without a config.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a model config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {key}: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// An integer or one integer per level (MONAI accepts both for `num_res_blocks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerLevel {
    One(usize),
    Each(Vec<usize>),
}

impl PerLevel {
    /// The value for each of `levels` levels.
    pub fn expand(&self, levels: usize) -> Vec<usize> {
        match self {
            PerLevel::One(n) => vec![*n; levels],
            PerLevel::Each(v) => v.clone(),
        }
    }
}

/// AutoencoderKL hyper-parameters (monai-generative names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeArgs {
    pub spatial_dims: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_channels: Vec<usize>,
    pub latent_channels: usize,
    pub num_res_blocks: PerLevel,
    pub norm_num_groups: usize,
    pub attention_levels: Vec<bool>,
    #[serde(default)]
    pub with_encoder_nonlocal_attn: bool,
    #[serde(default)]
    pub with_decoder_nonlocal_attn: bool,
    /// GroupNorm epsilon (monai-generative default 1e-6; not in the YAML).
    #[serde(default = "default_vae_eps")]
    pub norm_eps: f64,
}

fn default_vae_eps() -> f64 {
    1e-6
}

/// ShiftUNet hyper-parameters (the reference's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnetArgs {
    pub input_channel: usize,
    pub base_channel: usize,
    pub channel_multiplier: Vec<usize>,
    pub num_residual_blocks_of_a_block: usize,
    pub attention_resolutions: Vec<usize>,
    pub num_heads: usize,
    #[serde(default = "minus_one")]
    pub head_channel: i64,
    #[serde(default)]
    pub use_new_attention_order: bool,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "three")]
    pub dims: usize,
    /// Width of y_sem fed to `label_emb`; defaults to `enc_args.emb_chans` when absent.
    #[serde(default)]
    pub latent_dim: Option<usize>,
}

fn minus_one() -> i64 {
    -1
}
fn three() -> usize {
    3
}

/// ConvNeXt backbone arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneArgs {
    pub net_class_path: String,
    #[serde(default)]
    pub weights: Option<String>,
    #[serde(default)]
    pub freeze_perc: f64,
    #[serde(default = "yes")]
    pub grayscale: bool,
    /// `[input_channels, out_channels_of_the_downsample_after_this_stage or null, num_blocks]` per stage;
    /// absent for torchvision's convnext_small (the paper).
    #[serde(default)]
    pub convnext_block_setting: Option<Vec<(usize, Option<usize>, usize)>>,
    #[serde(default)]
    pub convnext_stochastic_depth_prob: Option<f64>,
}

fn yes() -> bool {
    true
}

/// Semantic encoder arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncArgs {
    pub backbone_args: BackboneArgs,
    pub emb_chans: usize,
    pub seq_len: usize,
    #[serde(default = "eight")]
    pub num_heads: usize,
    #[serde(default)]
    pub attn_dropout: f64,
}

fn eight() -> usize {
    8
}

/// Diffusion schedule arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimestepsArgs {
    pub timesteps: usize,
    pub betas_type: String,
}

/// Loader parameters: the model input's spacing and shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataArgs {
    /// Isotropic voxel size of the model input, mm.
    pub pixdim: f64,
    /// Model input shape (X, Y, Z).
    pub resize_to: [usize; 3],
    #[serde(default = "axial")]
    pub slicing_plane: String,
    #[serde(default)]
    pub fake_3d: bool,
}

fn axial() -> String {
    "axial".into()
}

/// One convnext stage: width, blocks, and the width after the downsample that follows (None for the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvNextStage {
    pub dim: usize,
    pub depth: usize,
    pub next_dim: Option<usize>,
}

/// The whole `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vae_args: VaeArgs,
    pub unet_args: UnetArgs,
    pub enc_args: EncArgs,
    pub timesteps_args: TimestepsArgs,
    /// Latent scale (hard-coded 0.8730 in the reference).
    #[serde(default = "scale")]
    pub scale_factor: f32,
    pub data: DataArgs,
    /// Anything else (the fixtures' `fixture` block, a model's name/version) is kept, not interpreted.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn scale() -> f32 {
    0.873
}

impl ModelConfig {
    /// The published (paper) configuration, SPEC's table.
    pub fn paper() -> Self {
        ModelConfig {
            vae_args: VaeArgs {
                spatial_dims: 3,
                in_channels: 1,
                out_channels: 1,
                num_channels: vec![64, 128, 128, 128],
                latent_channels: 3,
                num_res_blocks: PerLevel::One(2),
                norm_num_groups: 32,
                attention_levels: vec![false; 4],
                with_encoder_nonlocal_attn: false,
                with_decoder_nonlocal_attn: false,
                norm_eps: 1e-6,
            },
            unet_args: UnetArgs {
                input_channel: 3,
                base_channel: 256,
                channel_multiplier: vec![1, 2, 3],
                num_residual_blocks_of_a_block: 2,
                attention_resolutions: vec![2, 4],
                num_heads: 1,
                head_channel: -1,
                use_new_attention_order: false,
                dropout: 0.1,
                dims: 3,
                latent_dim: Some(768),
            },
            enc_args: EncArgs {
                backbone_args: BackboneArgs {
                    net_class_path: "torchvision.models.convnext_small".into(),
                    weights: Some("ConvNeXt_Small_Weights.DEFAULT".into()),
                    freeze_perc: 0.0,
                    grayscale: true,
                    convnext_block_setting: None,
                    convnext_stochastic_depth_prob: None,
                },
                emb_chans: 768,
                seq_len: 128,
                num_heads: 8,
                attn_dropout: 0.1,
            },
            timesteps_args: TimestepsArgs { timesteps: 1000, betas_type: "linear".into() },
            scale_factor: 0.873,
            data: DataArgs { pixdim: 1.5, resize_to: [128, 160, 128], slicing_plane: "axial".into(), fake_3d: true },
            extra: Default::default(),
        }
    }

    /// Read and validate `dir/config.json`.
    pub fn load(path: &Path) -> Result<Self, ModelConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ModelConfigError::Io { path: path.to_path_buf(), source })?;
        Self::from_json_str(path, &text)
    }

    /// Parse and validate JSON text (`path` for errors).
    pub fn from_json_str(path: &Path, text: &str) -> Result<Self, ModelConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let cfg: ModelConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| ModelConfigError::Invalid {
            path: path.to_path_buf(),
            key: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// ConvNeXt stages: the explicit block setting, or torchvision convnext_small's.
    pub fn convnext_stages(&self) -> Vec<ConvNextStage> {
        match &self.enc_args.backbone_args.convnext_block_setting {
            Some(s) => s.iter().map(|&(dim, next_dim, depth)| ConvNextStage { dim, depth, next_dim }).collect(),
            None => vec![
                ConvNextStage { dim: 96, depth: 3, next_dim: Some(192) },
                ConvNextStage { dim: 192, depth: 3, next_dim: Some(384) },
                ConvNextStage { dim: 384, depth: 27, next_dim: Some(768) },
                ConvNextStage { dim: 768, depth: 3, next_dim: None },
            ],
        }
    }

    /// Width of y_sem.
    pub fn latent_dim(&self) -> usize {
        self.unet_args.latent_dim.unwrap_or(self.enc_args.emb_chans)
    }

    /// Check what the types cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ModelConfigError> {
        let bad = |key: &str, message: String| {
            Err(ModelConfigError::Invalid { path: path.to_path_buf(), key: key.into(), message })
        };
        let v = &self.vae_args;
        if v.spatial_dims != 3 {
            return bad("vae_args.spatial_dims", format!("{} (only 3-D models are supported)", v.spatial_dims));
        }
        if v.num_channels.is_empty() {
            return bad("vae_args.num_channels", "empty".into());
        }
        if v.num_res_blocks.expand(v.num_channels.len()).len() != v.num_channels.len() {
            return bad("vae_args.num_res_blocks", "needs one entry per level".into());
        }
        if v.attention_levels.len() != v.num_channels.len() {
            return bad("vae_args.attention_levels", "needs one entry per level".into());
        }
        if v.norm_num_groups == 0 || v.num_channels.iter().any(|c| c % v.norm_num_groups != 0) {
            return bad(
                "vae_args.norm_num_groups",
                format!("{} does not divide every channel count", v.norm_num_groups),
            );
        }
        let u = &self.unet_args;
        if u.dims != 3 {
            return bad("unet_args.dims", format!("{} (only 3-D)", u.dims));
        }
        if u.channel_multiplier.is_empty() {
            return bad("unet_args.channel_multiplier", "empty".into());
        }
        if u.num_heads == 0 && u.head_channel <= 0 {
            return bad("unet_args.num_heads", "must be ≥ 1 (or head_channel > 0)".into());
        }
        if u.base_channel % 32 != 0 || u.channel_multiplier.iter().any(|m| (m * u.base_channel) % 32 != 0) {
            return bad("unet_args.base_channel", "every level width must be a multiple of 32 (GroupNorm(32))".into());
        }
        let e = &self.enc_args;
        if e.num_heads == 0 || e.emb_chans % e.num_heads != 0 {
            return bad("enc_args.num_heads", format!("{} does not divide emb_chans {}", e.num_heads, e.emb_chans));
        }
        if self.timesteps_args.betas_type != "linear" && self.timesteps_args.betas_type != "cosine" {
            return bad(
                "timesteps_args.betas_type",
                format!("{:?} (linear or cosine)", self.timesteps_args.betas_type),
            );
        }
        if self.timesteps_args.timesteps < 2 {
            return bad("timesteps_args.timesteps", "must be ≥ 2".into());
        }
        if self.data.pixdim.is_nan() || self.data.pixdim <= 0.0 || self.data.resize_to.contains(&0) {
            return bad("data", "pixdim must be > 0 and resize_to non-zero".into());
        }
        if self.data.slicing_plane != "axial" {
            return bad("data.slicing_plane", format!("{:?} (only axial is supported)", self.data.slicing_plane));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_config_round_trips_and_validates() {
        let p = ModelConfig::paper();
        let text = serde_json::to_string(&p).expect("serialise");
        let back = ModelConfig::from_json_str(Path::new("paper.json"), &text).expect("parse");
        assert_eq!(back, p);
        assert_eq!(back.convnext_stages().iter().map(|s| s.depth).sum::<usize>(), 36);
    }

    #[test]
    fn bad_field_names_its_key() {
        let mut v = serde_json::to_value(ModelConfig::paper()).expect("value");
        v["unet_args"]["base_channel"] = serde_json::json!("wide");
        let e = ModelConfig::from_json_str(Path::new("m.json"), &v.to_string()).unwrap_err().to_string();
        assert!(e.contains("unet_args.base_channel"), "{e}");
    }
}
