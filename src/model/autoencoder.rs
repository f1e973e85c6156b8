//! AutoencoderKL (3-D), monai-generative 0.2.3's `AutoencoderKL` as SPEC §2 describes it: a convolutional
//! encoder to a `latent_channels`-channel latent (mu, log-variance), and the mirrored decoder.
//!
//! Module names are the checkpoint's (`encoder.blocks.<i>`, `conv1.conv`, `nin_shortcut.conv`, ...). Blocks are a
//! flat list applied in order, like the reference's `nn.ModuleList`; the final GroupNorm of encoder and decoder is
//! not followed by an activation (SPEC §8.13).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::VaeArgs;
use super::ops::{group_norm, upsample_nearest3d, Conv3d, Conv3dParams, GroupNorm};

fn conv3(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv3d> {
    Conv3d::new(vb.pp("conv"), cin, cout, 3, Conv3dParams::same(1))
}

fn conv1(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv3d> {
    Conv3d::new(vb.pp("conv"), cin, cout, 1, Conv3dParams::same(0))
}

/// MONAI ResBlock: GN → SiLU → conv3 → GN → SiLU → conv3, plus a 1×1×1 shortcut when the width changes.
#[derive(Debug)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv3d,
    norm2: GroupNorm,
    conv2: Conv3d,
    nin_shortcut: Option<Conv3d>,
    span: tracing::Span,
}

impl ResBlock {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(ResBlock {
            norm1: group_norm(groups, cin, eps, vb.pp("norm1"))?,
            conv1: conv3(vb.pp("conv1"), cin, cout)?,
            norm2: group_norm(groups, cout, eps, vb.pp("norm2"))?,
            conv2: conv3(vb.pp("conv2"), cout, cout)?,
            nin_shortcut: if cin != cout { Some(conv1(vb.pp("nin_shortcut"), cin, cout)?) } else { None },
            span: tracing::span!(tracing::Level::TRACE, "aekl-resblock"),
        })
    }
}

impl Module for ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _e = self.span.enter();
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.nin_shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// One entry of the encoder/decoder block list.
#[derive(Debug)]
enum Block {
    Conv(Conv3d),
    Res(Box<ResBlock>),
    /// Zero pad (0,1) on every axis, then stride-2 conv3 without padding.
    Down(Conv3d),
    /// Nearest ×2 on every axis, then conv3.
    Up(Conv3d),
    Norm(GroupNorm),
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Conv(c) | Block::Down(c) => c.forward(x),
            Block::Res(r) => r.forward(x),
            Block::Up(c) => c.forward(&upsample_nearest3d(x)?),
            Block::Norm(n) => n.forward(x),
        }
    }
}

fn unsupported(cfg: &VaeArgs) -> Result<()> {
    if cfg.attention_levels.iter().any(|&a| a) || cfg.with_encoder_nonlocal_attn || cfg.with_decoder_nonlocal_attn {
        candle_core::bail!("AutoencoderKL with attention is not supported (the published model has none)");
    }
    if cfg.in_channels == 0 || cfg.out_channels == 0 || cfg.latent_channels == 0 {
        candle_core::bail!("AutoencoderKL channel counts must be > 0");
    }
    Ok(())
}

/// The encoder: conv_in, per level ResBlocks (+ Downsample except after the last), GN, conv to the latent.
#[derive(Debug)]
pub struct Encoder {
    blocks: Vec<Block>,
}

impl Encoder {
    pub fn new(vb: VarBuilder, cfg: &VaeArgs) -> Result<Self> {
        unsupported(cfg)?;
        let vb = vb.pp("blocks");
        let ch = &cfg.num_channels;
        let nres = cfg.num_res_blocks.expand(ch.len());
        let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let mut blocks = Vec::new();
        blocks.push(Block::Conv(conv3(vb.pp(0), cfg.in_channels, ch[0])?));
        let mut cin = ch[0];
        for (level, &cout) in ch.iter().enumerate() {
            for _ in 0..nres[level] {
                blocks.push(Block::Res(Box::new(ResBlock::new(vb.pp(blocks.len()), cin, cout, g, eps)?)));
                cin = cout;
            }
            if level + 1 != ch.len() {
                let i = blocks.len();
                blocks.push(Block::Down(Conv3d::new(
                    vb.pp(i).pp("conv").pp("conv"),
                    cin,
                    cin,
                    3,
                    Conv3dParams::down_end_pad(),
                )?));
            }
        }
        blocks.push(Block::Norm(group_norm(g, cin, eps, vb.pp(blocks.len()))?));
        blocks.push(Block::Conv(conv3(vb.pp(blocks.len()), cin, cfg.latent_channels)?));
        Ok(Encoder { blocks })
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.blocks.iter().try_fold(x.clone(), |h, b| b.forward(&h))
    }
}

