//! `ldae fill PATIENT --date YYYY-MM-DD`: ask the daemon for one synthetic timepoint. The gap policy checks the
//! date first (interpolation only; refusals say why); the fill job is keyed by its content, so asking twice
//! enqueues nothing new. `--wait` waits until the daemon has made it.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::config::Config;
use crate::daemon::stage_fill::{fill_job, scan_on};
use crate::longitudinal::{dates, policy};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct FillArgs {
    /// The patient: a DICOM PatientID or a patient key.
    pub patient: String,
    /// The date of the missing timepoint (between two acquired scans).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: String,
    /// Wait until the daemon has made the timepoint (or the job failed).
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub timeout: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ldae fill`.
pub fn run(a: FillArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let target = dates::parse(&a.date).with_context(|| format!("--date {:?} is not a date (YYYY-MM-DD)", a.date))?;
    let store = Store::open_existing_in(&cfg.paths.state)?;
    let key = super::timeline::resolve_patient(&store, &a.patient)?;
    let model = cfg.model.id();
    let timeline = super::timeline::load(&store, &cfg, &key, &model)?;
    let scan_dates: Vec<_> = timeline
        .points
        .iter()
        .filter_map(|p| match p {
            crate::longitudinal::timeline::Timepoint::Acquired { scan } => scan.date,
            _ => None,
        })
        .collect();
    let fill = policy::check_target(&scan_dates, target, &cfg.longitudinal)
        .map_err(|why| anyhow::anyhow!("patient {key}: {} not filled: {why}", dates::iso(target)))?;
    let (Some(from), Some(to)) = (scan_on(&timeline, fill.earlier), scan_on(&timeline, fill.later)) else {
        bail!("patient {key}: the scans around {} are not encoded by model {model}", dates::iso(target));
    };
    let job = fill_job(&store, &cfg, &key, &fill, (from, to), true).map_err(|e| anyhow::anyhow!("{e}"))?;
    let inserted = store.enqueue(&job)?;
    let row = store.job_by_key(&job.key)?.context("the fill job vanished after enqueueing")?;
    if !a.json {
        println!(
            "fill job {} ({}) for patient {key} at {}: alpha {:.3} between {} and {}",
            row.id,
            if inserted { "enqueued" } else { "already known" },
            dates::iso(target),
            fill.alpha,
            dates::iso(fill.earlier),
            dates::iso(fill.later)
        );
    }
    let mut out = serde_json::json!({ "job": row.id, "enqueued": inserted, "patient_key": key, "fill": fill });
    if a.wait {
        let start = Instant::now();
        let done = loop {
            let j = store.job(row.id)?;
            if ["done", "dead", "cancelled"].contains(&j.state.as_str()) {
                break j;
            }
            if start.elapsed().as_secs_f64() > a.timeout {
                bail!("fill job {}: still {} after {:.0} s (is `ldae serve` running?)", row.id, j.state, a.timeout);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if done.state != "done" {
            bail!("fill job {} ended {}: {}", done.id, done.state, done.last_error.unwrap_or_default());
        }
        let synthetic =
            store.synthetic_of_patient(&key)?.into_iter().find(|s| s.content_key.as_deref() == Some(&job.key));
        let synthetic = synthetic.context("the fill job finished but recorded no synthetic timepoint")?;
        if !a.json {
            println!("synthetic timepoint {} written: {}", synthetic.id, synthetic.path);
        }
        out["synthetic"] = serde_json::to_value(&synthetic)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}
