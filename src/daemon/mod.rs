//! The daemon: watch the drop folders, take complete files in (header only), decide when a series is stable, and
//! run every stage as a persistent job; quarantine what cannot be used, call hooks, talk to systemd.
//!
//! Threads: the tokio runtime only waits (signals, timers, watcher events); the intake thread settles, hashes and
//! records files; CPU stages run on tokio's blocking pool; the model runs on one dedicated thread; hooks on
//! their own. All state lives in the [`crate::store::Store`], so `kill -9` at any point loses nothing: on start,
//! running jobs are requeued, pending series re-armed, and files still in the drop folders rescanned.

pub mod delivery;
pub mod digest;
pub mod files;
pub mod hooks;
pub mod intake;
pub mod jobs;
pub mod owner;
pub mod poison;
pub mod quarantine;
pub mod run;
pub mod stability;
pub mod stage_encode;
pub mod stage_fill;
pub mod stage_preprocess;
pub mod stages;
pub mod systemd;
pub mod watch;

#[cfg(test)]
mod durable_tests;

use std::path::PathBuf;

pub use run::serve;

/// Why the daemon (or an operator command acting on its state) failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}
