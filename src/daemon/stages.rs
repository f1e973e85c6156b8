//! The stages a job runs, each a small adapter from a job row to a library call and back to a [`Completion`]:
//! convert (dicom) → archive (after_commit) and preprocess (`stage_preprocess.rs`) → encode (`stage_encode.rs`,
//! on the model thread), gap filling (`stage_fill.rs`), delivery to the PACS (`delivery/deliver.rs`), plus hook
//! calls.
//!
//! Contract for every stage: it is idempotent and keyed by content. Its outputs are named by the content key of
//! its input (the series' instance hashes, the volume's SHA-256, the model id/version), written atomically, and
//! recorded only through the returned `Completion` — so a crash at any point is repaired by running the job
//! again. A stage returns [`StageError::Retry`] for what may pass (a file briefly missing, a busy device) and
//! [`StageError::Permanent`] for what will not (the converter refuses the series); the runner applies backoff and
//! the dead-letter state.

use std::path::{Path, PathBuf};

use crate::config::{AfterCommit, Config};
use crate::store::{Completion, Job, JobKind, NewJob, Payload, SeriesJob, SeriesUpdate, Store};

use super::files::{move_file, remove_file_durably, safe_component, sha256_file};
use super::hooks::hook_jobs;

/// Why a stage did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageError {
    /// Might work later: retried with backoff until `jobs.max_attempts`.
    #[error("{0}")]
    Retry(String),
    /// Like `Retry`, after the stage's own delay (a delivery follows `[delivery.retry]`), still within
    /// `jobs.max_attempts`.
    #[error("{0}")]
    RetryAfter(String, std::time::Duration),
    /// Will not work as things are: dead-lettered at once (an operator can `ldae jobs retry` it).
    #[error("{0}")]
    Permanent(String),
}

impl From<crate::store::StoreError> for StageError {
    fn from(e: crate::store::StoreError) -> Self {
        StageError::Retry(e.to_string())
    }
}

/// Job kinds run on the CPU worker pool.
pub const CPU_KINDS: &[JobKind] =
    &[JobKind::Convert, JobKind::Archive, JobKind::Preprocess, JobKind::Plan, JobKind::Deliver];
/// Job kinds run on the one model thread.
pub const MODEL_KINDS: &[JobKind] = &[JobKind::Encode, JobKind::Fill];
/// Job kinds run on the hook thread.
pub const HOOK_KINDS: &[JobKind] = &[JobKind::Hook];

/// The first jobs of a series that just became ready.
pub fn first_jobs(cfg: &Config, ready: &crate::store::ReadySeries) -> Vec<NewJob> {
    let mut jobs = vec![NewJob {
        key: format!("convert:{}", super::digest::volume_key(&ready.content_key, &cfg.convert)),
        series_ref: Some(ready.id),
        payload: Payload::Convert(SeriesJob { content_key: ready.content_key.clone() }),
        priority: 10,
    }];
    jobs.extend(hook_jobs(
        &cfg.hooks,
        "series_ready",
        &ready.content_key,
        Some(ready.id),
        serde_json::json!({ "series_uid": ready.series_uid, "instances": ready.instance_count, "trigger": ready.trigger }),
    ));
    jobs
}

/// The error for a job whose payload is not its kind's (cannot happen for a job read from the store, which
/// parses the payload by the kind; kept so a stage never panics on it).
pub fn wrong_payload(job: &Job) -> StageError {
    StageError::Permanent(format!("{} job {}: a {} payload", job.kind, job.id, job.payload.kind()))
}

fn content_key(job: &Job) -> Result<String, StageError> {
    match &job.payload {
        Payload::Convert(p) | Payload::Archive(p) => Ok(p.content_key.clone()),
        _ => Err(wrong_payload(job)),
    }
}

fn series_of(job: &Job) -> Result<i64, StageError> {
    job.series_ref.ok_or_else(|| StageError::Permanent(format!("job {}: no series", job.id)))
}

/// Run a CPU-pool job.
pub fn run_cpu(store: &Store, cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    match job.kind {
        JobKind::Convert => convert(store, cfg, job),
        JobKind::Archive => archive(store, cfg, job),
        JobKind::Preprocess => super::stage_preprocess::run(store, cfg, job),
        JobKind::Plan => super::stage_fill::plan(store, cfg, job),
        JobKind::Deliver => super::delivery::deliver::run(store, cfg, job),
        JobKind::Hook => hook(cfg, job),
        other @ (JobKind::Encode | JobKind::Fill) => {
            Err(StageError::Permanent(format!("job {}: {other} runs on the model thread, not a CPU worker", job.id)))
        }
    }
}

