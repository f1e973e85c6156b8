//! `ldae serve`: the daemon (see [`crate::daemon`]).

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Run until SIGTERM/SIGINT; errors (bad config, state folder locked by another daemon) end it with one line.
pub fn run(_a: ServeArgs, config: &Path) -> anyhow::Result<ExitCode> {
    crate::daemon::serve(config)?;
    Ok(ExitCode::SUCCESS)
}
