//! The semantic encoder Enc_phi (SPEC §3, the reference's `AttentionSemanticEncoder`): every axial slice through
//! the ConvNeXt backbone (slices batched), the stored positional encoding, soft attention pooling over slices,
//! separate q/k/v Linear projections, torch `MultiheadAttention` (packed in_proj, heads, out_proj) and a final
//! LayerNorm (eps 1e-5) → y_sem [B, E].
//!
//! Weights: `vb` at the encoder file's root; the backbone is read from `backbone.backbone.*` (the duplicate
//! `slice_distributed.module.*` copy is not requested). `new` only fetches tensors.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::model::config::ModelConfig;
use crate::model::convnext::{Affine, ConvNext};
use crate::model::ops::layer_norm::layer_norm_last;

/// Slices pushed through the backbone at once (bounds memory at the paper size: 32 slices of 128×160 use
/// ~70 MB in the widest layer).
const SLICE_CHUNK: usize = 32;

/// Every intermediate the fixtures store (names as in the fixtures' `semantic.safetensors`, without `_a`).
#[derive(Debug, Clone)]
pub struct SemanticTrace {
    /// [B·Z, C0, X/4, Y/4]
    pub backbone_stem: Tensor,
    /// [B·Z, E, h, w]
    pub backbone_features: Tensor,
    /// [B·Z, E]
    pub backbone_pooled: Tensor,
    /// [B, Z, E]
    pub slice_features: Tensor,
    /// [B, Z, E]
    pub after_pos_enc: Tensor,
    /// [B, Z]
    pub soft_attn_weights: Tensor,
    /// [B, E]
    pub soft_attn_mean: Tensor,
    /// [B, 1, E]
    pub q: Tensor,
    /// [B, Z, E]
    pub k: Tensor,
    /// [B, Z, E]
    pub v: Tensor,
    /// [B, 1, E]
    pub mha_out: Tensor,
    /// Attention weights averaged over heads, [B, 1, Z].
    pub mha_attn_weights: Tensor,
    /// [B, E]
    pub y_sem: Tensor,
}

/// Enc_phi.
#[derive(Debug, Clone)]
pub struct SemanticEncoder {
    backbone: ConvNext,
    pe: Tensor,
    soft: Affine,
    q_proj: Affine,
    k_proj: Affine,
    v_proj: Affine,
    in_q: Affine,
    in_k: Affine,
    in_v: Affine,
    out_proj: Affine,
    norm: Affine,
    heads: usize,
    emb: usize,
    seq_len: usize,
}

impl SemanticEncoder {
    /// Build from `vb` positioned at the encoder file root; sizes from `cfg.enc_args` and the ConvNeXt stages.
    pub fn new(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let e = cfg.enc_args.emb_chans;
        let heads = cfg.enc_args.num_heads;
        let seq_len = cfg.enc_args.seq_len;
        if heads == 0 || e % heads != 0 {
            candle_core::bail!("enc_args: num_heads {heads} does not divide emb_chans {e}");
        }
        let backbone = ConvNext::new(vb.pp("backbone").pp("backbone"), cfg)?;
        if backbone.out_dim() != e {
            candle_core::bail!("enc_args: emb_chans {e} differs from the ConvNeXt output width {}", backbone.out_dim());
        }
        let pe = vb.get((1, seq_len, e), "positional_encoding.pe")?;
        let soft = Affine::load(&vb.pp("soft_attention").pp("linear"), &[1, e], 1)?;
        let q_proj = Affine::load(&vb.pp("query_projection"), &[e, e], e)?;
        let k_proj = Affine::load(&vb.pp("key_projection"), &[e, e], e)?;
        let v_proj = Affine::load(&vb.pp("value_projection"), &[e, e], e)?;
        let ca = vb.pp("cross_attention");
        let in_w = ca.get((3 * e, e), "in_proj_weight")?;
        let in_b = ca.get(3 * e, "in_proj_bias")?;
        let part =
            |i: usize| -> Result<Affine> { Ok(Affine { w: in_w.narrow(0, i * e, e)?, b: in_b.narrow(0, i * e, e)? }) };
        let (in_q, in_k, in_v) = (part(0)?, part(1)?, part(2)?);
        let out_proj = Affine::load(&ca.pp("out_proj"), &[e, e], e)?;
        let norm = Affine::load(&vb.pp("layer_norm_after_attention"), &[e], e)?;
        Ok(SemanticEncoder {
            backbone,
            pe,
            soft,
            q_proj,
            k_proj,
            v_proj,
            in_q,
            in_k,
            in_v,
            out_proj,
            norm,
            heads,
            emb: e,
            seq_len,
        })
    }

