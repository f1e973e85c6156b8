//! Stage (c), SPEC §1c: representation learning. The frozen epsilon path and the trained semantic encoder +
//! shift branch give `(eps, g) = ShiftUNet(z_t, t, Enc(x0))`; the loss is
//! `mean(w_t * (noise - (eps + c_t * g))^2)` with `c_t` = the schedule's `shift_coef` and `w_t` its `loss_weight`.

use candle_core::Tensor;

use super::ddpm::{per_sample, q_sample};
use super::error::{Ctx, TrainError};
use crate::model::ddim::Schedule;
use crate::model::semantic::SemanticEncoder;
use crate::model::unet::ShiftUnet;

/// The two networks of stage (c).
#[derive(Debug, Clone, Copy)]
pub struct ReprNets<'a> {
    pub encoder: &'a SemanticEncoder,
    pub unet: &'a ShiftUnet,
}

/// `[B,1,X,Y,Z]` model input → `[B,1,Z,X,Y]` encoder (axial) layout (SPEC §6 step 5).
pub fn axial(x: &Tensor) -> Result<Tensor, TrainError> {
    x.permute((0, 1, 4, 2, 3)).and_then(|t| t.contiguous()).ctx("axial layout")
}

/// The stage-(c) loss: `x0_axial` `[B,1,Z,X,Y]`, `z0 = latent * scale_factor` `[B,C,D,H,W]`, DDPM indices `t`,
/// `noise` like `z0`. Returns the scalar loss.
pub fn loss(
    nets: &ReprNets,
    x0_axial: &Tensor,
    z0: &Tensor,
    t: &[usize],
    noise: &Tensor,
    sched: &Schedule,
) -> Result<Tensor, TrainError> {
    let (eps, g, _) = predict(nets, x0_axial, z0, t, noise, sched)?;
    let dev = z0.device();
    let c = per_sample(&sched.shift_coef, t, dev)?;
    let w = per_sample(&sched.loss_weight, t, dev)?;
    let pred = (eps + g.broadcast_mul(&c).ctx("shift")?).ctx("shift")?;
    (noise - pred).ctx("loss")?.sqr().ctx("loss")?.broadcast_mul(&w).ctx("loss")?.mean_all().ctx("loss")
}

/// `(eps, g, z_t)` of one batch (shared by the loss and validation).
pub fn predict(
    nets: &ReprNets,
    x0_axial: &Tensor,
    z0: &Tensor,
    t: &[usize],
    noise: &Tensor,
    sched: &Schedule,
) -> Result<(Tensor, Tensor, Tensor), TrainError> {
    let y = nets.encoder.forward(x0_axial).ctx("semantic encoder")?;
    let z_t = q_sample(z0, t, noise, sched)?;
    let tf: Vec<f32> = t.iter().map(|&i| i as f32).collect();
    let (eps, g) = nets.unet.forward(&z_t, &tf, &y).ctx("ShiftUNet forward")?;
    Ok((eps, g, z_t))
}
