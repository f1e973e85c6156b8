//! `ldae synthetic list|show`: the synthetic timepoints the daemon made, their sources, state and files.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;
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
    let store = Store::open_existing_in(&cfg.paths.state)?;
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
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
