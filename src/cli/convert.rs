//! `ldae convert`: DICOM files/folders → NIfTI + JSON sidecar per series.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `ldae convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(_args: ConvertArgs, _config: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ldae convert is not built yet (issue 2)")
}
