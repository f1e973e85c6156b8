//! `ldae serve`: the daemon (see [`crate::daemon`]), in one of three roles.

use std::path::Path;
use std::process::ExitCode;

use crate::daemon::run::{Role, ServeOptions};
use crate::store::JobKind;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Several processes may share one state folder (one SQLite database in WAL mode): one `--role \
intake` (it holds the state folder's lock; a second one is refused) and any number of `--role worker`, e.g. \
`--kinds encode,fill` on a GPU host and the CPU kinds elsewhere. Every job a worker claims is leased to it \
(`[jobs] lease_secs`, renewed every lease/3): a worker that dies or stalls past its lease loses its jobs to the \
others, and records nothing for them afterwards.")]
pub struct ServeArgs {
    /// intake: watch the drop folders, record files, decide stability, enqueue (runs no jobs, hooks included);
    /// worker: run jobs only (no folder watch); all: both (one box).
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// The job kinds this process runs (worker or all; default every kind), comma-separated: convert, archive,
    /// preprocess, encode, plan, fill, deliver, hook.
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Option<Vec<JobKind>>,
}

fn parse_kind(s: &str) -> Result<JobKind, String> {
    s.parse::<JobKind>().map_err(|e| e.to_string())
}

/// Run until SIGTERM/SIGINT; errors (bad config, state folder locked by another daemon) end it with one line.
pub fn run(a: ServeArgs, config: &Path) -> anyhow::Result<ExitCode> {
    crate::daemon::serve(config, &ServeOptions { role: a.role, kinds: a.kinds })?;
    Ok(ExitCode::SUCCESS)
}
