//! Stage (b), SPEC §1b: latent DDPM pre-training of the plain UNet (the ShiftUNet's epsilon path) —
//! `z_t = sqrt(abar_t) z0 + sqrt(1-abar_t) noise`, loss `mean((noise - UNet(z_t, t))^2)`.

use candle_core::{Device, Tensor};

use super::error::{Ctx, TrainError};
use crate::model::ddim::Schedule;
use crate::model::unet::ShiftUnet;

/// A per-sample table value as a `[B,1,1,1,1]` tensor (broadcasts over `[B,C,D,H,W]`).
pub(crate) fn per_sample(table: &[f32], t: &[usize], dev: &Device) -> Result<Tensor, TrainError> {
    let v = t
        .iter()
        .map(|&i| {
            table.get(i).copied().ok_or_else(|| {
                TrainError::Unsupported(format!("timestep {i} outside the schedule's 0..{}", table.len()))
            })
        })
        .collect::<Result<Vec<f32>, _>>()?;
    Tensor::from_vec(v, (t.len(), 1, 1, 1, 1), dev).ctx("timestep table")
}

/// `z_t = sqrt(abar[t]) z0 + sqrt(1-abar[t]) noise` (q_sample).
pub fn q_sample(z0: &Tensor, t: &[usize], noise: &Tensor, sched: &Schedule) -> Result<Tensor, TrainError> {
    let b = z0.dim(0).ctx("z0")?;
    if t.len() != b || noise.dims() != z0.dims() {
        return Err(TrainError::Unsupported(format!(
            "q_sample: z0 {:?}, noise {:?} and {} timesteps do not match",
            z0.dims(),
            noise.dims(),
            t.len()
        )));
    }
    let dev = z0.device();
    let a = per_sample(&sched.sqrt_alphas_cumprod, t, dev)?;
    let s = per_sample(&sched.sqrt_one_minus_alphas_cumprod, t, dev)?;
    (z0.broadcast_mul(&a).ctx("q_sample")? + noise.broadcast_mul(&s).ctx("q_sample")?).ctx("q_sample")
}

/// The stage-(b) loss on one batch: `z0 = latent * scale_factor` `[B,C,D,H,W]`, DDPM indices `t` (length B),
/// `noise` like `z0`. Returns the scalar `mean((noise - unet.forward_eps(z_t, t))^2)`.
pub fn loss(
    unet: &ShiftUnet,
    z0: &Tensor,
    t: &[usize],
    noise: &Tensor,
    sched: &Schedule,
) -> Result<Tensor, TrainError> {
    let z_t = q_sample(z0, t, noise, sched)?;
    let tf: Vec<f32> = t.iter().map(|&i| i as f32).collect();
    let eps = unet.forward_eps(&z_t, &tf).ctx("UNet forward")?;
    (noise - eps).ctx("loss")?.sqr().ctx("loss")?.mean_all().ctx("loss")
}

/// One-step estimate of z0 from `z_t` and a predicted noise: `(z_t - sqrt(1-abar) eps) / sqrt(abar)`.
pub fn predict_z0(z_t: &Tensor, t: &[usize], eps: &Tensor, sched: &Schedule) -> Result<Tensor, TrainError> {
    let dev = z_t.device();
    let a = per_sample(&sched.sqrt_alphas_cumprod, t, dev)?;
    let s = per_sample(&sched.sqrt_one_minus_alphas_cumprod, t, dev)?;
    (z_t - eps.broadcast_mul(&s).ctx("z0")?).ctx("z0")?.broadcast_div(&a).ctx("z0")
}
