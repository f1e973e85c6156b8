//! Operator commands: `ldae commit|status|jobs|quarantine|config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    pub series_uid: String,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (default: --config).
    Check { file: Option<PathBuf> },
}

pub fn commit(_a: CommitArgs, _c: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 5)")
}
pub fn status(_a: StatusArgs, _c: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 5)")
}
pub fn jobs(_a: JobsCommand, _c: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 5)")
}
pub fn quarantine(_a: QuarantineCommand, _c: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet (issue 5)")
}

/// `ldae config check [FILE]`.
pub fn config(c: ConfigCommand, default: &Path) -> anyhow::Result<ExitCode> {
    match c {
        ConfigCommand::Check { file } => {
            let path = file.as_deref().unwrap_or(default);
            crate::config::Config::load(path)?;
            println!("{}: ok", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
