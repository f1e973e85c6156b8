//! `ldae register|preprocess|unwarp`: template registration and model input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    pub moving: PathBuf,
    #[arg(long)]
    pub template: Option<PathBuf>,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long)]
    pub transform: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PreprocessArgs {
    pub input: PathBuf,
    #[arg(long)]
    pub model: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UnwarpArgs {
    pub input: PathBuf,
    #[arg(long)]
    pub transform: PathBuf,
    #[arg(long)]
    pub reference: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn register(_a: RegisterArgs, _config: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 4)")
}
pub fn preprocess(_a: PreprocessArgs, _config: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 4)")
}
pub fn unwarp(_a: UnwarpArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 4)")
}
