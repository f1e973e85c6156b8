//! ShiftUNet (SPEC §4): the 3-D epsilon UNet of the latent DDPM plus the shift branch (the paper's gradient
//! estimator G_psi) conditioned on y_sem. Both branches share the input blocks and the skip stack.
//!
//! Module names are the checkpoint's (`input_blocks.<i>.<j>`, `in_layers.2`, `emb_layers.1`, `qkv`, ...).
//! Resampling is 2-D inside 3-D: AvgPool (1,2,2) down, nearest ×2 on H and W up; the first spatial axis is never
//! resampled. All GroupNorms have 32 groups and eps 1e-5.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::config::UnetArgs;
use super::ops::{avg_pool_hw, upsample_nearest_hw, Conv3d, Conv3dParams, GroupNorm};

const GROUPS: usize = 32;
const EPS: f64 = 1e-5;

fn gn(vb: VarBuilder, c: usize) -> Result<GroupNorm> {
    super::ops::group_norm(GROUPS, c, EPS, vb)
}

fn conv3(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv3d> {
    Conv3d::new(vb, cin, cout, 3, Conv3dParams::same(1))
}

/// `timestep_embedding(t, dim)`: `[cos(t·f), sin(t·f)]`, `f_i = exp(-ln(10000)·i/half)`, in float32 as the
/// reference computes it.
pub fn timestep_embedding(t: &[f32], dim: usize, dev: &candle_core::Device) -> Result<Tensor> {
    let half = dim / 2;
    let ln = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half).map(|i| (ln * i as f32 / half as f32).exp()).collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &tv in t {
        out.extend(freqs.iter().map(|f| (tv * f).cos()));
        out.extend(freqs.iter().map(|f| (tv * f).sin()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, (t.len(), dim), dev)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resample {
    None,
    Up,
    Down,
}

/// ResBlock with scale-shift timestep conditioning; with `emb_z_layers` it is the shift branch's ResBlockShift.
#[derive(Debug)]
pub struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv3d,
    emb_layers: Linear,
    emb_z_layers: Option<Linear>,
    out_norm: GroupNorm,
    out_conv: Conv3d,
    skip_connection: Option<Conv3d>,
    resample: Resample,
}

impl ResBlock {
    fn new(vb: VarBuilder, cin: usize, cout: usize, emb: usize, shift: bool, resample: Resample) -> Result<Self> {
        Ok(ResBlock {
            in_norm: gn(vb.pp("in_layers.0"), cin)?,
            in_conv: conv3(vb.pp("in_layers.2"), cin, cout)?,
            emb_layers: candle_nn::linear(emb, 2 * cout, vb.pp("emb_layers.1"))?,
            emb_z_layers: if shift { Some(candle_nn::linear(emb, 2 * cout, vb.pp("emb_z_layers.1"))?) } else { None },
            out_norm: gn(vb.pp("out_layers.0"), cout)?,
            out_conv: conv3(vb.pp("out_layers.3"), cout, cout)?,
            skip_connection: if cin != cout {
                Some(Conv3d::new(vb.pp("skip_connection"), cin, cout, 1, Conv3dParams::same(0))?)
            } else {
                None
            },
            resample,
        })
    }

    /// `(scale, shift)` halves of a `[B, 2C]` modulation, as `[B, C, 1, 1, 1]`.
    fn halves(m: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = m.dim(1)? / 2;
        let r = |t: Tensor| -> Result<Tensor> {
            let b = t.dim(0)?;
            t.reshape((b, c, 1, 1, 1))
        };
        Ok((r(m.narrow(1, 0, c)?)?, r(m.narrow(1, c, c)?)?))
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, shift_emb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.in_norm.forward_silu(x)?;
        let (h, x) = match self.resample {
            Resample::None => (h, x.clone()),
            Resample::Up => (upsample_nearest_hw(&h)?, upsample_nearest_hw(x)?),
            Resample::Down => (avg_pool_hw(&h)?, avg_pool_hw(x)?),
        };
        let h = self.in_conv.forward(&h)?;
        let (scale, shift) = Self::halves(&self.emb_layers.forward(&emb.silu()?)?)?;
        let mut h = self.out_norm.forward(&h)?.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?;
        if let (Some(z), Some(se)) = (&self.emb_z_layers, shift_emb) {
            let (zs, zb) = Self::halves(&z.forward(&se.silu()?)?)?;
            h = h.broadcast_mul(&(zs + 1.0)?)?.broadcast_add(&zb)?;
        }
        let h = self.out_conv.forward(&h.silu()?)?;
        match &self.skip_connection {
            Some(s) => s.forward(&x)? + h,
            None => x + h,
        }
    }
}

/// Self-attention over all D·H·W positions, legacy QKV head layout (`[head][q|k|v][ch]`), q and k both scaled by
/// `ch^(-1/4)`, GN before, residual after.
#[derive(Debug)]
pub struct AttentionBlock {
    norm: GroupNorm,
    qkv_w: Tensor,
    qkv_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
    heads: usize,
}

impl AttentionBlock {
    fn new(vb: VarBuilder, c: usize, heads: usize) -> Result<Self> {
        Ok(AttentionBlock {
            norm: gn(vb.pp("norm"), c)?,
            qkv_w: vb.get((3 * c, c, 1), "qkv.weight")?,
            qkv_b: vb.get(3 * c, "qkv.bias")?,
            proj_w: vb.get((c, c, 1), "proj_out.weight")?,
            proj_b: vb.get(c, "proj_out.bias")?,
            heads,
        })
    }

    /// Conv1d k1 on `[B, Cin, T]`.
    fn pointwise(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (bsz, _, _) = x.dims3()?;
        let (co, ci, _) = w.dims3()?;
        let w = w.reshape((co, ci))?.broadcast_left(bsz)?;
        w.matmul(x)?.broadcast_add(&b.reshape((1, co, 1))?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let t: usize = dims[2..].iter().product();
        let xf = x.reshape((b, c, t))?;
        let qkv = Self::pointwise(&self.norm.forward(&xf)?, &self.qkv_w, &self.qkv_b)?;
        let ch = c / self.heads;
        let qkv = qkv.reshape((b * self.heads, 3 * ch, t))?;
        let scale = 1.0 / (ch as f64).sqrt().sqrt();
        let q = (qkv.narrow(1, 0, ch)? * scale)?;
        let k = (qkv.narrow(1, ch, ch)? * scale)?;
        let v = qkv.narrow(1, 2 * ch, ch)?;
        // w[t, s] = sum_c q[c,t] k[c,s]
        let w = q.transpose(1, 2)?.contiguous()?.matmul(&k.contiguous()?)?;
        let w = crate::model::ops::softmax::softmax_last_dim(&w)?;
        // a[c, t] = sum_s v[c,s] w[t,s]
        let a = v.contiguous()?.matmul(&w.transpose(1, 2)?.contiguous()?)?;
        let a = a.reshape((b, c, t))?;
        let h = Self::pointwise(&a, &self.proj_w, &self.proj_b)?;
        (xf + h)?.reshape(dims)
    }
}

/// One `input_blocks`/`middle_block`/`output_blocks` entry: layers applied in order.
#[derive(Debug)]
enum Layer {
    Conv(Conv3d),
    Res(Box<ResBlock>),
    Attn(AttentionBlock),
}

#[derive(Debug)]
struct Seq(Vec<Layer>);

impl Seq {
    fn forward(&self, x: &Tensor, emb: &Tensor, shift_emb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.0 {
            h = match l {
                Layer::Conv(c) => c.forward(&h)?,
                Layer::Res(r) => r.forward(&h, emb, shift_emb)?,
                Layer::Attn(a) => a.forward(&h)?,
            };
        }
        Ok(h)
    }
}

/// The denoiser: `(eps, shift) = f(z_t, t, y_sem)`.
#[derive(Debug)]
pub struct ShiftUnet {
    time_embed_0: Linear,
    time_embed_2: Linear,
    label_emb: Linear,
    input_blocks: Vec<Seq>,
    middle_block: Seq,
    output_blocks: Vec<Seq>,
    out_norm: GroupNorm,
    out_conv: Conv3d,
    shift_middle_block: Seq,
    shift_output_blocks: Vec<Seq>,
    shift_out_norm: GroupNorm,
    shift_out_conv: Conv3d,
    base: usize,
    span: tracing::Span,
}

fn heads_for(cfg: &UnetArgs, ch: usize) -> Result<usize> {
    let heads = if cfg.head_channel > 0 { ch / cfg.head_channel as usize } else { cfg.num_heads };
    if heads == 0 || ch % heads != 0 {
        candle_core::bail!("attention over {ch} channels cannot be split into {heads} heads");
    }
    Ok(heads)
}

impl ShiftUnet {
    /// Build from `decoder.pth`'s tensors; `latent_dim` is the width of y_sem.
    pub fn new(vb: VarBuilder, cfg: &UnetArgs, latent_dim: usize) -> Result<Self> {
        let base = cfg.base_channel;
        let emb = base * 4;
        let nres = cfg.num_residual_blocks_of_a_block;
        let mult = &cfg.channel_multiplier;
        let attn_at = |ds: usize| cfg.attention_resolutions.contains(&ds);

        let vbi = vb.pp("input_blocks");
        let mut input_blocks = vec![Seq(vec![Layer::Conv(conv3(vbi.pp(0).pp(0), cfg.input_channel, base)?)])];
        let mut chans = vec![base];
        let mut ch = base;
        let mut ds = 1;
        for (level, &m) in mult.iter().enumerate() {
            for _ in 0..nres {
                let v = vbi.pp(input_blocks.len());
                let mut layers =
                    vec![Layer::Res(Box::new(ResBlock::new(v.pp(0), ch, m * base, emb, false, Resample::None)?))];
                ch = m * base;
                if attn_at(ds) {
                    layers.push(Layer::Attn(AttentionBlock::new(v.pp(1), ch, heads_for(cfg, ch)?)?));
                }
                input_blocks.push(Seq(layers));
                chans.push(ch);
            }
            if level + 1 != mult.len() {
                let v = vbi.pp(input_blocks.len());
                input_blocks.push(Seq(vec![Layer::Res(Box::new(ResBlock::new(
                    v.pp(0),
                    ch,
                    ch,
                    emb,
                    false,
                    Resample::Down,
                )?))]));
                chans.push(ch);
                ds *= 2;
            }
        }

        let middle = |v: VarBuilder, shift: bool| -> Result<Seq> {
            Ok(Seq(vec![
                Layer::Res(Box::new(ResBlock::new(v.pp(0), ch, ch, emb, shift, Resample::None)?)),
                Layer::Attn(AttentionBlock::new(v.pp(1), ch, heads_for(cfg, ch)?)?),
                Layer::Res(Box::new(ResBlock::new(v.pp(2), ch, ch, emb, shift, Resample::None)?)),
            ]))
        };
        let middle_block = middle(vb.pp("middle_block"), false)?;
        let shift_middle_block = middle(vb.pp("shift_middle_block"), true)?;

        let outputs = |v: VarBuilder, shift: bool| -> Result<(Vec<Seq>, usize)> {
            let mut chans = chans.clone();
            let (mut ch, mut ds) = (ch, ds);
            let mut blocks = Vec::new();
            for (level, &m) in mult.iter().enumerate().rev() {
                for i in 0..=nres {
                    let ich =
                        chans.pop().ok_or_else(|| candle_core::Error::Msg("ShiftUNet: skip stack underflow".into()))?;
                    let vb = v.pp(blocks.len());
                    let mut layers = vec![Layer::Res(Box::new(ResBlock::new(
                        vb.pp(0),
                        ch + ich,
                        m * base,
                        emb,
                        shift,
                        Resample::None,
                    )?))];
                    ch = m * base;
                    if attn_at(ds) {
                        layers.push(Layer::Attn(AttentionBlock::new(vb.pp(1), ch, heads_for(cfg, ch)?)?));
                    }
                    if level > 0 && i == nres {
                        let j = layers.len();
                        layers.push(Layer::Res(Box::new(ResBlock::new(vb.pp(j), ch, ch, emb, shift, Resample::Up)?)));
                        ds /= 2;
                    }
                    blocks.push(Seq(layers));
                }
            }
            Ok((blocks, ch))
        };
        let (output_blocks, out_ch) = outputs(vb.pp("output_blocks"), false)?;
        let (shift_output_blocks, _) = outputs(vb.pp("shift_output_blocks"), true)?;

        Ok(ShiftUnet {
            time_embed_0: candle_nn::linear(base, emb, vb.pp("time_embed.0"))?,
            time_embed_2: candle_nn::linear(emb, emb, vb.pp("time_embed.2"))?,
            label_emb: candle_nn::linear(latent_dim, emb, vb.pp("label_emb"))?,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: gn(vb.pp("out.0"), out_ch)?,
            out_conv: conv3(vb.pp("out.2"), out_ch, cfg.input_channel)?,
            shift_middle_block,
            shift_output_blocks,
            shift_out_norm: gn(vb.pp("shift_out.0"), out_ch)?,
            shift_out_conv: conv3(vb.pp("shift_out.2"), out_ch, cfg.input_channel)?,
            base,
            span: tracing::span!(tracing::Level::TRACE, "shift-unet"),
        })
    }

    /// `time_embed(timestep_embedding(t))` for DDPM timesteps `t` (one per batch element).
    pub fn time_emb(&self, t: &[f32], dev: &candle_core::Device) -> Result<Tensor> {
        let s = timestep_embedding(t, self.base, dev)?.to_dtype(self.time_embed_0.weight().dtype())?;
        self.time_embed_2.forward(&self.time_embed_0.forward(&s)?.silu()?)
    }

    /// `label_emb(y_sem)`.
    pub fn label_emb(&self, y_sem: &Tensor) -> Result<Tensor> {
        self.label_emb.forward(y_sem)
    }

    /// The epsilon path alone (the plain UNet of SPEC §1b): the same numbers as `forward(..).0`, without the
    /// shift branch or y_sem.
    pub fn forward_eps(&self, z_t: &Tensor, t: &[f32]) -> Result<Tensor> {
        let _e = self.span.enter();
        let emb = self.time_emb(t, z_t.device())?.to_dtype(z_t.dtype())?;
        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut h = z_t.clone();
        for b in &self.input_blocks {
            h = b.forward(&h, &emb, None)?;
            hs.push(h.clone());
        }
        let mut e = self.middle_block.forward(&h, &emb, None)?;
        for ob in &self.output_blocks {
            let skip = hs.pop().ok_or_else(|| candle_core::Error::Msg("ShiftUNet: skip stack underflow".into()))?;
            e = ob.forward(&Tensor::cat(&[&e, &skip], 1)?, &emb, None)?;
        }
        self.out_conv.forward(&self.out_norm.forward_silu(&e)?)
    }

    /// `(eps, shift)` for `z_t [B,C,D,H,W]`, DDPM timesteps `t` (length B), `y_sem [B,E]`.
    pub fn forward(&self, z_t: &Tensor, t: &[f32], y_sem: &Tensor) -> Result<(Tensor, Tensor)> {
        let _e = self.span.enter();
        let dtype = z_t.dtype();
        let emb = self.time_emb(t, z_t.device())?.to_dtype(dtype)?;
        let shift_emb = self.label_emb(&y_sem.to_dtype(dtype)?)?;
        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut h = z_t.clone();
        for b in &self.input_blocks {
            h = b.forward(&h, &emb, None)?;
            hs.push(h.clone());
        }
        let mut e = self.middle_block.forward(&h, &emb, None)?;
        let mut s = self.shift_middle_block.forward(&h, &emb, Some(&shift_emb))?;
        for (ob, sb) in self.output_blocks.iter().zip(&self.shift_output_blocks) {
            let skip = hs.pop().ok_or_else(|| candle_core::Error::Msg("ShiftUNet: skip stack underflow".into()))?;
            e = ob.forward(&Tensor::cat(&[&e, &skip], 1)?, &emb, None)?;
            s = sb.forward(&Tensor::cat(&[&s, &skip], 1)?, &emb, Some(&shift_emb))?;
        }
        let eps = self.out_conv.forward(&self.out_norm.forward_silu(&e)?)?;
        let shift = self.shift_out_conv.forward(&self.shift_out_norm.forward_silu(&s)?)?;
        Ok((eps, shift))
    }
}
