//! `ldae encode|decode|interpolate|manipulate`: the LDAE model on NIfTI inputs already in model-input space.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    /// Model directory (config.json + weights).
    #[arg(long)]
    pub model: PathBuf,
    pub input: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    #[arg(long)]
    pub model: PathBuf,
    pub input: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct InterpolateArgs {
    #[arg(long)]
    pub model: PathBuf,
    pub a: PathBuf,
    pub b: PathBuf,
    #[arg(long)]
    pub alpha: f32,
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ManipulateArgs {
    #[arg(long)]
    pub model: PathBuf,
    pub input: PathBuf,
    #[arg(long)]
    pub direction: PathBuf,
    #[arg(long)]
    pub scale: f32,
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn encode(_a: EncodeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 3)")
}
pub fn decode(_a: DecodeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 3)")
}
pub fn interpolate(_a: InterpolateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 3)")
}
pub fn manipulate(_a: ManipulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 3)")
}
