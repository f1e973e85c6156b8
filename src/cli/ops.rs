//! Operator commands: `ldae commit|status|jobs|quarantine|config`. Each opens the store next to a possibly
//! running daemon (WAL: reads never block it; writes wait briefly for its lock) and offers `--json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::store::{JobState, Store};

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// SeriesInstanceUID of a series still receiving.
    pub series_uid: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
    /// How many recent series to list.
    #[arg(long, default_value_t = 20)]
    pub series: usize,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List {
        /// Only jobs in this state: pending, running, done, dead, cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run a dead, cancelled or waiting job again now, with a fresh attempt budget.
    Retry {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a pending job.
    Cancel {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// Quarantined files with their reasons.
    List {
        /// Include requeued and purged entries.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Move a quarantined file back into its drop folder for another intake.
    Requeue {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Delete a quarantined file (and its sidecar) for good.
    Purge {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (default: --config).
    Check { file: Option<PathBuf> },
}

fn open(config: &Path) -> anyhow::Result<(Config, Store)> {
    let cfg = Config::load(config)?;
    let store = Store::open_existing_at(&crate::store::Location::of(&cfg))?;
    Ok((cfg, store))
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v).context("serialising JSON")?);
    Ok(())
}

fn ok(json: bool, what: serde_json::Value, text: &str) -> anyhow::Result<ExitCode> {
    if json {
        print_json(&what)?;
    } else {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `ldae commit SERIES_UID`.
pub fn commit(a: CommitArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let (_, store) = open(config)?;
    store.request_commit(&a.series_uid)?;
    ok(
        a.json,
        serde_json::json!({ "series_uid": a.series_uid, "commit_requested": true }),
        &format!("series {}: commit requested (the daemon marks it ready within a second)", a.series_uid),
    )
}

fn when(t: f64) -> String {
    let secs = (crate::store::now() - t).max(0.0);
    if secs < 120.0 {
        format!("{secs:.0} s ago")
    } else if secs < 7200.0 {
        format!("{:.0} min ago", secs / 60.0)
    } else {
        format!("{:.1} h ago", secs / 3600.0)
    }
}

/// `ldae status`.
pub fn status(a: StatusArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let (_, store) = open(config)?;
    let st = store.status(a.series)?;
    if a.json {
        print_json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("store: {} (schema {})", store.location(), st.schema_version);
    println!(
        "instances: {} ({} in the last hour), duplicates: {}, quarantined: {}",
        st.instances, st.instances_last_hour, st.duplicates, st.quarantined
    );
    let by_state: Vec<String> = st.series_by_state.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!("series: {} ({} finished in the last hour)", by_state.join(", "), st.series_finished_last_hour);
    println!("jobs:");
    for j in &st.jobs {
        println!("  {:<10} {:<10} {}", j.kind, j.state, j.count);
    }
    if !st.last_errors.is_empty() {
        println!("last errors:");
        for j in &st.last_errors {
            println!(
                "  job {} {} ({}, attempt {}): {}",
                j.id,
                j.kind,
                j.state,
                j.attempts,
                j.last_error.as_deref().unwrap_or("")
            );
        }
    }
    if !st.series.is_empty() {
        println!("recent series:");
        for s in &st.series {
            println!(
                "  {} patient {} {} instances={} volumes={} embeddings={} last instance {}{}",
                s.series_uid,
                match (&s.patient_id, &s.issuer_of_patient_id) {
                    (Some(id), Some(issuer)) => format!("{id} ({issuer})"),
                    (Some(id), None) => id.clone(),
                    (None, _) => "(no PatientID: keyed by its study)".into(),
                },
                s.state,
                s.instances,
                s.volumes,
                s.embeddings,
                when(s.last_instance_at),
                s.note.as_deref().map(|n| format!(" — {n}")).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ldae jobs list|retry|cancel`.
pub fn jobs(c: JobsCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let (_, store) = open(config)?;
    match c {
        JobsCommand::List { state, limit, json } => {
            let state = match state.as_deref() {
                None => None,
                Some(s) => Some(
                    JobState::parse(s)
                        .with_context(|| format!("--state {s}: expected pending, running, done, dead or cancelled"))?,
                ),
            };
            let jobs = store.jobs_list(state, limit)?;
            if json {
                print_json(&jobs)?;
            } else {
                for j in &jobs {
                    println!(
                        "{:>6} {:<9} {:<9} attempts={} series={} ({}) {}",
                        j.id,
                        j.kind,
                        j.state,
                        j.attempts,
                        j.series_uid.as_deref().unwrap_or("-"),
                        j.series_state.as_deref().unwrap_or("-"),
                        j.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Retry { id, json } => {
            store.job_retry(id)?;
            ok(json, serde_json::json!({ "job": id, "state": "pending" }), &format!("job {id}: queued again"))
        }
        JobsCommand::Cancel { id, json } => {
            store.job_cancel(id)?;
            ok(json, serde_json::json!({ "job": id, "state": "cancelled" }), &format!("job {id}: cancelled"))
        }
    }
}

/// `ldae quarantine list|requeue|purge`.
pub fn quarantine(c: QuarantineCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let (cfg, store) = open(config)?;
    match c {
        QuarantineCommand::List { all, json } => {
            let rows = store.quarantine_list(all)?;
            if json {
                print_json(&rows)?;
            } else {
                for r in &rows {
                    println!("{:>6} {:<22} {:<8} {}  ({})", r.id, r.reason, r.state, r.path, r.detail);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Requeue { id, json } => {
            let to = crate::daemon::quarantine::requeue(&store, &cfg, id)?;
            ok(
                json,
                serde_json::json!({ "id": id, "state": "requeued", "path": to }),
                &format!("quarantine entry {id}: back in {}", to.display()),
            )
        }
        QuarantineCommand::Purge { id, json } => {
            crate::daemon::quarantine::purge(&store, id)?;
            ok(json, serde_json::json!({ "id": id, "state": "purged" }), &format!("quarantine entry {id}: purged"))
        }
    }
}

/// `ldae config check [FILE]`.
pub fn config(c: ConfigCommand, default: &Path) -> anyhow::Result<ExitCode> {
    match c {
        ConfigCommand::Check { file } => {
            let path = file.as_deref().unwrap_or(default);
            let cfg = crate::config::Config::load(path)?;
            println!("{}: ok", path.display());
            // The resolved paths (relative ones are relative to the file's folder).
            let p = &cfg.paths;
            for d in &p.incoming {
                println!("  paths.incoming = {}", d.display());
            }
            println!("  paths.state = {}", p.state.display());
            println!("  paths.quarantine = {}", p.quarantine.display());
            println!("  paths.archive = {}", p.archive.display());
            println!("  paths.outputs = {}", p.outputs.display());
            println!("  preprocess.template = {}", cfg.preprocess.template.display());
            println!("  preprocess.template_mask = {}", cfg.preprocess.template_mask.display());
            println!("  model.dir = {}", cfg.model.dir.display());
            for (i, probe) in cfg.lookup.probes.iter().enumerate() {
                println!("  lookup.probes[{i}] = {}", probe.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
