//! The command line: one file per command group, each with its clap `Args` and a `run` returning the exit code.
//!
//! This is the only layer (with `main.rs`) that uses `anyhow`; library modules return typed errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod convert;
pub mod fill;
pub mod lookup;
pub mod lookup_pictures;
pub mod model;
pub mod n4;
pub mod ops;
pub mod preprocess;
pub mod probe;
pub mod report;
pub mod send;
pub mod serve;
pub mod similar;
pub mod synthetic;
pub mod timeline;
pub mod train;
pub mod transforms;
pub mod weights;

/// ldae: latent diffusion autoencoders beside a hospital's PACS.
///
/// DICOM dropped in a folder becomes a 3-D volume, is registered to the MNI template, encoded by the LDAE model
/// and stored; missing timepoints of a patient can be synthesised. Every stage is also a command of its own.
#[derive(Debug, Parser)]
#[command(name = "ldae", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML); relative paths in it are relative to its folder. Default: the first of
    /// ./config/ldae.toml, <binary's folder>/ldae.toml, /etc/ldae/ldae.toml, the built checkout's config/ldae.toml.
    #[arg(long, global = true, env = "LDAE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax), e.g. `info`, `ldae=debug`.
    #[arg(long, global = true, env = "LDAE_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines (for journald / log shippers).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert DICOM files or folders into NIfTI volumes (+ JSON sidecars), one per series.
    Convert(convert::ConvertArgs),
    /// Encode a model-input NIfTI into LDAE codes (y_sem, x_T, latent).
    Encode(model::EncodeArgs),
    /// Decode LDAE codes back into a volume (DDIM sampling + autoencoder decode).
    Decode(model::DecodeArgs),
    /// Synthesise a volume between two scans (lerp y_sem, slerp x_T).
    Interpolate(model::InterpolateArgs),
    /// Move a scan along a semantic direction (e.g. a linear probe's weight row).
    Manipulate(model::ManipulateArgs),
    /// Install, convert and verify model weights.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// Register a volume to the template (rigid, then affine, then optionally deformable).
    Register(preprocess::RegisterArgs),
    /// Correct a scan for a smooth bias field (N4-style).
    N4(n4::N4Args),
    /// Register, mask and produce the model's exact input.
    Preprocess(preprocess::PreprocessArgs),
    /// Map a template-space volume back onto a subject's native grid.
    Unwarp(preprocess::UnwarpArgs),
    /// Resample an image through a chain of transforms (ITK/ANTs affines and displacement fields).
    ApplyTransform(transforms::ApplyTransformArgs),
    /// Run the daemon: watch the drop folders and process every series.
    Serve(serve::ServeArgs),
    /// Mark a pending series complete now, without waiting for its quiet period.
    Commit(ops::CommitArgs),
    /// Queues, last errors and throughput.
    Status(ops::StatusArgs),
    /// List, retry or cancel jobs.
    #[command(subcommand)]
    Jobs(ops::JobsCommand),
    /// List, requeue or purge quarantined files.
    #[command(subcommand)]
    Quarantine(ops::QuarantineCommand),
    /// Three orthogonal mid-slices of a NIfTI volume as one labelled PNG.
    Preview(lookup_pictures::PreviewArgs),
    /// One self-contained HTML page of a patient: timeline with previews, nearest neighbours, probe scores.
    Report(report::ReportArgs),
    /// The stored scans most similar to a scan (exact cosine top-k on y_sem).
    Similar(similar::SimilarArgs),
    /// Write the stored embeddings as CSV, JSON lines or NPY (+ a CSV index).
    Export(similar::ExportArgs),
    /// Fit and apply linear probes on stored y_sem codes.
    #[command(subcommand)]
    Probe(probe::ProbeCommand),
    /// A patient's acquired and synthetic timepoints, with ages and the gaps the policy sees.
    Timeline(timeline::TimelineArgs),
    /// Ask the daemon for a synthetic timepoint of a patient at a date between two scans.
    Fill(fill::FillArgs),
    /// The synthetic timepoints made so far.
    #[command(subcommand)]
    Synthetic(synthetic::SyntheticCommand),
    /// Send DICOM files or folders to a PACS by C-STORE (one association per series).
    Send(send::SendArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ops::ConfigCommand),
    /// Train an LDAE stage (aekl, ddpm, repr) on model inputs; `--config` names the training configuration.
    Train(train::TrainArgs),
}

/// Set up logging to stderr.
fn init_logging(filter: &str, json: bool) {
    let env =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(env).with_writer(std::io::stderr).with_target(false);
    let _ = if json { builder.json().try_init() } else { builder.compact().try_init() };
}

/// Parse the command line, run the command, turn errors into one line on stderr and an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    if matches!(cli.command, Command::Train(_)) {
        crate::alloc_cache::set_budget(crate::alloc_cache::TRAIN_BUDGET);
    }
    if let Err(e) = alloc_cache_from_env() {
        eprintln!("error: {}", format_error(&e));
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", format_error(&e));
            ExitCode::from(2)
        }
    }
}

/// `LDAE_ALLOC_CACHE_MB`: the most memory the allocator's cache of large freed blocks may hold (0 turns it off;
/// default [`crate::alloc_cache::DEFAULT_BUDGET`], [`crate::alloc_cache::TRAIN_BUDGET`] for `ldae train`).
fn alloc_cache_from_env() -> anyhow::Result<()> {
    let Ok(v) = std::env::var("LDAE_ALLOC_CACHE_MB") else { return Ok(()) };
    let mb: usize =
        v.trim().parse().map_err(|_| anyhow::anyhow!("LDAE_ALLOC_CACHE_MB={v:?}: expected a whole number of MiB"))?;
    crate::alloc_cache::set_budget(mb.saturating_mul(1 << 20));
    Ok(())
}

/// One line: the error and its causes joined by ": ".
pub fn format_error(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Dispatch a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let train_config = cli.config.clone();
    let config = cli.config.clone().unwrap_or_else(crate::config::default_config_path);
    match cli.command {
        Command::Convert(a) => convert::run(a, &config),
        Command::Encode(a) => model::encode(a),
        Command::Decode(a) => model::decode(a),
        Command::Interpolate(a) => model::interpolate(a),
        Command::Manipulate(a) => model::manipulate(a),
        Command::Weights(c) => weights::run(c),
        Command::Register(a) => preprocess::register(a, &config),
        Command::Preprocess(a) => preprocess::preprocess(a, &config),
        Command::N4(a) => n4::run(a, &config),
        Command::Unwarp(a) => preprocess::unwarp(a),
        Command::ApplyTransform(a) => transforms::apply_transform(a, &config),
        Command::Serve(a) => serve::run(a, &config),
        Command::Commit(a) => ops::commit(a, &config),
        Command::Status(a) => ops::status(a, &config),
        Command::Timeline(a) => timeline::run(a, &config),
        Command::Fill(a) => fill::run(a, &config),
        Command::Synthetic(c) => synthetic::run(c, &config),
        Command::Jobs(c) => ops::jobs(c, &config),
        Command::Quarantine(c) => ops::quarantine(c, &config),
        Command::Config(c) => ops::config(c, &config),
        Command::Preview(a) => lookup_pictures::preview(a),
        Command::Send(a) => send::run(a, &config),
        Command::Report(a) => report::run(a, &config),
        Command::Similar(a) => similar::similar(a, &config),
        Command::Export(a) => similar::export(a, &config),
        Command::Probe(c) => probe::run(c, &config),
        Command::Train(a) => train::run(a, train_config.as_deref()),
    }
}
