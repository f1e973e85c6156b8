//! Read-only summaries for `ldae status`: series by state, queue depth by kind and state, the latest errors,
//! quarantine size and throughput. Safe to call from another process while the daemon writes (WAL).

use super::sql::{params, Exec};
use serde::Serialize;

use super::jobs::Job;
use super::{now, Store, StoreError};

/// Jobs of one kind in one state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobCount {
    pub kind: String,
    pub state: String,
    pub count: i64,
}

/// One series, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesSummary {
    pub series_uid: String,
    /// PatientID; None when the files carry none (the patient is then the study: see `patient_key`).
    pub patient_id: Option<String>,
    pub issuer_of_patient_id: Option<String>,
    /// What the patient is keyed by: `id:<issuer>\<PatientID>` or `study:<StudyInstanceUID>`.
    pub patient_key: String,
    pub modality: Option<String>,
    pub state: String,
    pub instances: i64,
    pub expected: Option<i64>,
    /// Volumes, registrations and embeddings of the series' current content (its instances when it was
    /// last committed); outputs of earlier content, before a late instance arrived, are not counted.
    pub volumes: i64,
    pub registrations: i64,
    pub embeddings: i64,
    pub note: Option<String>,
    pub last_instance_at: f64,
    pub finished_at: Option<f64>,
}

/// The whole status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub schema_version: i64,
    pub instances: i64,
    pub duplicates: i64,
    pub quarantined: i64,
    pub series_by_state: Vec<(String, i64)>,
    pub jobs: Vec<JobCount>,
    pub last_errors: Vec<Job>,
    /// Instances received and series finished in the last hour.
    pub instances_last_hour: i64,
    pub series_finished_last_hour: i64,
    /// The most recent series (by last activity), at most `series_limit`.
    pub series: Vec<SeriesSummary>,
}

impl Store {
    /// Build the status report; `series_limit` caps the per-series list.
    pub fn status(&self, series_limit: usize) -> Result<StatusReport, StoreError> {
        let schema_version = self.schema_version()?;
        let errors = self.jobs_with_errors(5)?;
        let conn = self.lock();
        let count = |sql: &str| -> Result<i64, StoreError> { Ok(conn.query_row(sql, &[])?.get(0)?) };
        let hour_ago = now() - 3600.0;
        let instances = count("SELECT COUNT(*) FROM instances")?;
        let duplicates = count("SELECT COUNT(*) FROM duplicates")?;
        let quarantined = count("SELECT COUNT(*) FROM quarantine WHERE state = 'held'")?;
        let instances_last_hour: i64 =
            conn.query_row("SELECT COUNT(*) FROM instances WHERE received_at >= ?1", &params![hour_ago])?.get(0)?;
        let series_finished_last_hour: i64 =
            conn.query_row("SELECT COUNT(*) FROM series WHERE finished_at >= ?1", &params![hour_ago])?.get(0)?;
        let series_by_state =
            conn.query_map("SELECT state, COUNT(*) FROM series GROUP BY state ORDER BY state", &[], |r| {
                Ok::<_, StoreError>((r.get(0)?, r.get(1)?))
            })?;
        let jobs = conn.query_map(
            "SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state ORDER BY kind, state",
            &[],
            |r| Ok::<_, StoreError>(JobCount { kind: r.get(0)?, state: r.get(1)?, count: r.get(2)? }),
        )?;
        let series = conn.query_map(
            "SELECT s.series_uid, p.patient_id, s.modality, s.state, s.instance_count, s.expected_count, \
               (SELECT COUNT(*) FROM volumes v WHERE v.series_ref = s.id AND v.series_key = s.content_key), \
               (SELECT COUNT(*) FROM registrations r JOIN volumes v ON v.id = r.volume_ref \
                  WHERE v.series_ref = s.id AND v.series_key = s.content_key), \
               (SELECT COUNT(*) FROM embeddings e JOIN registrations r ON r.id = e.registration_ref \
                  JOIN volumes v ON v.id = r.volume_ref WHERE v.series_ref = s.id AND v.series_key = s.content_key), \
               s.note, s.last_instance_at, s.finished_at, p.issuer, p.patient_key \
             FROM series s JOIN studies st ON st.id = s.study_ref JOIN patients p ON p.id = st.patient_ref \
             ORDER BY s.last_instance_at DESC LIMIT ?1",
            &params![series_limit as i64],
            |r| {
                Ok::<_, StoreError>(SeriesSummary {
                    series_uid: r.get(0)?,
                    patient_id: r.get(1)?,
                    modality: r.get(2)?,
                    state: r.get(3)?,
                    instances: r.get(4)?,
                    expected: r.get(5)?,
                    volumes: r.get(6)?,
                    registrations: r.get(7)?,
                    embeddings: r.get(8)?,
                    note: r.get(9)?,
                    last_instance_at: r.get(10)?,
                    finished_at: r.get(11)?,
                    issuer_of_patient_id: r.get(12)?,
                    patient_key: r.get(13)?,
                })
            },
        )?;
        Ok(StatusReport {
            schema_version,
            instances,
            duplicates,
            quarantined,
            series_by_state,
            jobs,
            last_errors: errors,
            instances_last_hour,
            series_finished_last_hour,
            series,
        })
    }

    /// The latest jobs that recorded an error (waiting for a retry or dead).
    fn jobs_with_errors(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let ids: Vec<i64> = {
            let conn = self.lock();
            conn.query_map(
                "SELECT id FROM jobs WHERE last_error IS NOT NULL AND state IN ('pending', 'running', 'dead') \
                 ORDER BY updated_at DESC LIMIT ?1",
                &params![limit as i64],
                |r| r.get(0),
            )?
        };
        ids.into_iter().map(|id| self.job(id)).collect()
    }
}
