//! The persistent job queue: enqueue (idempotent by key), claim (with a lease), complete (with the stage's
//! results and the follow-up jobs, in one transaction), fail (retry later or dead-letter), and the operator's
//! list/retry/cancel. Lease upkeep (heartbeat, expiry) is in `leases.rs`.
//!
//! A claim takes the most urgent due job with `UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING`, and stamps it
//! with the claiming process's owner token, `lease_until = now + lease` and `attempts + 1`. Recording a result is
//! conditional on still holding that claim (`owner`, `attempts` as the claim's fencing number, `state =
//! 'running'`, lease not expired): a worker that lost its lease records nothing ([`Recording::LeaseLost`]). The
//! SQL is a portable subset (`?N` placeholders, `ON CONFLICT … DO NOTHING`, `RETURNING`, times passed as
//! parameters); on PostgreSQL the inner select gains `FOR UPDATE SKIP LOCKED`.

use super::sql::{params, Exec, Row, SqlError, Tx, Value};
use serde::Serialize;

use super::results::{insert_embedding, insert_registration, insert_volume, NewEmbedding, NewRegistration, NewVolume};
use super::{audit, now, JobKind, Payload, SeriesJob, Store, StoreError};

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

/// A job to enqueue. `key` names the work by content: enqueueing an existing key does nothing. Its kind is its
/// payload's.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub key: String,
    pub series_ref: Option<i64>,
    pub payload: Payload,
    pub priority: i64,
}

impl NewJob {
    pub fn kind(&self) -> JobKind {
        self.payload.kind()
    }
}

/// A job row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub key: String,
    pub series_ref: Option<i64>,
    pub series_uid: Option<String>,
    /// The series' state now (e.g. `skipped`, `needs_review`), so `ldae jobs` shows where each job's series ended.
    pub series_state: Option<String>,
    pub payload: Payload,
    pub state: String,
    pub priority: i64,
    pub attempts: i64,
    pub next_at: f64,
    pub last_error: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    /// The owner token of the process that holds (or last held) the claim.
    pub owner: Option<String>,
    /// Until when that claim holds unless renewed (seconds since the epoch).
    pub lease_until: Option<f64>,
}

/// A process's claim identity: its owner token (random, made at start) and how long a claim or heartbeat holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub owner: String,
    pub secs: f64,
}

/// Whether a job's result was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Recording {
    Recorded,
    /// The claim is no longer this worker's (its lease expired and the job was requeued or taken by another
    /// worker, or the operator cancelled it): nothing was recorded, the stage's results are discarded.
    LeaseLost,
}

const JOB_COLS: &str = "j.id, j.kind, j.key, j.series_ref, s.series_uid, j.payload, j.state, j.priority, j.attempts, \
                        j.next_at, j.last_error, j.created_at, j.updated_at, s.state, j.owner, j.lease_until";

/// A row as read; kind and payload are checked by [`RawJob::typed`], so that one unknown kind or unreadable
/// payload is an error naming its job.
struct RawJob {
    kind: String,
    payload: String,
    /// The row with a placeholder kind and payload.
    job: Job,
}

impl RawJob {
    fn typed(self) -> Result<Job, StoreError> {
        let id = self.job.id;
        let Some(kind) = JobKind::parse(&self.kind) else {
            return Err(StoreError::UnknownKind { job: id, kind: self.kind });
        };
        let payload = Payload::from_json(kind, &self.payload).map_err(|e| StoreError::BadPayload {
            job: id,
            kind,
            reason: e.to_string(),
        })?;
        Ok(Job { kind, payload, ..self.job })
    }
}

fn job_from_row(r: &Row) -> Result<RawJob, SqlError> {
    let job = Job {
        id: r.get(0)?,
        kind: JobKind::Convert,
        key: r.get(2)?,
        series_ref: r.get(3)?,
        series_uid: r.get(4)?,
        series_state: r.get(13)?,
        payload: Payload::Convert(SeriesJob { content_key: String::new() }),
        state: r.get(6)?,
        priority: r.get(7)?,
        attempts: r.get(8)?,
        next_at: r.get(9)?,
        last_error: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        owner: r.get(14)?,
        lease_until: r.get(15)?,
    };
    Ok(RawJob { kind: r.get(1)?, payload: r.get(5)?, job })
}

