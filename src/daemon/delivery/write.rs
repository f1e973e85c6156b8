//! A fill's synthetic volume written as a DICOM series (the `[delivery] sop_class`) into its outbox folder, from
//! the source snapshots the store took at conversion. Dates and UIDs come from the job record and the request,
//! so a rerun writes the same files.

use std::path::Path;

use chrono::NaiveDate;

use crate::config::Config;
use crate::dicom::snapshot::SourceSnapshot;
use crate::dicom::writer::{write_series, SourceSide, SyntheticContent, SyntheticInput, SyntheticRequest};
use crate::store::{EncodedScan, Job, Store, SyntheticDicom};
use crate::volume::Volume;

use super::super::stages::StageError;

/// The request a fill's DICOM records: model, alpha, target date, steps and seed, with the creation time of the
/// job record (never the clock, so a rerun of the same job writes the same bytes).
pub fn fill_request(
    cfg: &Config,
    job: &Job,
    (model_id, model_version, model_digest): (&str, &str, &str),
    (alpha, target, seed): (f64, NaiveDate, u64),
) -> Result<SyntheticRequest, StageError> {
    let secs = job.created_at.max(0.0);
    let created = chrono::DateTime::from_timestamp(secs.trunc() as i64, 0)
        .map(|t| t.naive_utc())
        .ok_or_else(|| StageError::Permanent(format!("job {}: creation time {secs} out of range", job.id)))?;
    Ok(SyntheticRequest {
        model_id: model_id.into(),
        model_version: model_version.into(),
        model_digest: model_digest.into(),
        alpha,
        target_date: target,
        steps: u32::try_from(cfg.model.steps).unwrap_or(u32::MAX),
        seed,
        code_version: crate::VERSION.into(),
        created,
        series_number: cfg.delivery.series_number,
    })
}

fn snapshot(store: &Store, scan: &EncodedScan) -> Result<Option<SourceSnapshot>, StageError> {
    let Some(json) = store.series_snapshot(&scan.series_uid)? else { return Ok(None) };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| StageError::Permanent(format!("series {}: stored snapshot unreadable: {e}", scan.series_uid)))
}

/// Write the series into `dir`. None (logged) when a source has no snapshot (converted before snapshots were
/// taken, or its header could not give one).
pub fn write_fill_dicom(
    store: &Store,
    cfg: &Config,
    job: &Job,
    dir: &Path,
    volume: &Volume,
    (earlier, later, near): (&EncodedScan, &EncodedScan, &EncodedScan),
    request: &SyntheticRequest,
) -> Result<Option<SyntheticDicom>, StageError> {
    let (Some(se), Some(sl), Some(sn)) = (snapshot(store, earlier)?, snapshot(store, later)?, snapshot(store, near)?)
    else {
        tracing::warn!(
            job = job.id,
            "a source series has no snapshot: the synthetic timepoint is written as NIfTI only"
        );
        return Ok(None);
    };
    let date = |s: &EncodedScan| {
        s.date
            .as_deref()
            .and_then(crate::longitudinal::dates::parse)
            .ok_or_else(|| StageError::Permanent(format!("series {}: no acquisition or study date", s.series_uid)))
    };
    let side_e = SourceSide { series: se.reference(), date: date(earlier)? };
    let side_l = SourceSide { series: sl.reference(), date: date(later)? };
    let input = SyntheticInput {
        volume,
        neighbour: &sn,
        earlier: &side_e,
        later: &side_l,
        request,
        content: SyntheticContent::Image,
    };
    let written = write_series(dir, &input, cfg.delivery.sop_class, &cfg.limits)
        .map_err(|e| StageError::Permanent(format!("fill job {}: writing DICOM: {e}", job.id)))?;
    tracing::info!(job = job.id, series = %written.uids.series_instance_uid, files = written.instances.len(),
        "synthetic DICOM written");
    Ok(Some(SyntheticDicom {
        study_uid: written.uids.study_instance_uid,
        series_uid: written.uids.series_instance_uid,
        sop_class: cfg.delivery.sop_class.uid().to_string(),
        dir: dir.to_string_lossy().into_owned(),
    }))
}
