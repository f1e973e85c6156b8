//! The persistent job queue: enqueue (idempotent by key), claim, complete (with the stage's results and the
//! follow-up jobs, in one transaction), fail (retry later or dead-letter), and the operator's list/retry/cancel.
//!
//! Claiming is `UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING` on the single SQLite writer; on PostgreSQL the
//! inner select is `FOR UPDATE SKIP LOCKED` so several workers can share the table.

use super::sql::{params, Exec, Row, SqlError, Tx, Value};
use serde::Serialize;

use super::results::{insert_embedding, insert_registration, insert_volume, NewEmbedding, NewRegistration, NewVolume};
use super::{audit, now, Store, StoreError};

/// Job states as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    Done,
    Dead,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "pending" => JobState::Pending,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// A job to enqueue. `key` names the work by content: enqueueing an existing key does nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: String,
    pub key: String,
    pub series_ref: Option<i64>,
    pub payload: serde_json::Value,
    pub priority: i64,
}

/// A job row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub key: String,
    pub series_ref: Option<i64>,
    pub series_uid: Option<String>,
    /// The series' state now (e.g. `skipped`, `needs_review`), so `ldae jobs` shows where each job's series ended.
    pub series_state: Option<String>,
    pub payload: serde_json::Value,
    pub state: String,
    pub priority: i64,
    pub attempts: i64,
    pub next_at: f64,
    pub last_error: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
}

const JOB_COLS: &str = "j.id, j.kind, j.key, j.series_ref, s.series_uid, j.payload, j.state, j.priority, j.attempts, \
                        j.next_at, j.last_error, j.created_at, j.updated_at, s.state";

fn job_from_row(r: &Row) -> Result<Job, SqlError> {
    let payload: String = r.get(5)?;
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        key: r.get(2)?,
        series_ref: r.get(3)?,
        series_uid: r.get(4)?,
        series_state: r.get(13)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
        state: r.get(6)?,
        priority: r.get(7)?,
        attempts: r.get(8)?,
        next_at: r.get(9)?,
        last_error: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

/// A series state change that comes with a completed job; applied only while the series still has
/// `content_key` (a late arrival that reopened the series makes older jobs' state changes moot).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesUpdate {
    pub series_ref: i64,
    pub content_key: String,
    pub state: String,
    pub note: Option<String>,
    /// The pipeline ends here for this series.
    pub finished: bool,
}

/// Everything a finished stage records, written with the job's `done` state in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub next: Vec<NewJob>,
    pub series: Option<SeriesUpdate>,
    pub volumes: Vec<NewVolume>,
    pub registration: Option<NewRegistration>,
    pub embedding: Option<NewEmbedding>,
    /// Instances whose file moved: (instance id, new path).
    pub moved: Vec<(i64, String)>,
    /// A synthetic timepoint made by the job (kept once per content key).
    pub synthetic: Option<super::NewSynthetic>,
    /// The series' source snapshot (JSON) for writing synthetic DICOM later: (series id, snapshot).
    pub snapshot: Option<(i64, String)>,
    /// Synthetic timepoints the job moves to another state: (id, state, note).
    pub synthetic_states: Vec<(i64, crate::longitudinal::timeline::SyntheticState, String)>,
}

/// Insert a job unless its key exists. Returns whether it was inserted.
pub(super) fn enqueue(tx: &Tx<'_>, job: &NewJob) -> Result<bool, StoreError> {
    let t = now();
    let n = tx.execute(
        "INSERT INTO jobs (kind, key, series_ref, payload, state, priority, attempts, next_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, 0, ?6, ?6, ?6) ON CONFLICT (key) DO NOTHING",
        &params![job.kind, job.key, job.series_ref, job.payload.to_string(), job.priority, t],
    )?;
    Ok(n > 0)
}

