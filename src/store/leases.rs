//! Lease upkeep for the job queue (claims are in `jobs.rs`): the owner's heartbeat renews its running jobs'
//! leases; a running job whose lease ran out — its worker died, hung or was paused past the lease — goes back to
//! pending with the loss counted in `crashes`, and at `jobs.max_crashes` losses it is dead-lettered with the
//! reason instead (a job that keeps taking its worker down is a poison input, and must not crash-loop a
//! cluster). A worker that finds a dead owner on its own host (its owner lock free) releases that owner's jobs
//! at once, the same way, so a restarted single daemon picks up its crashed jobs without waiting a lease.
//!
//! Times are parameters (`*_at` variants take `now`), so the rules are tested without sleeping.

use super::sql::{params, Exec, SqlError, Tx};

use super::{audit, now, Store, StoreError};

/// Which running jobs lost their worker.
enum Lost<'a> {
    /// Lease ran out before `at` (or a job running before leases existed: no lease at all).
    ExpiredBy(f64),
    /// Owned by a process known to be gone.
    Owner(&'a str),
}

impl Store {
    /// Renew the leases of every job `owner` runs: `lease_until = t + secs`. A lease that already ran out is
    /// not renewed (it is lost: [`Store::expire_leases_at`] requeues it). Returns how many were renewed.
    pub fn heartbeat_at(&self, owner: &str, secs: f64, t: f64) -> Result<usize, StoreError> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE jobs SET lease_until = ?2, heartbeat_at = ?3 \
             WHERE owner = ?1 AND state = 'running' AND lease_until >= ?3",
            &params![owner, t + secs, t],
        )?)
    }

    /// [`Store::heartbeat_at`] now.
    pub fn heartbeat(&self, owner: &str, secs: f64) -> Result<usize, StoreError> {
        self.heartbeat_at(owner, secs, now())
    }

    /// Requeue every running job whose lease ran out before `t` (one lost worker counted in `crashes`);
    /// dead-letter those lost `max_crashes` times. Returns (requeued, dead-lettered).
    pub fn expire_leases_at(&self, t: f64, max_crashes: u32) -> Result<(usize, usize), StoreError> {
        self.requeue_lost(Lost::ExpiredBy(t), t, max_crashes)
    }

    /// [`Store::expire_leases_at`] now.
    pub fn expire_leases(&self, max_crashes: u32) -> Result<(usize, usize), StoreError> {
        self.expire_leases_at(now(), max_crashes)
    }

    /// Like [`Store::expire_leases_at`] for every running job of `owner`, a process known to be gone.
    pub fn release_owner_at(&self, owner: &str, t: f64, max_crashes: u32) -> Result<(usize, usize), StoreError> {
        self.requeue_lost(Lost::Owner(owner), t, max_crashes)
    }

    /// The distinct owners of running jobs.
    pub fn running_owners(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        Ok(conn.query_map(
            "SELECT DISTINCT owner FROM jobs WHERE state = 'running' AND owner IS NOT NULL ORDER BY owner",
            &[],
            |r| r.get::<String>(0),
        )?)
    }

    fn requeue_lost(&self, lost: Lost<'_>, t: f64, max_crashes: u32) -> Result<(usize, usize), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        // PostgreSQL: the rows are locked, so two processes reaping at once count each loss once.
        let lock = if tx.backend() == super::Backend::Postgres { " FOR UPDATE" } else { "" };
        type Row = (i64, Option<i64>, String, String, i64, Option<String>);
        let cols = "id, series_ref, kind, payload, crashes, owner";
        let map = |r: &super::sql::Row| -> Result<Row, SqlError> {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        };
        let rows: Vec<Row> = match lost {
            Lost::ExpiredBy(at) => tx.query_map(
                &format!(
                    "SELECT {cols} FROM jobs WHERE state = 'running' AND (lease_until IS NULL OR lease_until < ?1) \
                         ORDER BY id{lock}"
                ),
                &params![at],
                map,
            )?,
            Lost::Owner(owner) => tx.query_map(
                &format!("SELECT {cols} FROM jobs WHERE state = 'running' AND owner = ?1 ORDER BY id{lock}"),
                &params![owner],
                map,
            )?,
        };
        let why = match lost {
            Lost::ExpiredBy(_) => "its lease expired (the worker died, hung or was paused)",
            Lost::Owner(_) => "its worker process died",
        };
        let (mut requeued, mut dead) = (0, 0);
        for (id, series, kind, payload, crashes, owner) in rows {
            let crashes = crashes + 1;
            if crashes >= i64::from(max_crashes.max(1)) {
                let error = format!(
                    "lost its worker {crashes} time(s) while running (last: {why}): not run again (a poison input?)"
                );
                tx.execute(
                    "UPDATE jobs SET state = 'dead', crashes = ?2, updated_at = ?3, finished_at = ?3, \
                     lease_until = NULL, last_error = ?4 WHERE id = ?1",
                    &params![id, crashes, t, error],
                )?;
                fail_series(&tx, series, &payload, &format!("{kind} job {id} dead: {error}"))?;
                let detail = serde_json::json!({ "kind": kind, "error": error, "owner": owner, "crashes": crashes });
                audit(&tx, "job_dead", &id.to_string(), &detail)?;
                dead += 1;
            } else {
                tx.execute(
                    "UPDATE jobs SET state = 'pending', crashes = ?2, updated_at = ?3, next_at = ?3, \
                     lease_until = NULL, last_error = ?4 WHERE id = ?1",
                    &params![id, crashes, t, format!("interrupted: {why}")],
                )?;
                let detail = serde_json::json!({ "kind": kind, "why": why, "owner": owner, "crashes": crashes });
                audit(&tx, "job_lease_lost", &id.to_string(), &detail)?;
                requeued += 1;
            }
        }
        tx.commit()?;
        Ok((requeued, dead))
    }
}

/// Mark a dead job's series failed, if the series still has the job's content key.
fn fail_series(tx: &Tx<'_>, series: Option<i64>, payload: &str, note: &str) -> Result<(), StoreError> {
    let key = serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|p| p.get("content_key").and_then(|k| k.as_str()).map(str::to_string));
    if let (Some(series), Some(key)) = (series, key) {
        tx.execute(
            "UPDATE series SET state = 'failed', note = ?3 WHERE id = ?1 AND content_key = ?2 \
             AND state <> 'receiving'",
            &params![series, key, note],
        )?;
    }
    Ok(())
}
