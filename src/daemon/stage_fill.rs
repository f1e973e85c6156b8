//! Gap filling in the daemon. `plan` (CPU pool) runs the gap policy for a patient after one of its scans is
//! encoded: it retires the synthetic timepoints a new scan supersedes and, with `auto_fill`, enqueues one `fill`
//! per gap. `fill` (the model thread) interpolates the two neighbours' codes (lerp y_sem, slerp x_T, alpha from
//! the dates), decodes with the configured DDIM steps, maps the volume from template space back onto the grid
//! `target_grid` names (by default the acquired neighbour nearer in time, so it shares that scan's Frame of
//! Reference), writes both NIfTIs and records the timepoint. A fill is keyed by its content (both source series,
//! target date, model digest, steps, seed): the same request never makes a second job or row.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::config::Config;
use crate::longitudinal::dates;
use crate::longitudinal::policy::{self, PlannedFill, TargetGrid};
use crate::longitudinal::timeline::{SyntheticState, Timeline};
use crate::model::codes::load_codes;
use crate::model::ldae::no_progress;
use crate::model::tensor_volume::tensor_volume;
use crate::preprocess::resample::Grid;
use crate::store::{Completion, EncodedScan, Job, NewJob, NewSynthetic, Payload, Store};

use super::delivery::deliver::deliver_job;
use super::delivery::write::{fill_request, write_fill_dicom};
use super::files::sha256_bytes;
use super::hooks::hook_jobs;
use super::stages::StageError;

pub use crate::store::{FillRequest, PlanRequest};

/// The fill's content key: what it is made from and how.
pub fn fill_key(from: &EncodedScan, to: &EncodedScan, target: NaiveDate, steps: usize, seed: u64) -> String {
    let key = serde_json::json!({
        "fill": 1,
        "sources": [from.series_uid, to.series_uid],
        "model": [from.model_id, from.model_version],
        "target": dates::iso(target),
        "steps": steps,
        "seed": seed,
    });
    sha256_bytes(key.to_string().as_bytes())
}

/// The `plan` job for a patient (after an encode of `occurrence`).
pub fn plan_job(patient_key: &str, model_id: &str, occurrence: &str) -> NewJob {
    NewJob {
        key: format!("plan:{}", sha256_bytes(format!("{patient_key}\n{model_id}\n{occurrence}").as_bytes())),
        series_ref: None,
        payload: Payload::Plan(PlanRequest { patient_key: patient_key.into(), model_id: model_id.into() }),
        priority: 0,
    }
}

/// The `fill` job for a planned fill between two stored scans.
pub fn fill_job(
    store: &Store,
    cfg: &Config,
    patient_key: &str,
    fill: &PlannedFill,
    ids: (i64, i64),
    explicit: bool,
) -> Result<NewJob, StageError> {
    let (a, b) = (store.encoded_scan(ids.0)?, store.encoded_scan(ids.1)?);
    let req = FillRequest {
        patient_key: patient_key.into(),
        target: fill.target,
        from_embedding: ids.0,
        to_embedding: ids.1,
        alpha: fill.alpha,
        seed: 0,
        explicit,
    };
    Ok(NewJob {
        key: format!("fill:{}", fill_key(&a, &b, fill.target, cfg.model.steps, req.seed)),
        series_ref: None,
        payload: Payload::Fill(req),
        priority: 1,
    })
}

/// The first (lowest id) acquired scan of `timeline` on `date`.
pub fn scan_on(timeline: &Timeline, date: NaiveDate) -> Option<i64> {
    timeline
        .points
        .iter()
        .filter_map(|p| match p {
            crate::longitudinal::timeline::Timepoint::Acquired { scan } if scan.date == Some(date) => {
                Some(scan.embedding_id)
            }
            _ => None,
        })
        .min()
}