impl Store {
    /// Enqueue one job on its own (idempotent by key).
    pub fn enqueue(&self, job: &NewJob) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let inserted = enqueue(&tx, job)?;
        tx.commit()?;
        Ok(inserted)
    }

    /// Jobs left `running` by a process that died: count the death against each (`crashes`); those that have now
    /// been running during `max_crashes` deaths are dead-lettered (a stage that takes the process down must not
    /// put the daemon into a crash loop), the others become pending again (their attempt stays counted).
    /// Returns (requeued, dead-lettered).
    pub fn requeue_running(&self, max_crashes: u32) -> Result<(usize, usize), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let t = now();
        tx.execute("UPDATE jobs SET crashes = crashes + 1 WHERE state = 'running'", &[])?;
        let error = "the daemon died while this job ran, ' || crashes || ' times: not run again (a poison input?)";
        let dead: Vec<(i64, Option<i64>, String, String)> = tx.query_map(
            &format!(
                "UPDATE jobs SET state = 'dead', updated_at = ?1, finished_at = ?1, last_error = '{error}' \
                 WHERE state = 'running' AND crashes >= ?2 RETURNING id, series_ref, kind, payload"
            ),
            &params![t, max_crashes.max(1) as i64],
            |r| Ok::<_, SqlError>((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        for (id, series, kind, payload) in &dead {
            let key = serde_json::from_str::<serde_json::Value>(payload)
                .ok()
                .and_then(|p| p.get("content_key").and_then(|k| k.as_str()).map(str::to_string));
            if let (Some(series), Some(key)) = (series, key) {
                tx.execute(
                    "UPDATE series SET state = 'failed', note = ?3 WHERE id = ?1 AND content_key = ?2 \
                     AND state <> 'receiving'",
                    &params![series, key, format!("{kind} job {id} dead: the daemon died while it ran")],
                )?;
            }
            audit(&tx, "job_dead", &id.to_string(), &serde_json::json!({ "kind": kind, "error": "crash loop" }))?;
        }
        let requeued = tx.execute(
            "UPDATE jobs SET state = 'pending', updated_at = ?1, next_at = ?1, \
             last_error = COALESCE(last_error, 'interrupted (daemon stopped while it ran)') WHERE state = 'running'",
            &params![t],
        )?;
        tx.commit()?;
        Ok((requeued, dead.len()))
    }

    /// Take the most urgent runnable job of one of `kinds` and mark it running (attempts + 1).
    pub fn claim(&self, kinds: &[&str]) -> Result<Option<Job>, StoreError> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let marks = (0..kinds.len()).map(|i| format!("?{}", i + 2)).collect::<Vec<_>>().join(", ");
        let t = now();
        // SQLite has one writer and no row locks (the clause is left out there); PostgreSQL skips rows another
        // worker's claim holds.
        let lock = if tx.backend() == super::Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?1 WHERE id = \
             (SELECT id FROM jobs WHERE state = 'pending' AND next_at <= ?1 AND kind IN ({marks}) \
              ORDER BY priority DESC, next_at, id LIMIT 1{lock}) RETURNING id"
        );
        let mut values: Vec<Value> = vec![t.into()];
        values.extend(kinds.iter().map(|k| Value::from(*k)));
        let id: Option<i64> = tx.query_value(&sql, &values)?;
        let job = match id {
            Some(id) => Some(job_from_row(&tx.query_row(
                &format!("SELECT {JOB_COLS} FROM jobs j LEFT JOIN series s ON s.id = j.series_ref WHERE j.id = ?1"),
                &params![id],
            )?)?),
            None => None,
        };
        tx.commit()?;
        Ok(job)
    }

    /// Seconds until the next pending job of `kinds` is due (None: nothing pending).
    pub fn next_due_in(&self, kinds: &[&str]) -> Result<Option<f64>, StoreError> {
        let conn = self.lock();
        if kinds.is_empty() {
            return Ok(None);
        }
        let marks = (0..kinds.len()).map(|i| format!("?{}", i + 1)).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT MIN(next_at) FROM jobs WHERE state = 'pending' AND kind IN ({marks})");
        let values: Vec<Value> = kinds.iter().map(|k| Value::from(*k)).collect();
        let at: Option<f64> = conn.query_value::<Option<f64>>(&sql, &values)?.flatten();
        Ok(at.map(|a| (a - now()).max(0.0)))
    }

    /// Record a job's success with everything it produced, in one transaction.
    pub fn complete(&self, job: &Job, c: &Completion) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let t = now();
        let n = tx.execute(
            "UPDATE jobs SET state = 'done', updated_at = ?2, finished_at = ?2, last_error = NULL \
             WHERE id = ?1 AND state = 'running'",
            &params![job.id, t],
        )?;
        if n == 0 {
            // Cancelled by the operator while it ran: keep what it wrote to disk, record nothing.
            return Ok(());
        }
        for v in &c.volumes {
            insert_volume(&tx, v)?;
        }
        if let Some(r) = &c.registration {
            insert_registration(&tx, r)?;
        }
        if let Some(e) = &c.embedding {
            insert_embedding(&tx, e)?;
        }
        if let Some((series_ref, json)) = &c.snapshot {
            tx.execute("UPDATE series SET snapshot = ?2 WHERE id = ?1", &params![series_ref, json])?;
        }
        if let Some(s) = &c.synthetic {
            super::synthetic::insert_synthetic(&tx, s)?;
        }
        for (id, state, note) in &c.synthetic_states {
            super::synthetic::set_state(&tx, *id, *state, Some(note))?;
        }
        for (instance_id, path) in &c.moved {
            tx.execute("UPDATE instances SET path = ?2 WHERE id = ?1", &params![instance_id, path])?;
        }
        if let Some(u) = &c.series {
            tx.execute(
                "UPDATE series SET state = ?3, note = ?4, finished_at = CASE WHEN ?5 THEN ?6 ELSE finished_at END \
                 WHERE id = ?1 AND content_key = ?2 AND state <> 'receiving'",
                &params![u.series_ref, u.content_key, u.state, u.note, u.finished, t],
            )?;
        }
        for next in &c.next {
            enqueue(&tx, next)?;
        }
        audit(&tx, "job_done", &job.id.to_string(), &serde_json::json!({ "kind": job.kind, "key": job.key }))?;
        tx.commit()?;
        Ok(())
    }

    /// Record a failure: retry at `retry_at`, or (None) dead-letter the job and mark its series failed.
    pub fn fail(&self, job: &Job, error: &str, retry_at: Option<f64>) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let t = now();
        let (state, next_at) = match retry_at {
            Some(at) => ("pending", at),
            None => ("dead", t),
        };
        let n = tx.execute(
            "UPDATE jobs SET state = ?2, next_at = ?3, last_error = ?4, updated_at = ?5, \
             finished_at = ?6 WHERE id = ?1 AND state = 'running'",
            &params![job.id, state, next_at, error, t, (state == "dead").then_some(t)],
        )?;
        if n > 0 && state == "dead" {
            if let (Some(series), Some(key)) = (job.series_ref, job.payload.get("content_key").and_then(|k| k.as_str()))
            {
                tx.execute(
                    "UPDATE series SET state = 'failed', note = ?3 WHERE id = ?1 AND content_key = ?2 \
                     AND state <> 'receiving'",
                    &params![series, key, format!("{} job {} dead: {error}", job.kind, job.id)],
                )?;
            }
        }
        let kind = if state == "dead" { "job_dead" } else { "job_retry" };
        audit(&tx, kind, &job.id.to_string(), &serde_json::json!({ "kind": job.kind, "error": error }))?;
        tx.commit()?;
        Ok(())
    }

    /// Jobs, newest first, optionally only those in `state`; at most `limit`.
    pub fn jobs_list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs j LEFT JOIN series s ON s.id = j.series_ref \
             WHERE COALESCE(?1, j.state) = j.state ORDER BY j.id DESC LIMIT ?2"
        );
        conn.query_map(&sql, &params![state.map(|s| s.as_str()), limit as i64], |r| Ok(job_from_row(r)?))
    }

    /// The job with content key `key`, if any.
    pub fn job_by_key(&self, key: &str) -> Result<Option<Job>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_opt(
                &format!("SELECT {JOB_COLS} FROM jobs j LEFT JOIN series s ON s.id = j.series_ref WHERE j.key = ?1"),
                &params![key],
            )?
            .as_ref()
            .map(job_from_row)
            .transpose()?)
    }

    /// One job by id.
    pub fn job(&self, id: i64) -> Result<Job, StoreError> {
        let conn = self.lock();
        conn.query_opt(
            &format!("SELECT {JOB_COLS} FROM jobs j LEFT JOIN series s ON s.id = j.series_ref WHERE j.id = ?1"),
            &params![id],
        )?
        .as_ref()
        .map(job_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("job {id} does not exist")))
    }

    /// Operator retry: a dead, cancelled or waiting job runs again now with a fresh attempt budget.
    pub fn job_retry(&self, id: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let t = now();
        let n = tx.execute(
            "UPDATE jobs SET state = 'pending', attempts = 0, next_at = ?2, updated_at = ?2, finished_at = NULL \
             WHERE id = ?1 AND state IN ('dead', 'cancelled', 'pending')",
            &params![id, t],
        )?;
        if n == 0 {
            return Err(job_missing_or(&tx, id, "cannot be retried")?);
        }
        tx.execute(
            "UPDATE series SET state = 'ready', note = NULL WHERE state = 'failed' AND id = \
             (SELECT series_ref FROM jobs WHERE id = ?1)",
            &params![id],
        )?;
        audit(&tx, "job_retry_requested", &id.to_string(), &serde_json::json!({}))?;
        tx.commit()?;
        Ok(())
    }

    /// Operator cancel: a pending (or running: its result is then discarded) job will not run.
    pub fn job_cancel(&self, id: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let t = now();
        let n = tx.execute(
            "UPDATE jobs SET state = 'cancelled', updated_at = ?2, finished_at = ?2 \
             WHERE id = ?1 AND state IN ('pending', 'running')",
            &params![id, t],
        )?;
        if n == 0 {
            return Err(job_missing_or(&tx, id, "cannot be cancelled")?);
        }
        audit(&tx, "job_cancelled", &id.to_string(), &serde_json::json!({}))?;
        tx.commit()?;
        Ok(())
    }
}

/// The error for a job id that either does not exist or is in the wrong state.
fn job_missing_or(tx: &Tx<'_>, id: i64, what: &str) -> Result<StoreError, StoreError> {
    let state: Option<String> = tx.query_value("SELECT state FROM jobs WHERE id = ?1", &params![id])?;
    Ok(match state {
        None => StoreError::NotFound(format!("job {id} does not exist")),
        Some(s) => StoreError::Conflict(format!("job {id} is {s}: {what}")),
    })
}
