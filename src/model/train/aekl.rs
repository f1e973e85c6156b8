//! Stage (a), SPEC §1a: the AutoencoderKL's generator loss on a *sampled* latent `z = mu + sigma * eps`:
//! `L1(recon, x) + kl_weight * KL`. The LPIPS-3D and PatchGAN terms are config switches that the
//! configuration refuses to turn on (no pretrained LPIPS offline; no discriminator in this version).

use candle_core::Tensor;

use super::error::{Ctx, TrainError};
use crate::model::autoencoder::AutoencoderKl;

/// Generator loss weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AeklLossWeights {
    /// KL weight (the reference: 1e-7).
    pub kl: f64,
    /// LPIPS-3D weight (must be 0 here).
    pub perceptual: f64,
    /// LSGAN generator weight (must be 0 here).
    pub adversarial: f64,
}

impl Default for AeklLossWeights {
    fn default() -> Self {
        AeklLossWeights { kl: 1e-7, perceptual: 0.0, adversarial: 0.0 }
    }
}

/// The loss and its parts (scalars) and the reconstruction.
#[derive(Debug, Clone)]
pub struct AeklLosses {
    /// `l1 + kl_weight * kl`.
    pub total: Tensor,
    /// `mean|recon - x|`.
    pub l1: Tensor,
    /// `mean_over_batch(0.5 * sum(mu^2 + sigma^2 - ln sigma^2 - 1))`.
    pub kl: Tensor,
    /// `decode(mu + sigma * eps_sample)`, like `x`.
    pub recon: Tensor,
}

/// The stage-(a) loss: `x` `[B,1,X,Y,Z]`, `eps_sample` the standard normal draw of the latent's shape.
pub fn loss(
    ae: &AutoencoderKl,
    x: &Tensor,
    eps_sample: &Tensor,
    w: &AeklLossWeights,
) -> Result<AeklLosses, TrainError> {
    if w.perceptual != 0.0 || w.adversarial != 0.0 {
        return Err(TrainError::Unsupported(
            "AEKL perceptual (LPIPS) and adversarial (PatchGAN) terms are not available in this build".into(),
        ));
    }
    let post = ae.encode(x).ctx("AutoencoderKL encode")?;
    if eps_sample.dims() != post.mu.dims() {
        return Err(TrainError::Unsupported(format!(
            "eps_sample {:?} does not match the latent {:?}",
            eps_sample.dims(),
            post.mu.dims()
        )));
    }
    let sigma = post.sigma().ctx("sigma")?;
    let z = (&post.mu + (&sigma * eps_sample).ctx("sample")?).ctx("sample")?;
    let recon = ae.decode(&z).ctx("AutoencoderKL decode")?;
    let l1 = (&recon - x).ctx("l1")?.abs().ctx("l1")?.mean_all().ctx("l1")?;
    let b = x.dim(0).ctx("x")? as f64;
    // mu^2 + sigma^2 - logvar - 1, summed, averaged over the batch.
    let kl_terms = ((post.mu.sqr().ctx("kl")? + sigma.sqr().ctx("kl")?).ctx("kl")? - &post.logvar).ctx("kl")?;
    let kl = ((kl_terms - 1.0).ctx("kl")?.sum_all().ctx("kl")? * (0.5 / b)).ctx("kl")?;
    let total = (&l1 + (&kl * w.kl).ctx("total")?).ctx("total")?;
    Ok(AeklLosses { total, l1, kl, recon })
}