/// Run the policy for one patient.
pub fn plan(store: &Store, cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    let Payload::Plan(req) = &job.payload else { return Err(super::stages::wrong_payload(job)) };
    let (acquired, synthetic) = store.timeline_inputs(&req.patient_key, &req.model_id)?;
    let scan_dates: Vec<NaiveDate> = acquired.iter().filter_map(|a| a.date).collect();
    let mut done = Completion::default();
    let dated: std::collections::HashMap<String, NaiveDate> =
        acquired.iter().filter_map(|a| Some((a.series_uid.clone(), a.date?))).collect();
    for s in synthetic.iter().filter(|s| s.state.is_live()) {
        let (Some(&a), Some(&b)) = (dated.get(&s.sources.0), dated.get(&s.sources.1)) else { continue };
        if let Some(why) = policy::superseded(&scan_dates, s.target, a, b, &cfg.longitudinal) {
            let note = match why {
                policy::Supersession::ScanAtVisit { scan } => {
                    format!("acquired scan of {} at its visit", dates::iso(scan))
                }
                policy::Supersession::NewNeighbour { scan } => {
                    format!("acquired scan of {} between its sources", dates::iso(scan))
                }
            };
            tracing::info!(synthetic = s.id, patient = %req.patient_key, %note, "synthetic timepoint superseded");
            done.synthetic_states.push((s.id, SyntheticState::Superseded, note));
        }
    }
    let retired: Vec<i64> = done.synthetic_states.iter().map(|x| x.0).collect();
    let synthetic: Vec<_> = synthetic
        .into_iter()
        .map(|mut s| {
            if retired.contains(&s.id) {
                s.state = SyntheticState::Superseded;
            }
            s
        })
        .collect();
    let timeline = Timeline::build(&req.patient_key, acquired, synthetic, &cfg.longitudinal);
    if cfg.longitudinal.auto_fill {
        for f in &timeline.plan.fills {
            let (Some(a), Some(b)) = (scan_on(&timeline, f.earlier), scan_on(&timeline, f.later)) else { continue };
            done.next.push(fill_job(store, cfg, &req.patient_key, f, (a, b), false)?);
        }
    }
    tracing::info!(
        patient = %req.patient_key,
        fills = done.next.len(),
        refused = timeline.plan.refused.len(),
        superseded = done.synthetic_states.len(),
        auto_fill = cfg.longitudinal.auto_fill,
        "gap policy run"
    );
    Ok(done)
}

/// Where a fill's files go: `outputs/synthetic/<first 16 hex of its key>/`.
pub fn fill_dir(cfg: &Config, job_key: &str) -> PathBuf {
    let hex = job_key.trim_start_matches("fill:");
    cfg.paths.outputs.join("synthetic").join(&hex[..hex.len().min(16)])
}

