//! The semantic encoder's 2-D backbone: torchvision ConvNeXt as the reference modifies it (SPEC §3 step 2) —
//! a one-channel stem, stages of CNBlocks with LayerNorm2d + k2/s2 downsampling between them, global average
//! pooling and the classifier's LayerNorm2d (the final Linear replaced by Identity).
//!
//! Sizes come from [`ModelConfig::convnext_stages`]; tensor names mirror torchvision's state dict
//! (`features.0.{0,1}` stem, `features.{2i+1}.<b>.block.{0,2,3,5}` + `.layer_scale`, `features.{2i+2}.{0,1}`
//! downsample, `classifier.0`). `new` only fetches tensors (no arithmetic), so a recording VarBuilder can list
//! the expected keys without memory. Inside a stage the activations are channels-last [N,H,W,C].

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::model::config::ModelConfig;
use crate::model::ops::depthwise::depthwise_conv2d_nhwc;
use crate::model::ops::fused::{bias_gelu_erf, residual_scale};
use crate::model::ops::layer_norm::layer_norm_last;

/// ConvNeXt's LayerNorm epsilon (every LayerNorm/LayerNorm2d in the backbone).
const EPS: f64 = 1e-6;

/// A weight and bias pair.
#[derive(Debug, Clone)]
pub(crate) struct Affine {
    pub w: Tensor,
    pub b: Tensor,
}

impl Affine {
    pub(crate) fn load(vb: &VarBuilder, w_shape: &[usize], b_len: usize) -> Result<Self> {
        Ok(Affine { w: vb.get(w_shape, "weight")?, b: vb.get(b_len, "bias")? })
    }

    /// `x` [rows, in] → [rows, out] (torch Linear: x Wᵀ + b).
    pub(crate) fn linear(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w.t()?)?.broadcast_add(&self.b)
    }
}

/// One CNBlock: depthwise 7×7 → LayerNorm (channels-last) → Linear 4× → GELU(erf) → Linear → layer_scale → +x.
#[derive(Debug, Clone)]
struct Block {
    dw: Affine,
    norm: Affine,
    up: Affine,
    down: Affine,
    layer_scale: Tensor,
}

impl Block {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let b = vb.pp("block");
        Ok(Block {
            dw: Affine::load(&b.pp("0"), &[dim, 1, 7, 7], dim)?,
            norm: Affine::load(&b.pp("2"), &[dim], dim)?,
            up: Affine::load(&b.pp("3"), &[4 * dim, dim], 4 * dim)?,
            down: Affine::load(&b.pp("5"), &[dim, 4 * dim], dim)?,
            layer_scale: vb.get((dim, 1, 1), "layer_scale")?,
        })
    }

    /// `x` channels-last [N, H, W, C] → same shape.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let y = depthwise_conv2d_nhwc(x, &self.dw.w, &self.dw.b, 3)?.reshape((n * h * w, c))?;
        let y = layer_norm_last(&y, &self.norm.w, &self.norm.b, EPS)?;
        let y = bias_gelu_erf(&y.matmul(&self.up.w.t()?)?, &self.up.b)?;
        let y = y.matmul(&self.down.w.t()?)?.reshape((n, h, w, c))?;
        residual_scale(x, &y, &self.down.b, &self.layer_scale.reshape(c)?)
    }
}

/// LayerNorm2d then a k2/s2 conv between two stages.
#[derive(Debug, Clone)]
struct Downsample {
    norm: Affine,
    conv: Affine,
}

/// A stage: its blocks and the downsample after it (none for the last).
#[derive(Debug, Clone)]
struct Stage {
    blocks: Vec<Block>,
    down: Option<Downsample>,
}

/// What the backbone computes for a batch of slices, with the intermediates the fixtures store.
#[derive(Debug, Clone)]
pub struct BackboneOutput {
    /// After the stem (conv k4 s4 + LayerNorm2d): [N, C0, H/4, W/4].
    pub stem: Tensor,
    /// After all stages, before pooling: [N, E, h, w].
    pub features: Tensor,
    /// Global average pool: [N, E].
    pub pooled: Tensor,
    /// After the classifier LayerNorm2d: [N, E].
    pub out: Tensor,
}

/// The modified torchvision ConvNeXt.
#[derive(Debug, Clone)]
pub struct ConvNext {
    stem_conv: Affine,
    stem_norm: Affine,
    stages: Vec<Stage>,
    head_norm: Affine,
    out_dim: usize,
}

