//! Intake of one complete file: SHA-256, header-only parse (recorded as in flight, on a guarded thread: see
//! `poison.rs`), then exactly one of: a new instance row, a duplicate (recorded and quarantined), or quarantine
//! with the reader's reason. Re-running it on the same file is a no-op, which is what makes rescans and restarts
//! after a crash safe. Logs name files by quarantine id, SHA-256 prefix and UIDs, never by path.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::dicom::{DicomError, Rejection};
use crate::store::{ArrivedFile, InstanceFacts, Recorded, Store};

use super::files::{file_stamp, sha256_file};
use super::hooks::hook_jobs;
use super::poison::{guarded_read_header, Parsed, CRASHED_PARSER, PARSER_TIMEOUT};
use super::quarantine::{finish_move, quarantine_file};
use super::DaemonError;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// Already an instance (or gone, or not a regular file): nothing to do.
    Skipped,
    /// A new instance of `series_uid`.
    Instance { series_uid: String, reopened: bool },
    /// Moved to quarantine for `reason`.
    Quarantined { reason: String, to: PathBuf },
    /// Not now (it changed while being read, or could not be read at all); the next scan tries again.
    Deferred(String),
}

/// The facts the store keeps from a header. Expected count: a multi-frame object is a whole series; otherwise
/// ImagesInAcquisition when present.
fn facts(h: &crate::dicom::InstanceHeader) -> InstanceFacts {
    let expected = if h.number_of_frames > 1 { Some(1) } else { h.images_in_acquisition.map(i64::from) };
    InstanceFacts {
        sop_uid: h.sop_instance_uid.clone(),
        series_uid: h.series_instance_uid.clone(),
        study_uid: h.study_instance_uid.clone(),
        // No PatientID: the store keys the patient by the study, never a shared "(none)".
        patient_id: h.patient_id.clone().filter(|p| !p.is_empty()),
        issuer_of_patient_id: h.issuer_of_patient_id.clone(),
        modality: h.modality.clone(),
        instance_number: h.instance_number,
        expected_count: expected.filter(|&n| n > 0),
        study_date: h.study_date.clone(),
        series_description: h.series_description.clone(),
        acquisition_date: h.acquisition_date.clone().or_else(|| h.series_date.clone()),
        patient_age_years: crate::dicom::age::age_years(
            h.patient_age.as_deref(),
            h.patient_birth_date.as_deref(),
            h.study_date.as_deref().or(h.acquisition_date.as_deref()),
        ),
    }
}

/// Take in one settled file from drop folder `drop`.
pub fn intake_file(store: &Store, cfg: &Config, path: &Path, drop: &Path) -> Result<Intake, DaemonError> {
    let Some((size, mtime_ns)) = file_stamp(path) else { return Ok(Intake::Skipped) };
    if store.is_known_file(path, size, mtime_ns)? {
        return Ok(Intake::Skipped);
    }
    if let Some(id) = store.requeue_landed(path)? {
        tracing::info!(quarantine_id = id, "requeued file back in the drop folder");
    }
    if let Some(row) = store.unfinished_quarantine(path, size, mtime_ns)? {
        finish_move(&row)?;
        return Ok(Intake::Quarantined { reason: row.reason.clone(), to: PathBuf::from(row.path) });
    }
    let sha256 = match sha256_file(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Intake::Skipped),
        Err(e) => return Ok(Intake::Deferred(format!("cannot read a file: {e}"))),
    };
    if file_stamp(path) != Some((size, mtime_ns)) {
        return Ok(Intake::Deferred(format!("file {}: changed while being read", &sha256[..12])));
    }
    let file = ArrivedFile { path: path.to_path_buf(), drop_folder: drop.to_path_buf(), size, mtime_ns, sha256 };
    let quarantined = |reason: &str, detail: &str, dup: Option<(i64, &str, bool)>| -> Result<Intake, DaemonError> {
        let hooks = hook_jobs(
            &cfg.hooks,
            "file_quarantined",
            // Unique per quarantine event (enqueued in its transaction): a requeued file quarantined again
            // is a new event.
            &format!("{}:{}", file.sha256, crate::store::now()),
            None,
            serde_json::json!({ "path": file.path, "reason": reason, "detail": detail }),
        );
        let (id, to) = quarantine_file(store, cfg, &file, reason, detail, dup, &hooks)?;
        tracing::warn!(quarantine_id = id, sha = &file.sha256[..12], reason, detail, "quarantined");
        Ok(Intake::Quarantined { reason: reason.to_string(), to })
    };
    // In flight from here: should the process die during the parse, the next start quarantines the file.
    store.parse_begin(&file)?;
    let parsed =
        guarded_read_header(path, &cfg.limits, std::time::Duration::from_secs_f64(cfg.jobs.stage_timeout_secs.parse));
    store.parse_end(path)?;
    let header = match parsed {
        Parsed::Header(h) => h,
        Parsed::Error(DicomError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Intake::Skipped)
        }
        Parsed::Error(DicomError::Io { source, .. }) => {
            return Ok(Intake::Deferred(format!("file {}: cannot read: {source}", &file.sha256[..12])))
        }
        Parsed::Error(e) => {
            let r = Rejection::from_error(&e);
            return quarantined(r.reason.code(), &r.reason.to_string(), None);
        }
        Parsed::Panicked(msg) => {
            return quarantined(CRASHED_PARSER, &format!("crashed the parser: the header reader panicked: {msg}"), None)
        }
        Parsed::TimedOut(limit) => {
            let detail = format!("the header parse did not end within {} s (abandoned)", limit.as_secs_f64());
            return quarantined(PARSER_TIMEOUT, &detail, None);
        }
    };
    let f = facts(&header);
    if f.sop_uid.is_empty() || f.series_uid.is_empty() || f.study_uid.is_empty() {
        return quarantined("unreadable", "missing SOP, series or study instance UID", None);
    }
    match store.record_instance(&file, &f)? {
        Recorded::Instance { reopened, .. } => {
            tracing::debug!(sop = %f.sop_uid, series = %f.series_uid, "instance");
            if reopened {
                tracing::info!(series = %f.series_uid, "late instance: series reopened");
            }
            Ok(Intake::Instance { series_uid: f.series_uid, reopened })
        }
        Recorded::Duplicate { instance_id, identical, .. } => {
            let (reason, detail) = if identical {
                (
                    "duplicate",
                    format!("SOP Instance UID {} already stored (instance {instance_id}, identical)", f.sop_uid),
                )
            } else {
                (
                    "sop_uid_conflict",
                    format!(
                        "SOP Instance UID {} already stored (instance {instance_id}) with different content",
                        f.sop_uid
                    ),
                )
            };
            quarantined(reason, &detail, Some((instance_id, &f.sop_uid, identical)))
        }
    }
}
