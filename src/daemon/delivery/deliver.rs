//! The `deliver` job (CPU pool): send a synthetic timepoint's DICOM series to the `[delivery] pacs` over one
//! association (C-STORE, `dicom::net`) and record it.
//!
//! Each instance counts as delivered only once the peer's status for it arrived; that confirmation is recorded
//! at once (`deliveries`), so a retry of the job — after a transient failure or a crash at any point — sends only
//! what is still unconfirmed. An instance the peer stored but whose confirmation was lost in a crash is sent
//! again under the same (deterministic) UIDs, and the PACS keeps its first copy: one copy in the end.
//! Transient failures (connection refused, timeouts, A-ABORT, out of resources) are a [`StageError::RetryAfter`]:
//! the job queue runs the job again after `[delivery.retry]`'s capped backoff (nothing sleeps in the stage), and
//! the last allowed attempt marks the timepoint `failed`. Terminal
//! ones (association rejected, a failure status, an unreadable file) fail the job at once and mark the timepoint
//! `failed` with the reason — no retry storm. When every instance is confirmed the timepoint is `delivered` and
//! the `synthetic_delivered` hook is raised.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::Config;
use crate::dicom::net::{
    read_instance, send_instances_observed, AeTitle, ErrorClass, InstanceInfo, InstanceResult, SendOptions,
};
use crate::longitudinal::timeline::SyntheticState;
use crate::store::{Completion, Job, JobKind, NewJob, Payload, Store, SyntheticRow};

use super::super::hooks::hook_jobs;
use super::super::stages::{wrong_payload, StageError};

/// Job kind of a delivery (its key prefix too).
pub const DELIVER: JobKind = JobKind::Deliver;

pub use crate::store::DeliverRequest;

/// The delivery job of a synthetic timepoint: `deliver:<content key>`, once; a resend adds `:resend-<n>`.
pub fn deliver_job(content_key: &str, resend: u32) -> NewJob {
    let key = match resend {
        0 => format!("{DELIVER}:{content_key}"),
        n => format!("{DELIVER}:{content_key}:resend-{n}"),
    };
    let req = DeliverRequest { content_key: content_key.into(), resend };
    NewJob { key, series_ref: None, payload: Payload::Deliver(req), priority: 1 }
}

