//! Series stability and series state: which series are ready (quiet period over, expected count reached or
//! `ldae commit`), marking one ready together with its first jobs, re-arming quiet periods on start, and the file
//! list a conversion reads.

use super::sql::{params, Exec, SqlError};
use sha2::{Digest, Sha256};

use super::jobs::{enqueue, NewJob};
use super::{audit, now, Store, StoreError};

/// A series that just became ready: what the pipeline needs to build its first jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadySeries {
    pub id: i64,
    pub series_uid: String,
    /// SHA-256 over the sorted (SOP UID, file SHA-256) pairs of the instances whose files are still on disk
    /// (after `after_commit = "delete"` a late arrival's key covers the late files only): names every job.
    pub content_key: String,
    pub instance_count: i64,
    /// Why it is ready: `quiet`, `expected_count` or `commit`.
    pub trigger: String,
}

/// The files of a series, for conversion and archiving.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesFiles {
    pub id: i64,
    pub series_uid: String,
    pub study_uid: String,
    /// The patient's key (see [`super::patient_key`]).
    pub patient_key: String,
    pub state: String,
    pub content_key: Option<String>,
    /// (instance id, SOP UID, current path, received path)
    pub files: Vec<(i64, String, String, String)>,
}

impl Store {
    /// Restart every pending series' quiet period from `now` (called on start: files may still be arriving).
    pub fn rearm_pending(&self) -> Result<usize, StoreError> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE series SET last_instance_at = CASE WHEN last_instance_at < ?1 THEN ?1 ELSE last_instance_at END \
             WHERE state = 'receiving'",
            &params![now()],
        )?)
    }

    /// Ids of receiving series that are ready now, with the trigger.
    pub fn due_series(&self, quiet_secs: f64) -> Result<Vec<(i64, String)>, StoreError> {
        let conn = self.lock();
        conn.query_map(
            "SELECT id, CASE WHEN commit_requested = 1 THEN 'commit' \
                             WHEN expected_count IS NOT NULL AND instance_count >= expected_count THEN 'expected_count' \
                             ELSE 'quiet' END \
             FROM series WHERE state = 'receiving' AND (commit_requested = 1 OR last_instance_at <= ?1 \
                OR (expected_count IS NOT NULL AND instance_count >= expected_count)) ORDER BY last_instance_at, id",
            &params![now() - quiet_secs],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Mark a receiving series ready and enqueue the jobs `first_jobs` builds, in one transaction. Returns `None`
    /// when the series is no longer receiving (nothing changed).
    pub fn mark_ready(
        &self,
        series_id: i64,
        trigger: &str,
        first_jobs: impl FnOnce(&ReadySeries) -> Vec<NewJob>,
    ) -> Result<Option<ReadySeries>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let row: Option<(String, String, i64)> = tx
            .query_opt("SELECT series_uid, state, instance_count FROM series WHERE id = ?1", &params![series_id])?
            .map(|r| Ok::<_, SqlError>((r.get(0)?, r.get(1)?, r.get(2)?)))
            .transpose()?;
        let Some((series_uid, state, instance_count)) = row else { return Ok(None) };
        if state != "receiving" {
            return Ok(None);
        }
        let mut hasher = Sha256::new();
        // Sorted here, byte-wise: the two backends' text collations may order UIDs differently, the key must not.
        let mut files: Vec<(String, String)> = tx.query_map(
            "SELECT sop_uid, sha256 FROM instances WHERE series_ref = ?1 AND path <> ''",
            &params![series_id],
            |r| Ok::<_, SqlError>((r.get(0)?, r.get(1)?)),
        )?;
        files.sort();
        for (sop, sha) in &files {
            hasher.update(sop.as_bytes());
            hasher.update([0u8]);
            hasher.update(sha.as_bytes());
            hasher.update([b'\n']);
        }
        let content_key = hex::encode(hasher.finalize());
        let ready =
            ReadySeries { id: series_id, series_uid, content_key, instance_count, trigger: trigger.to_string() };
        tx.execute(
            "UPDATE series SET state = 'ready', ready_at = ?2, content_key = ?3, commit_requested = 0, note = NULL \
             WHERE id = ?1",
            &params![series_id, now(), ready.content_key],
        )?;
        for job in first_jobs(&ready) {
            enqueue(&tx, &job)?;
        }
        audit(
            &tx,
            "series_ready",
            &ready.series_uid,
            &serde_json::json!({ "trigger": trigger, "instances": instance_count, "content_key": ready.content_key }),
        )?;
        tx.commit()?;
        Ok(Some(ready))
    }

    /// `ldae commit`: ask for a receiving series to be treated as complete now. Errors if the UID is unknown or
    /// the series is already past receiving.
    pub fn request_commit(&self, series_uid: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let state: Option<String> =
            tx.query_value("SELECT state FROM series WHERE series_uid = ?1", &params![series_uid])?;
        match state.as_deref() {
            None => return Err(StoreError::NotFound(format!("series {series_uid}: not in the store"))),
            Some("receiving") => {}
            Some(s) => return Err(StoreError::Conflict(format!("series {series_uid}: already committed (state {s})"))),
        }
        tx.execute("UPDATE series SET commit_requested = 1 WHERE series_uid = ?1", &params![series_uid])?;
        audit(&tx, "commit_requested", series_uid, &serde_json::json!({}))?;
        tx.commit()?;
        Ok(())
    }

    /// The files of a series (by id).
    pub fn series_files(&self, series_id: i64) -> Result<SeriesFiles, StoreError> {
        let conn = self.lock();
        let head = conn
            .query_opt(
                "SELECT s.series_uid, st.study_uid, p.patient_key, s.state, s.content_key FROM series s \
                 JOIN studies st ON st.id = s.study_ref JOIN patients p ON p.id = st.patient_ref WHERE s.id = ?1",
                &params![series_id],
            )?
            .ok_or_else(|| StoreError::NotFound(format!("series id {series_id}: not in the store")))?;
        let files = conn.query_map(
            "SELECT id, sop_uid, path, received_path FROM instances WHERE series_ref = ?1 \
             ORDER BY instance_number NULLS FIRST, sop_uid",
            &params![series_id],
            |r| Ok::<_, SqlError>((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        Ok(SeriesFiles {
            id: series_id,
            series_uid: head.get(0)?,
            study_uid: head.get(1)?,
            patient_key: head.get(2)?,
            state: head.get(3)?,
            content_key: head.get(4)?,
            files,
        })
    }

    /// Series id for a UID.
    pub fn series_id(&self, series_uid: &str) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        Ok(conn.query_value("SELECT id FROM series WHERE series_uid = ?1", &params![series_uid])?)
    }
}
