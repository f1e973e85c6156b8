//! `ldae serve`: the daemon.

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub fn run(_a: ServeArgs, _config: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 5)")
}
