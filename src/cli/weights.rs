//! `ldae weights convert|check`: published `.pth` files → safetensors + manifest, and verification.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum WeightsCommand {
    /// Convert a model directory's .pth files to safetensors and write a manifest (sha256 + config).
    Convert { dir: PathBuf },
    /// Verify a model directory: keys, shapes and manifest checksums.
    Check { dir: PathBuf },
}

pub fn run(_c: WeightsCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 3)")
}
