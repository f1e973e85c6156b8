//! `ldae synthetic list|show|resend`: the synthetic timepoints the daemon made, their sources, state and files,
//! and sending one to the PACS again.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;
use crate::daemon::delivery::deliver::{deliver_job, DELIVER};
use crate::longitudinal::timeline::SyntheticState;
use crate::store::{Store, SyntheticRow};

#[derive(Debug, Subcommand)]
pub enum SyntheticCommand {
    /// The newest synthetic timepoints (all patients, or one).
    List {
        /// Only this patient (PatientID or patient key).
        #[arg(long)]
        patient: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One synthetic timepoint, whole.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Enqueue the delivery of a written, failed or delivered timepoint to `[delivery] pacs` again (every
    /// instance is sent; the PACS keeps one copy per UID). Prints the job.
    Resend {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

fn line(s: &SyntheticRow) -> String {
    format!(
        "{:>5}  {}  {:<10}  {:<10}  alpha {:.3}  {} + {}",
        s.id,
        s.patient_key,
        s.target_date.as_deref().unwrap_or("-"),
        s.state.as_str(),
        s.alpha.unwrap_or(f64::NAN),
        s.from_series_uid.as_deref().unwrap_or("-"),
        s.to_series_uid.as_deref().unwrap_or("-")
    )
}

/// `ldae synthetic`.
pub fn run(c: SyntheticCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let store = Store::open_existing_at(&crate::store::Location::of(&cfg))?;
    match c {
        SyntheticCommand::List { patient, limit, json } => {
            let rows = match patient {
                Some(p) => {
                    let key = super::timeline::resolve_patient(&store, &p)?;
                    store.synthetic_of_patient(&key)?.into_iter().rev().take(limit).collect()
                }
                None => store.synthetic_all(limit)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{} synthetic timepoint(s)", rows.len());
                rows.iter().for_each(|s| println!("{}", line(s)));
            }
        }
        SyntheticCommand::Show { id, json } => {
            let s = store.synthetic(id)?.with_context(|| format!("no synthetic timepoint {id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{}", line(&s));
                println!("volume: {}", s.path);
                println!(
                    "model: {} {} ({} steps)",
                    s.model_id.as_deref().unwrap_or("-"),
                    s.model_version.as_deref().unwrap_or("-"),
                    s.steps.unwrap_or(0)
                );
                if let Some(n) = &s.state_note {
                    println!("note: {n}");
                }
                if let Some(u) = &s.dicom_series_uid {
                    println!("DICOM series: {u} in {}", s.dicom_dir.as_deref().unwrap_or("-"));
                }
                let d = store.deliveries_of(s.id)?;
                if let Some(last) = d.last() {
                    println!("deliveries: {} confirmed instance(s), last to {}", d.len(), last.peer);
                }
            }
        }
        SyntheticCommand::Resend { id, json } => resend(&store, &cfg, id, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `ldae synthetic resend ID`: a new delivery job (its key counts the resends).
fn resend(store: &Store, cfg: &Config, id: i64, json: bool) -> anyhow::Result<()> {
    let s = store.synthetic(id)?.with_context(|| format!("no synthetic timepoint {id}"))?;
    if !matches!(s.state, SyntheticState::Written | SyntheticState::Failed | SyntheticState::Delivered) {
        anyhow::bail!(
            "synthetic timepoint {id} is {}: only written, failed or delivered ones are sent",
            s.state.as_str()
        );
    }
    if s.dicom_dir.is_none() {
        anyhow::bail!("synthetic timepoint {id} has no DICOM series (written on the template grid)");
    }
    let peer = cfg.delivery.peer().map_err(|e| anyhow::anyhow!("delivery.pacs: {e}"))?;
    let peer = peer.context("delivery.pacs is not set: nowhere to send to")?;
    let key = s.content_key.clone().with_context(|| format!("synthetic timepoint {id} has no content key"))?;
    let done = store.jobs_with_key_prefix(DELIVER.as_str(), &format!("{DELIVER}:{key}"))?;
    let job = deliver_job(&key, u32::try_from(done).unwrap_or(u32::MAX));
    let inserted = store.enqueue(&job)?;
    let row = store.job_by_key(&job.key)?.context("the delivery job vanished after enqueueing")?;
    if json {
        let out = serde_json::json!({ "synthetic": id, "enqueued": inserted, "peer": peer.to_string(), "job": row });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "job {} ({}) {}: deliver synthetic timepoint {id} to {peer}",
            row.id,
            row.key,
            if inserted { "enqueued" } else { "already known" }
        );
    }
    Ok(())
}
