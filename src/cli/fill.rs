//! `ldae fill PATIENT --date YYYY-MM-DD`: ask the daemon for one synthetic timepoint. The gap policy checks the
//! date first (interpolation only; refusals say why); the fill job is keyed by its content, so asking twice
//! enqueues nothing new. `--wait` waits until the daemon has made it and, with `[delivery] pacs` set, delivered it.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::config::Config;
use crate::daemon::delivery::deliver::deliver_job;
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
    /// Wait until the daemon has made the timepoint and delivered it to `[delivery] pacs`, if set (or failed).
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
    let store = Store::open_existing_at(&crate::store::Location::of(&cfg))?;
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
        let done = wait_job(&store, row.id, start, a.timeout, "fill")?;
        if done.state != "done" {
            bail!("fill job {} ended {}: {}", done.id, done.state, done.last_error.unwrap_or_default());
        }
        let find = || -> anyhow::Result<crate::store::SyntheticRow> {
            let s = store.synthetic_of_patient(&key)?.into_iter().find(|s| s.content_key.as_deref() == Some(&job.key));
            s.context("the fill job finished but recorded no synthetic timepoint")
        };
        let mut synthetic = find()?;
        if !a.json {
            println!("synthetic timepoint {} written: {}", synthetic.id, synthetic.path);
        }
        // With a PACS configured, the fill enqueued its delivery: wait for that too.
        if let Some(d) = store.job_by_key(&deliver_job(&job.key, 0).key)? {
            let d = wait_job(&store, d.id, start, a.timeout, "delivery")?;
            synthetic = find()?;
            if d.state != "done" {
                bail!(
                    "synthetic timepoint {} written but not delivered: delivery job {} ended {}: {}",
                    synthetic.id,
                    d.id,
                    d.state,
                    synthetic.state_note.or(d.last_error).unwrap_or_default()
                );
            }
            if !a.json {
                println!("delivered: {}", synthetic.state_note.as_deref().unwrap_or("-"));
            }
        }
        out["synthetic"] = serde_json::to_value(&synthetic)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Wait until job `id` has ended (done, dead or cancelled), at most `timeout` seconds after `start`.
fn wait_job(store: &Store, id: i64, start: Instant, timeout: f64, what: &str) -> anyhow::Result<crate::store::Job> {
    loop {
        let j = store.job(id)?;
        if ["done", "dead", "cancelled"].contains(&j.state.as_str()) {
            return Ok(j);
        }
        if start.elapsed().as_secs_f64() > timeout {
            bail!("{what} job {id}: still {} after {timeout:.0} s (is `ldae serve` running?)", j.state);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
