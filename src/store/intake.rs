//! Intake records: a file that arrived becomes an instance (creating its patient, study and series), a duplicate
//! (recorded and quarantined), or a quarantined file. Also the "have we seen this exact file?" checks that make
//! rescans and restarts idempotent.

use std::path::Path;

use super::sql::{params, Exec, Row, SqlError};
use serde::Serialize;

use super::jobs::{enqueue, NewJob};
use super::{audit, now, path_text, Store, StoreError};

/// The header facts intake needs from one DICOM file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceFacts {
    pub sop_uid: String,
    pub series_uid: String,
    pub study_uid: String,
    /// PatientID; None when the file has none (the patient is then keyed by the study, see [`patient_key`]).
    pub patient_id: Option<String>,
    /// IssuerOfPatientID: part of the patient key.
    pub issuer_of_patient_id: Option<String>,
    pub modality: Option<String>,
    pub instance_number: Option<i64>,
    /// Number of instances the series should have, when a tag says so.
    pub expected_count: Option<i64>,
    pub study_date: Option<String>,
    /// SeriesDescription.
    pub series_description: Option<String>,
    /// AcquisitionDate (else SeriesDate), `YYYYMMDD`.
    pub acquisition_date: Option<String>,
    /// The patient's age in years at the study (PatientAge, or birth date to study date).
    pub patient_age_years: Option<f64>,
}

/// A complete file found in a drop folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArrivedFile {
    pub path: std::path::PathBuf,
    pub drop_folder: std::path::PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
}

/// What `record_instance` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// A new instance; `reopened` when its series had already been committed (a late arrival).
    Instance { instance_id: i64, reopened: bool },
    /// The SOP Instance UID is already stored; nothing was written (the caller quarantines the file).
    Duplicate { instance_id: i64, identical: bool, stored_path: String },
}

/// One quarantined file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineRow {
    pub id: i64,
    pub original_path: String,
    pub path: String,
    pub reason: String,
    pub detail: String,
    pub size: i64,
    pub sha256: Option<String>,
    pub state: String,
    pub created_at: f64,
}

impl QuarantineRow {
    fn from_row(r: &Row) -> Result<QuarantineRow, SqlError> {
        Ok(QuarantineRow {
            id: r.get(0)?,
            original_path: r.get(1)?,
            path: r.get(2)?,
            reason: r.get(3)?,
            detail: r.get(4)?,
            size: r.get(5)?,
            sha256: r.get(6)?,
            state: r.get(7)?,
            created_at: r.get(8)?,
        })
    }
}

/// The key a patient row is found by: `id:<issuer>\<PatientID>` (a backslash occurs in neither, both are LO), or,
/// for files without a PatientID, `study:<StudyInstanceUID>` — such a study is a patient of its own, never merged
/// with other ID-less studies.
pub fn patient_key(h: &InstanceFacts) -> String {
    match h.patient_id.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        Some(id) => format!("id:{}\\{id}", h.issuer_of_patient_id.as_deref().map(str::trim).unwrap_or("")),
        None => format!("study:{}", h.study_uid),
    }
}

const QUARANTINE_COLS: &str = "id, original_path, path, reason, detail, size, sha256, state, created_at";