impl ConvNext {
    /// `vb` at the torchvision module root (`…backbone.backbone`).
    pub fn new(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let stages_cfg = cfg.convnext_stages();
        let Some(first) = stages_cfg.first() else { candle_core::bail!("enc_args: ConvNeXt needs at least one stage") };
        let f = vb.pp("features");
        let stem_conv = Affine::load(&f.pp("0").pp("0"), &[first.dim, 1, 4, 4], first.dim)?;
        let stem_norm = Affine::load(&f.pp("0").pp("1"), &[first.dim], first.dim)?;
        let mut stages = Vec::with_capacity(stages_cfg.len());
        for (i, s) in stages_cfg.iter().enumerate() {
            let sv = f.pp(2 * i + 1);
            let blocks = (0..s.depth).map(|b| Block::new(sv.pp(b), s.dim)).collect::<Result<Vec<_>>>()?;
            let down = match s.next_dim {
                Some(nd) => {
                    let dv = f.pp(2 * i + 2);
                    Some(Downsample {
                        norm: Affine::load(&dv.pp("0"), &[s.dim], s.dim)?,
                        conv: Affine::load(&dv.pp("1"), &[nd, s.dim, 2, 2], nd)?,
                    })
                }
                None => None,
            };
            if let Some(next) = stages_cfg.get(i + 1) {
                let into = s.next_dim.unwrap_or(s.dim);
                if next.dim != into {
                    candle_core::bail!(
                        "enc_args: ConvNeXt stage {} expects {} channels but stage {i} hands on {into}",
                        i + 1,
                        next.dim
                    );
                }
            }
            stages.push(Stage { blocks, down });
        }
        let last = stages_cfg[stages_cfg.len() - 1];
        let out_dim = last.next_dim.unwrap_or(last.dim);
        let head_norm = Affine::load(&vb.pp("classifier").pp("0"), &[out_dim], out_dim)?;
        Ok(ConvNext { stem_conv, stem_norm, stages, head_norm, out_dim })
    }

    /// Width of the per-slice feature vector.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `x` [N, 1, H, W] → per-image features and intermediates.
    pub fn forward(&self, x: &Tensor) -> Result<BackboneOutput> {
        let (_, c, h, w) = x.dims4()?;
        if c != 1 {
            candle_core::bail!("ConvNeXt stem expects 1 channel, got {c}");
        }
        let too_small = || candle_core::Error::Msg(format!("slice {h}x{w} is too small for the ConvNeXt backbone"));
        let (mut a, mut b) = (h / 4, w / 4);
        if a == 0 || b == 0 {
            return Err(too_small());
        }
        for _ in 0..self.stages.iter().filter(|s| s.down.is_some()).count() {
            if a < 2 || b < 2 {
                return Err(too_small());
            }
            (a, b) = (a / 2, b / 2);
        }
        // Everything runs channels-last [N,H,W,C]: a one-channel image already is, the stem and downsample
        // convs are patch matmuls on it, and no permute copies sit between stages.
        let y = patch_conv_nhwc(&x.reshape((x.dim(0)?, h, w, 1))?, &self.stem_conv, 4)?;
        let mut y = layer_norm_last(&y, &self.stem_norm.w, &self.stem_norm.b, EPS)?;
        let stem = y.permute((0, 3, 1, 2))?;
        for s in &self.stages {
            for b in &s.blocks {
                y = b.forward(&y)?;
            }
            if let Some(d) = &s.down {
                y = patch_conv_nhwc(&layer_norm_last(&y, &d.norm.w, &d.norm.b, EPS)?, &d.conv, 2)?;
            }
        }
        let features = y.permute((0, 3, 1, 2))?;
        let pooled = y.mean((1, 2))?;
        let out = layer_norm_last(&pooled, &self.head_norm.w, &self.head_norm.b, EPS)?;
        Ok(BackboneOutput { stem, features, pooled, out })
    }
}

/// Non-overlapping conv (kernel = stride = `k`, no padding) on a channels-last image: `x` [N,H,W,C] with the
/// conv weight [Co,C,k,k] → [N,H/k,W/k,Co]. Every k×k patch is one row of C·k·k values (each of its k image
/// rows is k·C contiguous floats, so the gather is block copies) times the weight reordered to (ky, kx, c):
/// one matmul, and candle's autograd covers it for training. Rows and columns past the last whole patch are
/// never read (torch's conv drops them too).
fn patch_conv_nhwc(x: &Tensor, a: &Affine, k: usize) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let (ho, wo) = (h / k, w / k);
    let co = a.w.dim(0)?;
    let x = if h % k != 0 || w % k != 0 { x.narrow(1, 0, ho * k)?.narrow(2, 0, wo * k)? } else { x.clone() };
    let patches = x.reshape((n, ho, k, wo, k * c))?.transpose(2, 3)?.contiguous()?.reshape((n * ho * wo, k * k * c))?;
    let wm = a.w.permute((0, 2, 3, 1))?.reshape((co, k * k * c))?;
    patches.matmul(&wm.t()?)?.broadcast_add(&a.b)?.reshape((n, ho, wo, co))
}