/// convert: the series' files → volumes in `outputs/<series>/<key>/<stem>.nii.gz` + sidecar.
fn convert(store: &Store, cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    let key = content_key(job)?;
    let series = store.series_files(series_of(job)?)?;
    if series.content_key.as_deref() != Some(key.as_str()) || series.state == "receiving" {
        tracing::info!(series = %series.series_uid, "convert superseded by newer instances");
        return Ok(Completion::default());
    }
    // `after_commit = "delete"`: instances converted before are gone (path ""); a late arrival's content key
    // covers only the files still on disk, which are converted as a new split beside the earlier volumes.
    let live: Vec<&(i64, String, String, String)> = series.files.iter().filter(|f| !f.2.is_empty()).collect();
    let deleted = series.files.len() - live.len();
    if live.is_empty() {
        return Err(StageError::Permanent(format!("series {}: no instance file is left on disk", series.series_uid)));
    }
    let paths: Vec<PathBuf> = live.iter().map(|f| PathBuf::from(&f.2)).collect();
    if let Some(missing) = live.iter().find(|f| !Path::new(&f.2).exists()) {
        return Err(StageError::Retry(format!("series {}: instance {} file is missing", series.series_uid, missing.1)));
    }
    let report = crate::dicom::convert_paths_with(&paths, &cfg.convert, &cfg.limits);
    // Rejections name the instance by SOP UID, not by its file's path.
    let sop_of = |subject: &str| live.iter().find(|f| f.2 == subject).map(|f| f.1.clone());
    let rejected: Vec<String> = report
        .rejected
        .iter()
        .map(|r| match sop_of(&r.subject) {
            Some(sop) => format!("instance {sop}: {}", r.reason),
            None if r.subject.contains('/') => r.reason.to_string(),
            None => r.to_string(),
        })
        .collect();
    if report.converted.is_empty() {
        let why =
            if rejected.is_empty() { "the converter produced no volume".to_string() } else { rejected.join("; ") };
        return Err(StageError::Permanent(format!("series {}: {why}", series.series_uid)));
    }
    // Named by the volume key (series content + converter version + [convert]), so another converter or config
    // never reuses these files.
    let volume_key = super::digest::volume_key(&key, &cfg.convert);
    let dir = cfg.paths.outputs.join(safe_component(&series.series_uid)).join(&volume_key[..16]);
    let mut c = Completion::default();
    // What a synthetic series written from this one will need (patient, study, equipment, Frame of Reference,
    // technique, instance UIDs), kept in the store so writing works after the files are archived or deleted.
    match crate::dicom::snapshot::SourceSnapshot::from_files(&paths, &cfg.limits) {
        Ok(snap) => c.snapshot = serde_json::to_string(&snap).ok().map(|j| (series.id, j)),
        Err(e) => {
            let why = match e {
                crate::dicom::snapshot::SnapshotError::Limit { source, .. } => source.to_string(),
                crate::dicom::snapshot::SnapshotError::MixedSeries { .. } => "mixed series".into(),
                crate::dicom::snapshot::SnapshotError::BadUid { what, .. } => format!("invalid {what}"),
                _ => "unreadable header".into(),
            };
            tracing::warn!(series = %series.series_uid, "no source snapshot ({why}): no synthetic DICOM can take this series' grid");
        }
    }
    // [select]: every volume is stored; only the selected ones go on to registration.
    let mut selected = Vec::new();
    let mut skipped = Vec::new();
    for conv in &report.converted {
        let stem = safe_component(&conv.file_stem);
        let exclusion = crate::dicom::select::select_series(&cfg.select, &conv.acquisition, &conv.volume).err();
        let path = dir.join(format!("{stem}.nii.gz"));
        let sidecar = dir.join(format!("{stem}.json"));
        crate::nifti::write_nifti(&path, &conv.volume).map_err(|e| StageError::Retry(e.to_string()))?;
        let mut side = conv.sidecar.clone();
        if let Some(o) = side.as_object_mut() {
            o.insert("content_key".into(), key.clone().into());
            o.insert("volume_key".into(), volume_key.clone().into());
            o.insert("SkippedBy".into(), exclusion.as_ref().map(|e| e.to_string()).into());
        }
        crate::nifti::write_sidecar(&sidecar, &side).map_err(|e| StageError::Retry(e.to_string()))?;
        let sha = sha256_file(&path).map_err(|e| StageError::Retry(format!("{}: {e}", path.display())))?;
        match &exclusion {
            None => selected.push((path.to_string_lossy().into_owned(), sha.clone())),
            Some(e) => {
                tracing::info!(series = %series.series_uid, volume = %stem, "skipped: {e}");
                skipped.push(format!("{stem}: {e}"));
            }
        }
        c.volumes.push(crate::store::NewVolume {
            series_ref: series.id,
            content_key: volume_key.clone(),
            series_key: key.clone(),
            file_stem: stem,
            path: path.to_string_lossy().into_owned(),
            sidecar: Some(sidecar.to_string_lossy().into_owned()),
            sha256: sha,
        });
    }
    let mut notes: Vec<String> = Vec::new();
    if deleted > 0 {
        notes.push(format!(
            "late split: {} instance(s) converted on their own; the {deleted} earlier ones were deleted after their \
             conversion (intake.after_commit = delete), their volumes stay recorded",
            live.len()
        ));
    }
    if !rejected.is_empty() {
        notes.push(format!("partly rejected: {}", rejected.join("; ")));
    }
    if !skipped.is_empty() {
        notes.push(format!("skipped by [select]: {}", skipped.join("; ")));
    }
    if cfg.intake.after_commit != AfterCommit::Keep {
        c.next.push(NewJob {
            key: format!("archive:{key}"),
            series_ref: Some(series.id),
            payload: Payload::Archive(SeriesJob { content_key: key.clone() }),
            priority: 5,
        });
    }
    let (state, finished) = match super::stage_preprocess::unavailable(cfg) {
        _ if selected.is_empty() => ("skipped", true),
        Some(why) => {
            tracing::info!(series = %series.series_uid, "{why}: series stored without codes");
            notes.push(format!("stored without codes: {why}"));
            ("stored_without_codes", true)
        }
        None => {
            for (path, sha) in &selected {
                c.next.push(super::stage_preprocess::job_for(series.id, &key, path, sha));
            }
            ("converted", false)
        }
    };
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    c.series = Some(SeriesUpdate { series_ref: series.id, content_key: key, state: state.into(), note, finished });
    Ok(c)
}