/// The decoder: conv_in from the latent, per level (reversed widths) ResBlocks (+ Upsample except after the
/// last), GN, conv to the output channels. No output activation.
#[derive(Debug)]
pub struct Decoder {
    blocks: Vec<Block>,
}

impl Decoder {
    pub fn new(vb: VarBuilder, cfg: &VaeArgs) -> Result<Self> {
        unsupported(cfg)?;
        let vb = vb.pp("blocks");
        let ch: Vec<usize> = cfg.num_channels.iter().rev().copied().collect();
        let nres: Vec<usize> = cfg.num_res_blocks.expand(ch.len()).into_iter().rev().collect();
        let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let mut blocks = Vec::new();
        blocks.push(Block::Conv(conv3(vb.pp(0), cfg.latent_channels, ch[0])?));
        let mut cin = ch[0];
        for (level, &cout) in ch.iter().enumerate() {
            for _ in 0..nres[level] {
                blocks.push(Block::Res(Box::new(ResBlock::new(vb.pp(blocks.len()), cin, cout, g, eps)?)));
                cin = cout;
            }
            if level + 1 != ch.len() {
                let i = blocks.len();
                blocks.push(Block::Up(conv3(vb.pp(i).pp("conv"), cin, cin)?));
            }
        }
        blocks.push(Block::Norm(group_norm(g, cin, eps, vb.pp(blocks.len()))?));
        blocks.push(Block::Conv(conv3(vb.pp(blocks.len()), cin, cfg.out_channels)?));
        Ok(Decoder { blocks })
    }
}

impl Module for Decoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.blocks.iter().try_fold(x.clone(), |h, b| b.forward(&h))
    }
}

/// The latent's mean and clamped log-variance.
#[derive(Debug, Clone)]
pub struct Posterior {
    pub mu: Tensor,
    /// `clamp(quant_conv_log_sigma(h), -30, 20)`.
    pub logvar: Tensor,
}

impl Posterior {
    /// `exp(logvar / 2)`.
    pub fn sigma(&self) -> Result<Tensor> {
        (&self.logvar * 0.5)?.exp()
    }
}

/// The whole AutoencoderKL (`autoencoderkl.pth`).
#[derive(Debug)]
pub struct AutoencoderKl {
    pub encoder: Encoder,
    pub decoder: Decoder,
    quant_conv_mu: Conv3d,
    quant_conv_log_sigma: Conv3d,
    post_quant_conv: Conv3d,
    span: tracing::Span,
}

impl AutoencoderKl {
    pub fn new(vb: VarBuilder, cfg: &VaeArgs) -> Result<Self> {
        let l = cfg.latent_channels;
        Ok(AutoencoderKl {
            encoder: Encoder::new(vb.pp("encoder"), cfg)?,
            decoder: Decoder::new(vb.pp("decoder"), cfg)?,
            quant_conv_mu: conv1(vb.pp("quant_conv_mu"), l, l)?,
            quant_conv_log_sigma: conv1(vb.pp("quant_conv_log_sigma"), l, l)?,
            post_quant_conv: conv1(vb.pp("post_quant_conv"), l, l)?,
            span: tracing::span!(tracing::Level::TRACE, "aekl"),
        })
    }

    /// `encode(x)`: the posterior of `x [N, in_channels, X, Y, Z]`.
    pub fn encode(&self, x: &Tensor) -> Result<Posterior> {
        let _e = self.span.enter();
        let h = self.encoder.forward(x)?;
        let mu = self.quant_conv_mu.forward(&h)?;
        let logvar = self.quant_conv_log_sigma.forward(&h)?.clamp(-30f32, 20f32)?;
        Ok(Posterior { mu, logvar })
    }

    /// `decode_stage_2_outputs(z)` = decoder(post_quant_conv(z)), z unscaled.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let _e = self.span.enter();
        self.decoder.forward(&self.post_quant_conv.forward(z)?)
    }

    /// The decoder input (post_quant_conv(z)), for parity checks.
    pub fn post_quant(&self, z: &Tensor) -> Result<Tensor> {
        self.post_quant_conv.forward(z)
    }
}
