//! Training the three LDAE stages of SPEC §1 with the same networks and ops inference uses:
//! (a) the AutoencoderKL (sampled latent, L1 + KL), (b) latent DDPM pre-training of the ShiftUNet's epsilon path,
//! (c) representation learning (frozen epsilon path; semantic encoder + shift branch trained with the weighted
//! shift loss). Each stage module exposes a one-step `loss` on explicit inputs (weights, batch, noise, timesteps);
//! [`runner`] drives them with Adam, clipping, accumulation, EMA, checkpoints, validation and a JSON-lines log.

pub mod aekl;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod ddpm;
pub mod error;
pub mod optim;
pub mod params;
pub mod repr;
pub mod runner;
pub mod schedule;
pub mod ssim;

pub use error::TrainError;

/// Which training stage (SPEC §1 a/b/c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// §1(a): the AutoencoderKL.
    Aekl,
    /// §1(b): latent DDPM pre-training of the plain UNet (the ShiftUNet's epsilon path).
    Ddpm,
    /// §1(c): representation learning (semantic encoder + shift branch).
    Repr,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Aekl => "aekl",
            Stage::Ddpm => "ddpm",
            Stage::Repr => "repr",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