/// archive: move (or delete) a converted series' instance files per `intake.after_commit`.
///
/// Destructive steps wait for a durable commit: first a `synchronous = FULL` barrier (so the conversion these
/// files were consumed by cannot roll back in a power loss once they are gone), then each move is fsynced
/// (both folders) and recorded at once — the record holds even if the job is cancelled or fails afterwards.
fn archive(store: &Store, cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    let key = content_key(job)?;
    let series = store.series_files(series_of(job)?)?;
    if series.content_key.as_deref() != Some(key.as_str()) {
        return Ok(Completion::default());
    }
    store.durable_barrier("archive_durable", &series.series_uid)?;
    let mut c = Completion::default();
    let dir = cfg.paths.archive.join(safe_component(&series.study_uid)).join(safe_component(&series.series_uid));
    for (id, sop, path, _received) in &series.files {
        let src = Path::new(path);
        match cfg.intake.after_commit {
            AfterCommit::Keep => {}
            AfterCommit::Archive => {
                let dst = dir.join(format!("{}.dcm", safe_component(sop)));
                if src == dst {
                    continue;
                }
                if src.exists() {
                    move_file(src, &dst).map_err(|e| StageError::Retry(format!("instance {sop}: {e}")))?;
                } else if !dst.exists() {
                    return Err(StageError::Retry(format!("instance {sop}: file missing")));
                }
                let dst = dst.to_string_lossy().into_owned();
                store.instance_moved(*id, &dst)?;
                c.moved.push((*id, dst));
            }
            AfterCommit::Delete => {
                if path.is_empty() {
                    continue;
                }
                remove_file_durably(src).map_err(|e| StageError::Retry(format!("instance {sop}: {e}")))?;
                store.instance_moved(*id, "")?;
                c.moved.push((*id, String::new()));
            }
        }
    }
    Ok(c)
}

/// hook: call one hook command with its event.
fn hook(cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    let Payload::Hook(h) = &job.payload else { return Err(wrong_payload(job)) };
    let timeout = std::time::Duration::from_secs_f64(cfg.hooks.timeout_secs);
    super::hooks::run_hook(Path::new(&h.command), &h.event, timeout).map_err(StageError::Retry)?;
    Ok(Completion::default())
}