/// One job by id inside a transaction.
fn job_in(tx: &Tx<'_>, id: i64) -> Result<Job, StoreError> {
    job_from_row(&tx.query_row(
        &format!("SELECT {JOB_COLS} FROM jobs j LEFT JOIN series s ON s.id = j.series_ref WHERE j.id = ?1"),
        &params![id],
    )?)?
    .typed()
}

/// The SQL condition "this claim is still held at ?N": same owner, same attempt, running, lease not expired.
fn held(id: usize, owner: usize, attempt: usize, at: usize) -> String {
    format!("id = ?{id} AND state = 'running' AND owner = ?{owner} AND attempts = ?{attempt} AND lease_until >= ?{at}")
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
        &params![job.kind().as_str(), job.key, job.series_ref, job.payload.to_json(), job.priority, t],
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

    /// Take the most urgent runnable job of one of `kinds` for `lease` (see [`Store::claim_at`]).
    pub fn claim(&self, kinds: &[JobKind], lease: &Lease) -> Result<Option<Job>, StoreError> {
        self.claim_at(kinds, lease, now())
    }

    /// Take the most urgent job of one of `kinds` due at `t` and mark it running: owner = `lease.owner`,
    /// `lease_until = t + lease.secs`, attempts + 1.
    pub fn claim_at(&self, kinds: &[JobKind], lease: &Lease, t: f64) -> Result<Option<Job>, StoreError> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("?{}", i + 4)).collect();
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, owner = ?2, lease_until = ?3, \
             heartbeat_at = ?1, updated_at = ?1 WHERE id = \
             (SELECT id FROM jobs WHERE state = 'pending' AND next_at <= ?1 AND kind IN ({}) \
              ORDER BY priority DESC, next_at, id LIMIT 1{}) RETURNING id",
            marks.join(", "),
            // SQLite has one writer and no row locks; PostgreSQL skips rows another worker's claim holds.
            if tx.backend() == super::Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" }
        );
        let mut values: Vec<Value> = vec![t.into(), lease.owner.clone().into(), (t + lease.secs).into()];
        values.extend(kinds.iter().map(|k| Value::from(k.as_str())));
        let id: Option<i64> = tx.query_value(&sql, &values)?;
        let job = match id.map(|id| (id, job_in(&tx, id))) {
            None => None,
            Some((_, Ok(job))) => Some(job),
            // Never runnable as stored: dead-lettered with the reason, so the queue goes on.
            Some((id, Err(e @ StoreError::BadPayload { .. }))) => {
                let error = e.to_string();
                tx.execute(
                    "UPDATE jobs SET state = 'dead', updated_at = ?2, finished_at = ?2, lease_until = NULL, \
                     last_error = ?3 WHERE id = ?1",
                    &params![id, t, error],
                )?;
                audit(&tx, "job_dead", &id.to_string(), &serde_json::json!({ "error": error }))?;
                None
            }
            Some((_, Err(e))) => return Err(e),
        };
        tx.commit()?;
        Ok(job)
    }

    /// Seconds until the next pending job of `kinds` is due (None: nothing pending).
    pub fn next_due_in(&self, kinds: &[JobKind]) -> Result<Option<f64>, StoreError> {
        let conn = self.lock();
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("?{}", i + 1)).collect();
        let sql = format!("SELECT MIN(next_at) FROM jobs WHERE state = 'pending' AND kind IN ({})", marks.join(", "));
        if kinds.is_empty() {
            return Ok(None);
        }
        let names: Vec<Value> = kinds.iter().map(|k| Value::from(k.as_str())).collect();
        let at: Option<f64> = conn.query_value::<Option<f64>>(&sql, &names)?.flatten();
        Ok(at.map(|a| (a - now()).max(0.0)))
    }

    /// Record a job's success with everything it produced, in one transaction — only while `job`'s claim is
    /// still held (see [`Store::complete_at`]).
    pub fn complete(&self, job: &Job, c: &Completion) -> Result<Recording, StoreError> {
        self.complete_at(job, c, now())
    }

    /// [`Store::complete`] at time `t`. A claim that is no longer held (lease expired, requeued, taken by another
    /// worker, cancelled by the operator) records nothing and returns [`Recording::LeaseLost`]; what the stage
    /// wrote to disk stays (content-keyed names: the job's next run writes the same files).
    pub fn complete_at(&self, job: &Job, c: &Completion, t: f64) -> Result<Recording, StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let n = tx.execute(
            &format!(
                "UPDATE jobs SET state = 'done', updated_at = ?5, finished_at = ?5, last_error = NULL, \
                 lease_until = NULL WHERE {}",
                held(1, 2, 3, 4)
            ),
            &params![job.id, job.owner, job.attempts, t, t],
        )?;
        if n == 0 {
            return Ok(Recording::LeaseLost);
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
        let detail =
            serde_json::json!({ "kind": job.kind, "key": job.key, "owner": job.owner, "attempt": job.attempts });
        audit(&tx, "job_done", &job.id.to_string(), &detail)?;
        tx.commit()?;
        Ok(Recording::Recorded)
    }

    /// Record a failure: retry at `retry_at`, or (None) dead-letter the job and mark its series failed — only
    /// while `job`'s claim is still held (see [`Store::fail_at`]).
    pub fn fail(&self, job: &Job, error: &str, retry_at: Option<f64>) -> Result<Recording, StoreError> {
        self.fail_at(job, error, retry_at, now())
    }

    /// [`Store::fail`] at time `t`; a claim no longer held records nothing ([`Recording::LeaseLost`]).
    pub fn fail_at(&self, job: &Job, error: &str, retry_at: Option<f64>, t: f64) -> Result<Recording, StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let (state, next_at) = match retry_at {
            Some(at) => ("pending", at),
            None => ("dead", t),
        };
        let n = tx.execute(
            &format!(
                "UPDATE jobs SET state = ?5, next_at = ?6, last_error = ?7, updated_at = ?4, lease_until = NULL, \
                 finished_at = ?8 WHERE {}",
                held(1, 2, 3, 4)
            ),
            &params![job.id, job.owner, job.attempts, t, state, next_at, error, (state == "dead").then_some(t)],
        )?;
        if n == 0 {
            return Ok(Recording::LeaseLost);
        }
        if state == "dead" {
            if let (Some(series), Some(key)) = (job.series_ref, job.payload.content_key()) {
                tx.execute(
                    "UPDATE series SET state = 'failed', note = ?3 WHERE id = ?1 AND content_key = ?2 \
                     AND state <> 'receiving'",
                    &params![series, key, format!("{} job {} dead: {error}", job.kind, job.id)],
                )?;
            }
        }
        let kind = if state == "dead" { "job_dead" } else { "job_retry" };
        let detail =
            serde_json::json!({ "kind": job.kind, "error": error, "owner": job.owner, "attempt": job.attempts });
        audit(&tx, kind, &job.id.to_string(), &detail)?;
        tx.commit()?;
        Ok(Recording::Recorded)
    }

    /// Jobs, newest first, optionally only those in `state`; at most `limit`.
    pub fn jobs_list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs j LEFT JOIN series s ON s.id = j.series_ref \
             WHERE COALESCE(?1, j.state) = j.state ORDER BY j.id DESC LIMIT ?2"
        );
        let rows = conn.query_map(&sql, &params![state.map(|s| s.as_str()), limit as i64], job_from_row)?;
        rows.into_iter().map(RawJob::typed).collect()
    }

    /// The job with content key `key`, if any.
    pub fn job_by_key(&self, key: &str) -> Result<Option<Job>, StoreError> {
        let conn = self.lock();
        conn.query_opt(
            &format!("SELECT {JOB_COLS} FROM jobs j LEFT JOIN series s ON s.id = j.series_ref WHERE j.key = ?1"),
            &params![key],
        )?
        .as_ref()
        .map(job_from_row)
        .transpose()?
        .map(RawJob::typed)
        .transpose()
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
        .ok_or_else(|| StoreError::NotFound(format!("job {id} does not exist")))?
        .typed()
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
            "UPDATE jobs SET state = 'cancelled', updated_at = ?2, finished_at = ?2, lease_until = NULL \
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