/// The files of a synthetic series' folder, sorted by name.
fn series_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            files.push(e.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A terminal failure: the timepoint is marked failed with `reason` and the job dead-lettered.
fn terminal(store: &Store, row: &SyntheticRow, reason: String) -> StageError {
    if let Err(e) = store.synthetic_failed(row.id, &reason) {
        tracing::error!(synthetic = row.id, error = %e, "cannot mark the synthetic timepoint failed");
    }
    tracing::error!(synthetic = row.id, %reason, "delivery failed");
    StageError::Permanent(reason)
}

/// A transient failure: retried after `[delivery.retry]`'s capped backoff, up to its `max_attempts` (and never
/// past `jobs.max_attempts`); the last attempt is terminal.
fn transient(store: &Store, cfg: &Config, job: &Job, row: &SyntheticRow, reason: String) -> StageError {
    let attempt = u32::try_from(job.attempts).unwrap_or(u32::MAX);
    match cfg.delivery.retry.next(attempt, ErrorClass::Transient) {
        Some(wait) if job.attempts < i64::from(cfg.jobs.max_attempts) => StageError::RetryAfter(reason, wait),
        _ => terminal(store, row, format!("gave up after {} attempt(s): {reason}", job.attempts)),
    }
}

/// Deliver one synthetic timepoint.
pub fn run(store: &Store, cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    let Payload::Deliver(req) = &job.payload else { return Err(wrong_payload(job)) };
    let row = store.synthetic_by_key(&req.content_key)?.ok_or_else(|| {
        StageError::Permanent(format!("deliver job {}: no synthetic timepoint {}", job.id, req.content_key))
    })?;
    if row.state == SyntheticState::Superseded {
        tracing::info!(synthetic = row.id, "superseded before delivery: not sent");
        return Ok(Completion::default());
    }
    let peer = match cfg.delivery.peer() {
        Ok(Some(p)) => p,
        Ok(None) => return Err(StageError::Permanent("delivery.pacs is not set: nowhere to deliver to".into())),
        Err(e) => return Err(StageError::Permanent(format!("delivery.pacs: {e}"))),
    };
    let calling = AeTitle::new(&cfg.delivery.calling_aet)
        .map_err(|e| StageError::Permanent(format!("delivery.calling_aet: {e}")))?;
    let peer_name = peer.to_string();
    let Some(dir) = row.dicom_dir.clone() else {
        return Err(terminal(store, &row, format!("synthetic timepoint {} has no DICOM series", row.id)));
    };
    let files = series_files(Path::new(&dir))
        .map_err(|e| terminal(store, &row, format!("synthetic timepoint {}: its DICOM folder: {e}", row.id)))?;
    if files.is_empty() {
        return Err(terminal(store, &row, format!("synthetic timepoint {}: its DICOM folder is empty", row.id)));
    }
    let mut infos: Vec<InstanceInfo> = Vec::with_capacity(files.len());
    for f in &files {
        let info = read_instance(f, &cfg.limits)
            .map_err(|e| terminal(store, &row, format!("synthetic timepoint {}: {e}", row.id)))?;
        infos.push(info);
    }
    let total = infos.len();
    let confirmed = store.delivered_instances(&job.key, &peer_name)?;
    let pending: Vec<InstanceInfo> = infos.into_iter().filter(|i| !confirmed.contains(&i.sop_instance_uid)).collect();
    let start = Instant::now();
    if !pending.is_empty() {
        let opts = SendOptions { max_pdu: cfg.limits.max_pdu_bytes, limits: cfg.limits.clone(), ..Default::default() };
        let mut record_error = None;
        let mut on_status = |o: &crate::dicom::net::InstanceOutcome| {
            if let InstanceResult::Stored { status, .. } = o.result {
                if let Err(e) = store.record_delivery(row.id, &job.key, &peer_name, &o.sop_instance_uid, status) {
                    record_error.get_or_insert(e);
                }
            }
        };
        let outcome = send_instances_observed(&peer, &calling, &pending, &opts, &mut on_status);
        if let Some(e) = record_error {
            return Err(StageError::Retry(format!("cannot record a confirmed instance: {e}")));
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) if e.class() == ErrorClass::Terminal => return Err(terminal(store, &row, e.to_string())),
            Err(e) => return Err(transient(store, cfg, job, &row, e.to_string())),
        };
        let not_stored: Vec<_> = outcome.instances.iter().filter(|i| !i.result.is_stored()).collect();
        let why = |i: &crate::dicom::net::InstanceOutcome| match &i.result {
            InstanceResult::Refused { reason, .. } | InstanceResult::Failed { reason, .. } => {
                format!("instance {}: {reason}", i.sop_instance_uid)
            }
            InstanceResult::Stored { .. } => String::new(),
        };
        if let Some(bad) = not_stored.iter().find(|i| !i.result.is_retryable()) {
            let reason = format!("{peer_name}: {} of {total} instance(s) not stored; {}", not_stored.len(), why(bad));
            return Err(terminal(store, &row, reason));
        }
        if let Some(first) = not_stored.first() {
            let reason =
                format!("{peer_name}: {} of {total} instance(s) not stored yet; {}", not_stored.len(), why(first));
            return Err(transient(store, cfg, job, &row, reason));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    tracing::info!(synthetic = row.id, peer = %peer_name, instances = total, sent = pending.len(), secs,
        "synthetic series delivered");
    let note = format!("{total} instance(s) stored on {peer_name}");
    Ok(Completion {
        synthetic_states: vec![(row.id, SyntheticState::Delivered, note)],
        next: hook_jobs(
            &cfg.hooks,
            "synthetic_delivered",
            &job.key,
            None,
            serde_json::json!({
                "synthetic": row.id,
                "patient_key": row.patient_key,
                "target_date": row.target_date,
                "series_uid": row.dicom_series_uid,
                "sop_class": row.sop_class,
                "peer": peer_name,
                "instances": total,
            }),
        ),
        ..Completion::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_keyed_by_its_timepoint_and_a_resend_counts() {
        let first = deliver_job("fill:abc", 0);
        assert_eq!((first.kind(), first.key.as_str()), (DELIVER, "deliver:fill:abc"));
        assert_eq!(deliver_job("fill:abc", 0), first, "the same delivery is one job");
        assert_eq!(deliver_job("fill:abc", 2).key, "deliver:fill:abc:resend-2");
        let job = deliver_job("fill:abc", 2);
        assert_eq!(job.payload, Payload::Deliver(DeliverRequest { content_key: "fill:abc".into(), resend: 2 }));
        let old: DeliverRequest = serde_json::from_value(serde_json::json!({"content_key": "fill:abc"})).unwrap();
        assert_eq!(old.resend, 0);
    }
}