    /// `x` [B, 1, Z, X, Y] (axial layout, values as the model input) → y_sem [B, E].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_trace(x)?.y_sem)
    }

    /// As [`forward`](Self::forward), keeping every intermediate.
    pub fn forward_trace(&self, x: &Tensor) -> Result<SemanticTrace> {
        let (b, c, z, sx, sy) = x.dims5()?;
        if c != 1 {
            candle_core::bail!("semantic encoder expects [B,1,Z,X,Y], got {:?}", x.shape());
        }
        if z == 0 || z > self.seq_len {
            candle_core::bail!("semantic encoder: {z} slices, the model takes 1..={}", self.seq_len);
        }
        let e = self.emb;
        // 1. slices batched, batch-major
        let slices = x.reshape((b * z, 1, sx, sy))?;
        let mut outs = Vec::new();
        let mut start = 0;
        while start < b * z {
            let len = SLICE_CHUNK.min(b * z - start);
            outs.push(self.backbone.forward(&slices.narrow(0, start, len)?)?);
            start += len;
        }
        let cat = |f: fn(&crate::model::convnext::BackboneOutput) -> &Tensor| -> Result<Tensor> {
            Tensor::cat(&outs.iter().map(f).collect::<Vec<_>>(), 0)
        };
        let backbone_stem = cat(|o| &o.stem)?;
        let backbone_features = cat(|o| &o.features)?;
        let backbone_pooled = cat(|o| &o.pooled)?;
        let slice_features = cat(|o| &o.out)?.reshape((b, z, e))?;
        // 3. positional encoding
        let after_pos_enc = slice_features.broadcast_add(&self.pe.narrow(1, 0, z)?)?;
        let flat = after_pos_enc.reshape((b * z, e))?;
        // 4. soft attention pooling over slices
        let scores = self.soft.linear(&flat)?.reshape((b, z))?;
        let soft_attn_weights = crate::model::ops::softmax::softmax_last_dim(&scores)?;
        let soft_attn_mean = after_pos_enc.broadcast_mul(&soft_attn_weights.unsqueeze(2)?)?.sum(1)?;
        // 5. q/k/v projections
        let q = self.q_proj.linear(&soft_attn_mean)?.reshape((b, 1, e))?;
        let k = self.k_proj.linear(&flat)?;
        let v = self.v_proj.linear(&flat)?;
        // 6. torch MultiheadAttention: its own in-projections, heads, softmax(QKᵀ/√d)V, out_proj
        let h = self.heads;
        let d = e / h;
        let split = |t: Tensor, l: usize| -> Result<Tensor> { t.reshape((b, l, h, d))?.transpose(1, 2)?.contiguous() };
        let qh = split(self.in_q.linear(&q.reshape((b, e))?)?, 1)?;
        let kh = split(self.in_k.linear(&k)?, z)?;
        let vh = split(self.in_v.linear(&v)?, z)?;
        let qh = (qh * (1.0 / (d as f64).sqrt()))?;
        let att = qh.matmul(&kh.transpose(2, 3)?.contiguous()?)?; // [B,H,1,Z]
        let att = crate::model::ops::softmax::softmax_last_dim(&att)?;
        let ctx = att.matmul(&vh)?.transpose(1, 2)?.contiguous()?.reshape((b, e))?;
        let mha_out = self.out_proj.linear(&ctx)?.reshape((b, 1, e))?;
        let mha_attn_weights = att.mean(1)?; // [B,1,Z]
                                             // 7. LayerNorm (eps 1e-5)
        let y_sem = layer_norm_last(&mha_out, &self.norm.w, &self.norm.b, 1e-5)?.squeeze(1)?;
        Ok(SemanticTrace {
            backbone_stem,
            backbone_features,
            backbone_pooled,
            slice_features,
            after_pos_enc,
            soft_attn_weights,
            soft_attn_mean,
            q,
            k: k.reshape((b, z, e))?,
            v: v.reshape((b, z, e))?,
            mha_out,
            mha_attn_weights,
            y_sem,
        })
    }

    /// Width of y_sem.
    pub fn emb_dim(&self) -> usize {
        self.emb
    }
}

/// The names and tensors of a trace, in the fixtures' naming.
impl SemanticTrace {
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        vec![
            ("backbone_stem", &self.backbone_stem),
            ("backbone_features", &self.backbone_features),
            ("backbone_pooled", &self.backbone_pooled),
            ("slice_features", &self.slice_features),
            ("after_pos_enc", &self.after_pos_enc),
            ("soft_attn_weights", &self.soft_attn_weights),
            ("soft_attn_mean", &self.soft_attn_mean),
            ("q", &self.q),
            ("k", &self.k),
            ("v", &self.v),
            ("mha_out", &self.mha_out),
            ("mha_attn_weights", &self.mha_attn_weights),
            ("y_sem", &self.y_sem),
        ]
    }
}
