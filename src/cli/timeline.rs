//! `ldae timeline PATIENT`: a patient's acquired and synthetic timepoints in date order, with ages, and what the
//! gap policy (`[longitudinal]`) sees between them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::Config;
use crate::longitudinal::dates;
use crate::longitudinal::timeline::{Timeline, Timepoint};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The patient: a DICOM PatientID, or a patient key as `ldae status` shows it (`id:ISSUER\ID`, `study:UID`).
    pub patient: String,
    /// The model whose encodings make the timepoints (default: the configured model).
    #[arg(long)]
    pub model: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The one patient key `patient` names, or a clear error.
pub fn resolve_patient(store: &Store, patient: &str) -> anyhow::Result<String> {
    let keys = store.patient_keys(patient)?;
    match keys.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no patient {patient:?} in the store"),
        many => bail!(
            "PatientID {patient:?} names {} patients (different issuers): pass one of the keys {}",
            many.len(),
            many.join(", ")
        ),
    }
}

/// The timeline of `patient_key` for `model`, from the store.
pub fn load(store: &Store, cfg: &Config, patient_key: &str, model: &str) -> anyhow::Result<Timeline> {
    let (acquired, synthetic) = store.timeline_inputs(patient_key, model)?;
    Ok(Timeline::build(patient_key, acquired, synthetic, &cfg.longitudinal))
}

fn age(a: Option<f64>) -> String {
    a.map(|a| format!("{a:.1}")).unwrap_or_else(|| "-".into())
}

/// `ldae timeline`.
pub fn run(a: TimelineArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let store = Store::open_existing_at(&crate::store::Location::of(&cfg))?;
    let key = resolve_patient(&store, &a.patient)?;
    let model = a.model.unwrap_or_else(|| cfg.model.id());
    let t = load(&store, &cfg, &key, &model)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t).context("serialising the timeline")?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("patient {key} (model {model}): {} timepoint(s)", t.points.len());
    println!("{:<10}  {:>5}  {:<10}  what", "date", "age", "kind");
    for p in &t.points {
        let date = p.date().map(dates::iso).unwrap_or_else(|| "undated".into());
        match p {
            Timepoint::Acquired { scan } => println!(
                "{date:<10}  {:>5}  {:<10}  {} {}",
                age(scan.age),
                "acquired",
                scan.series_uid,
                scan.description.as_deref().unwrap_or("")
            ),
            Timepoint::Synthetic { scan, age: a } => println!(
                "{date:<10}  {:>5}  {:<10}  {} (alpha {:.3} between {} and {}){}",
                age(*a),
                "synthetic",
                scan.state.as_str(),
                scan.alpha,
                scan.sources.0,
                scan.sources.1,
                scan.dicom_series_uid.as_deref().map(|u| format!(" series {u}")).unwrap_or_default()
            ),
        }
    }
    for f in &t.plan.fills {
        println!(
            "gap: {} to fill from {} and {} (alpha {:.3})",
            dates::iso(f.target),
            dates::iso(f.earlier),
            dates::iso(f.later),
            f.alpha
        );
    }
    for (d, why) in &t.plan.refused {
        println!("gap: {} not filled: {why}", dates::iso(*d));
    }
    Ok(ExitCode::SUCCESS)
}