/// Make one synthetic timepoint (on the model thread).
pub fn fill(store: &Store, cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    let Payload::Fill(req) = &job.payload else { return Err(super::stages::wrong_payload(job)) };
    let (a, b) = (store.encoded_scan(req.from_embedding)?, store.encoded_scan(req.to_embedding)?);
    if !(req.alpha > 0.0 && req.alpha < 1.0) {
        return Err(StageError::Permanent(format!("fill job {}: alpha {} is not in (0, 1)", job.id, req.alpha)));
    }
    let dir = fill_dir(cfg, &job.key);
    std::fs::create_dir_all(&dir).map_err(|e| StageError::Retry(format!("{}: {e}", dir.display())))?;
    super::stage_encode::with_model(cfg, |m| {
        for s in [&a, &b] {
            if s.model_id != m.id || s.model_version != m.version {
                return Err(StageError::Permanent(format!(
                    "fill job {}: series {} was encoded by {} {}, the configured model is {} {}",
                    job.id, s.series_uid, s.model_id, s.model_version, m.id, m.version
                )));
            }
        }
        let codes = |s: &EncodedScan| {
            load_codes(Path::new(&s.codes_path))
                .map_err(|e| StageError::Permanent(format!("series {}: {e}", s.series_uid)))
        };
        let (ca, cb) = (codes(&a)?, codes(&b)?);
        let affine = ca
            .affine
            .ok_or_else(|| StageError::Permanent(format!("series {}: its codes file has no affine", a.series_uid)))?;
        let t = m
            .model
            .interpolate(
                (&ca.codes.y_sem, &ca.codes.x_t),
                (&cb.codes.y_sem, &cb.codes.x_t),
                req.alpha as f32,
                cfg.model.steps,
                &no_progress,
            )
            .map_err(|e| StageError::Permanent(format!("fill job {}: {e}", job.id)))?;
        let template = tensor_volume(&t, &affine).map_err(|e| StageError::Permanent(e.to_string()))?;
        let template_path = dir.join("synthetic-template.nii.gz");
        crate::nifti::write_nifti(&template_path, &template).map_err(|e| StageError::Retry(e.to_string()))?;
        let (path, dicom) = match cfg.longitudinal.target_grid {
            // The template grid has no acquired Frame of Reference to share: NIfTI only.
            TargetGrid::Template => (template_path, None),
            grid => {
                let near = neighbour(&a, &b, req.target, grid);
                let native = on_native_grid(cfg, &template, near)?;
                let p = dir.join("synthetic.nii.gz");
                crate::nifti::write_nifti(&p, &native).map_err(|e| StageError::Retry(e.to_string()))?;
                let request =
                    fill_request(cfg, job, (&m.id, &m.version, &m.digest), (req.alpha, req.target, req.seed))?;
                let dicom = write_fill_dicom(store, cfg, job, &dir.join("dicom"), &native, (&a, &b, near), &request)?;
                (p, dicom)
            }
        };
        tracing::info!(job = job.id, patient = %req.patient_key, target = %dates::iso(req.target), alpha = req.alpha,
            "synthetic timepoint written");
        let mut next = hook_jobs(
            &cfg.hooks,
            "synthetic_written",
            &job.key,
            None,
            serde_json::json!({
                "patient_key": req.patient_key, "target_date": dates::iso(req.target), "alpha": req.alpha,
                "volume": path, "series_uid": dicom.as_ref().map(|d| &d.series_uid),
                "dicom_dir": dicom.as_ref().map(|d| &d.dir),
            }),
        );
        // With a PACS configured, the series goes out on the CPU pool (never on this thread).
        if dicom.is_some() && matches!(cfg.delivery.peer(), Ok(Some(_))) {
            next.push(deliver_job(&job.key, 0));
        }
        Ok(Completion {
            next,
            synthetic: Some(NewSynthetic {
                patient_key: req.patient_key.clone(),
                content_key: job.key.clone(),
                target_date: dates::iso(req.target),
                alpha: req.alpha,
                from_embedding: req.from_embedding,
                to_embedding: req.to_embedding,
                model_id: m.id.clone(),
                model_version: m.version.clone(),
                steps: i64::try_from(cfg.model.steps).unwrap_or(i64::MAX),
                seed: i64::try_from(req.seed).unwrap_or(i64::MAX),
                path: path.to_string_lossy().into_owned(),
                state: SyntheticState::Written,
                dicom,
            }),
            ..Completion::default()
        })
    })
}

/// The source whose grid the synthetic volume is written on.
fn neighbour<'a>(a: &'a EncodedScan, b: &'a EncodedScan, target: NaiveDate, grid: TargetGrid) -> &'a EncodedScan {
    let day = |s: &EncodedScan| s.date.as_deref().and_then(dates::parse);
    match (grid, day(a), day(b)) {
        (TargetGrid::Nearest, Some(da), Some(db)) if dates::days(target, db).abs() < dates::days(da, target).abs() => b,
        _ => a,
    }
}

/// `template` mapped onto `scan`'s native grid with its stored template → native transform.
fn on_native_grid(
    cfg: &Config,
    template: &crate::volume::Volume,
    scan: &EncodedScan,
) -> Result<crate::volume::Volume, StageError> {
    let native = crate::nifti::read_nifti_limited(Path::new(&scan.volume_path), &cfg.limits)
        .map_err(|e| StageError::Permanent(format!("series {}: {e}", scan.series_uid)))?;
    // An affine or a deformable chain record: the same call follows either (issue 16).
    crate::preprocess::deformable::chain::unwarp(
        template,
        &Grid::of(&native),
        Path::new(&scan.transform_path),
        &cfg.limits,
    )
    .map_err(|e| StageError::Permanent(format!("series {}: {e}", scan.series_uid)))
}