impl Store {
    /// Is this exact file (path, size, mtime) already an instance still lying at that path?
    pub fn is_known_file(&self, path: &Path, size: u64, mtime_ns: i64) -> Result<bool, StoreError> {
        let conn = self.lock();
        let p = path_text(path);
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM instances WHERE received_path = ?1 AND path = ?1 AND size = ?2 AND mtime_ns = ?3",
                &params![p, size as i64, mtime_ns],
            )?
            .get(0)?;
        Ok(n > 0)
    }

    /// A quarantine record for this exact file whose move did not finish (crash between the row and the rename).
    pub fn unfinished_quarantine(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
    ) -> Result<Option<QuarantineRow>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {QUARANTINE_COLS} FROM quarantine WHERE original_path = ?1 AND size = ?2 AND mtime_ns = ?3 \
             AND state = 'held' ORDER BY id DESC LIMIT 1"
        );
        Ok(conn
            .query_opt(&sql, &params![path_text(path), size as i64, mtime_ns])?
            .as_ref()
            .map(QuarantineRow::from_row)
            .transpose()?)
    }

    /// Record an arrived file as an instance: patient, study and series are created on first sight; the series'
    /// quiet-period clock restarts. A series past `receiving` is reopened (late arrival). A known SOP UID is
    /// reported as a duplicate and nothing is written.
    pub fn record_instance(&self, f: &ArrivedFile, h: &InstanceFacts) -> Result<Recorded, StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        if let Some(r) =
            tx.query_opt("SELECT id, sha256, path FROM instances WHERE sop_uid = ?1", &params![h.sop_uid])?
        {
            let (instance_id, sha, stored_path): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            return Ok(Recorded::Duplicate { instance_id, identical: sha == f.sha256, stored_path });
        }
        let t = now();
        let key = patient_key(h);
        let pid = h.patient_id.as_deref().map(str::trim).filter(|p| !p.is_empty());
        let issuer = h.issuer_of_patient_id.as_deref().map(str::trim).filter(|p| !p.is_empty() && pid.is_some());
        tx.execute(
            "INSERT INTO patients (patient_key, patient_id, issuer, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (patient_key) DO NOTHING",
            &params![key, pid, issuer, t],
        )?;
        let patient: i64 = tx.query_row("SELECT id FROM patients WHERE patient_key = ?1", &params![key])?.get(0)?;
        tx.execute(
            "INSERT INTO studies (study_uid, patient_ref, study_date, patient_age_years, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (study_uid) DO NOTHING",
            &params![h.study_uid, patient, h.study_date, h.patient_age_years, t],
        )?;
        let study: i64 = tx.query_row("SELECT id FROM studies WHERE study_uid = ?1", &params![h.study_uid])?.get(0)?;
        let series: Option<(i64, String)> = tx
            .query_opt("SELECT id, state FROM series WHERE series_uid = ?1", &params![h.series_uid])?
            .map(|r| Ok::<_, SqlError>((r.get(0)?, r.get(1)?)))
            .transpose()?;
        let (series_id, reopened) = match series {
            Some((id, state)) => {
                let reopened = state != "receiving";
                tx.execute(
                    "UPDATE series SET state = 'receiving', last_instance_at = ?2, instance_count = instance_count + 1, \
                     expected_count = COALESCE(?3, expected_count), ready_at = NULL, finished_at = NULL, \
                     commit_requested = 0 WHERE id = ?1",
                    &params![id, t, h.expected_count],
                )?;
                (id, reopened)
            }
            None => {
                let id: i64 = tx
                    .query_row(
                        "INSERT INTO series (series_uid, study_ref, modality, drop_folder, state, expected_count, \
                     instance_count, first_seen_at, last_instance_at, description, acquisition_date) \
                     VALUES (?1, ?2, ?3, ?4, 'receiving', ?5, 1, ?6, ?6, ?7, ?8) RETURNING id",
                        &params![
                            h.series_uid,
                            study,
                            h.modality,
                            path_text(&f.drop_folder),
                            h.expected_count,
                            t,
                            h.series_description,
                            h.acquisition_date
                        ],
                    )?
                    .get(0)?;
                (id, false)
            }
        };
        let p = path_text(&f.path);
        let instance_id: i64 = tx
            .query_row(
                "INSERT INTO instances (sop_uid, series_ref, instance_number, received_path, path, size, mtime_ns, \
                 sha256, received_at) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                &params![h.sop_uid, series_id, h.instance_number, p, f.size as i64, f.mtime_ns, f.sha256, t],
            )?
            .get(0)?;
        if reopened {
            audit(&tx, "series_reopened", &h.series_uid, &serde_json::json!({ "sop_uid": h.sop_uid }))?;
        }
        tx.commit()?;
        Ok(Recorded::Instance { instance_id, reopened })
    }

    /// Record that `f` goes to quarantine at `target` (the caller then moves it there). When the file duplicates
    /// a stored instance, `duplicate_of = Some((instance_id, sop_uid, identical))` also writes a duplicates row;
    /// `jobs` (hook calls) are enqueued in the same transaction.
    pub fn record_quarantine(
        &self,
        f: &ArrivedFile,
        target: &Path,
        reason: &str,
        detail: &str,
        duplicate_of: Option<(i64, &str, bool)>,
        jobs: &[NewJob],
    ) -> Result<i64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let t = now();
        let sha = if f.sha256.is_empty() { None } else { Some(f.sha256.as_str()) };
        let qid: i64 = tx
            .query_row(
                "INSERT INTO quarantine (original_path, path, reason, detail, size, mtime_ns, sha256, state, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'held', ?8, ?8) RETURNING id",
                &params![path_text(&f.path), path_text(target), reason, detail, f.size as i64, f.mtime_ns, sha, t],
            )?
            .get(0)?;
        if let Some((instance_id, sop_uid, identical)) = duplicate_of {
            tx.execute(
                "INSERT INTO duplicates (sop_uid, instance_ref, quarantine_ref, sha256, identical, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &params![sop_uid, instance_id, qid, f.sha256, identical, t],
            )?;
        }
        for job in jobs {
            enqueue(&tx, job)?;
        }
        audit(
            &tx,
            "file_quarantined",
            &path_text(&f.path),
            &serde_json::json!({ "reason": reason, "detail": detail, "quarantine_id": qid }),
        )?;
        tx.commit()?;
        Ok(qid)
    }

    /// Quarantined files, newest first; `all` includes requeued and purged ones.
    pub fn quarantine_list(&self, all: bool) -> Result<Vec<QuarantineRow>, StoreError> {
        let conn = self.lock();
        let filter = if all { "" } else { "WHERE state = 'held'" };
        conn.query_map(&format!("SELECT {QUARANTINE_COLS} FROM quarantine {filter} ORDER BY id DESC"), &[], |r| {
            Ok(QuarantineRow::from_row(r)?)
        })
    }

    /// One quarantine row by id.
    pub fn quarantine_get(&self, id: i64) -> Result<QuarantineRow, StoreError> {
        let conn = self.lock();
        conn.query_opt(&format!("SELECT {QUARANTINE_COLS} FROM quarantine WHERE id = ?1"), &params![id])?
            .as_ref()
            .map(QuarantineRow::from_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("quarantine entry {id} does not exist")))
    }

    /// Mark a held entry requeued (moved back to `new_path`) or purged (deleted); `state` is `requeued|purged`.
    pub fn quarantine_close(&self, id: i64, state: &str, new_path: Option<&Path>) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let n = tx.execute(
            "UPDATE quarantine SET state = ?2, updated_at = ?3, path = COALESCE(?4, path) WHERE id = ?1 AND state = 'held'",
            &params![id, state, now(), new_path.map(path_text)],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "quarantine entry {id} is not held (already requeued or purged)"
            )));
        }
        audit(&tx, &format!("quarantine_{state}"), &id.to_string(), &serde_json::json!({ "path": new_path }))?;
        tx.commit()?;
        Ok(())
    }
}
