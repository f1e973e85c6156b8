//! The SQLite store: the only module with SQL in it. One writer connection per process, WAL (so `ldae status`
//! reads while the daemon writes), numbered migrations in `migrations/NNNN_name.sql`, one file per table group.
//!
//! Contract: every public method that changes state runs in **one transaction** and records its audit event in
//! the same transaction, so a crash leaves either the whole change or none of it. Callers never see SQL or
//! rusqlite types: they pass and get plain values (`ArrivedFile`, `Job`, `NewJob`, ...). That keeps the backend a
//! constructor choice — a PostgreSQL `Store` would implement the same methods (the job claim becomes
//! `SELECT … FOR UPDATE SKIP LOCKED`), see DESIGN.md "Growing past one machine".
//!
//! Files: `intake.rs` (patients/studies/series/instances/duplicates/quarantine), `series.rs` (stability and
//! series states), `jobs.rs` (the queue; `job_kind.rs` its kinds, `payload.rs` their typed payloads,
//! `leases.rs` heartbeats and lease expiry), `results.rs` (volumes, registrations, embeddings), `status.rs`
//! (read-only summaries for the operator CLI), `lookup.rs` (embeddings read back for the researcher look-ups),
//! `synthetic.rs` (synthetic timepoints), `patient_scans.rs` (one patient's series, for `ldae report`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

mod delivery;
mod intake;
mod job_kind;
mod jobs;
mod leases;
mod lookup;
mod patient_scans;
mod payload;
mod recovery;
mod results;
mod series;
mod status;
mod synthetic;

pub use delivery::DeliveryRow;
pub use intake::{patient_key, ArrivedFile, InstanceFacts, QuarantineRow, Recorded};
pub use job_kind::{JobKind, UnknownKind};
pub use jobs::{Completion, Job, JobState, Lease, NewJob, Recording, SeriesUpdate};
pub use lookup::{EmbeddingFilter, EmbeddingRow, EmbeddingsGeneration};
pub use patient_scans::{PatientRef, PatientSeries};
pub use payload::{DeliverRequest, EncodeJob, FillRequest, HookJob, Payload, PlanRequest, PreprocessJob, SeriesJob};
pub use recovery::ParseInFlight;
pub use results::{NewEmbedding, NewRegistration, NewVolume, VolumeRow};
pub use series::{ReadySeries, SeriesFiles};
pub use status::{JobCount, SeriesSummary, StatusReport};
pub use synthetic::{EncodedScan, NewSynthetic, SyntheticDicom, SyntheticRow};

/// The migrations, in order. `PRAGMA user_version` records how many have been applied.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_dicom", include_str!("migrations/0001_dicom.sql")),
    ("0002_results", include_str!("migrations/0002_results.sql")),
    ("0003_jobs", include_str!("migrations/0003_jobs.sql")),
    ("0004_quarantine_audit", include_str!("migrations/0004_quarantine_audit.sql")),
    ("0005_recovery", include_str!("migrations/0005_recovery.sql")),
    ("0006_keys_select_qc", include_str!("migrations/0006_keys_select_qc.sql")),
    ("0007_lookup", include_str!("migrations/0007_lookup.sql")),
    ("0008_synthetic", include_str!("migrations/0008_synthetic.sql")),
    ("0009_deliveries", include_str!("migrations/0009_deliveries.sql")),
    ("0010_leases", include_str!("migrations/0010_leases.sql")),
];

/// Begin a write transaction: `BEGIN IMMEDIATE`, so the write lock is taken (waiting up to the busy timeout)
/// before the first read. A deferred transaction that reads and then writes fails at once with `SQLITE_BUSY`
/// when another process (the daemon, an operator command) committed in between, busy timeout or not.
pub(crate) fn write_tx(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// The database file inside `paths.state`.
pub const DB_FILE: &str = "ldae.sqlite";

/// Why the store could not do what was asked. Every variant names the database or the subject.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("{path}: cannot create the state folder: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("{path}: migration {name} failed: {source}")]
    Migration { path: PathBuf, name: String, source: rusqlite::Error },
    #[error("{path}: after the migrations, {row} references a missing row; nothing was changed")]
    ForeignKeys { path: PathBuf, row: String },
    #[error("{path}: database schema version {found} is newer than this ldae ({known}); upgrade ldae")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("{path}: database schema version {found} is older than this ldae ({known}); run `ldae serve` to migrate")]
    TooOld { path: PathBuf, found: i64, known: i64 },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("job {job}: kind `{kind}` is unknown to this ldae (written by a newer version?): upgrade ldae or cancel the job")]
    UnknownKind { job: i64, kind: String },
    #[error("job {job}: its {kind} payload cannot be read: {reason}")]
    BadPayload { job: i64, kind: JobKind, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// Seconds since the Unix epoch, as stored in every `*_at` column.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The store. Cheap to share behind an `Arc`; methods take `&self` and serialise on the one connection.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Store {
    /// Open (creating if needed) `<state_dir>/ldae.sqlite`, switch to WAL and apply pending migrations.
    pub fn open_in(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| StoreError::Folder { path: state_dir.to_path_buf(), source })?;
        Self::open(&state_dir.join(DB_FILE))
    }

    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(open_err)?;
        // Switching a fresh file to WAL needs an exclusive lock and SQLite answers BUSY at once, without the busy
        // handler, while another process is doing the same: retry for as long as the busy timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(open_err(e)),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        let store = Store { conn: Mutex::new(conn), path: path.to_path_buf() };
        store.migrate()?;
        Ok(store)
    }

    /// Open an existing database for an operator command (`ldae status`, `jobs`, `quarantine`, `commit`): never
    /// creates or migrates it (only `ldae serve` does), and refuses a schema this ldae does not know exactly — a
    /// newer one (upgrade ldae) or an older one (run `ldae serve` to migrate).
    pub fn open_existing_in(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::NotFound(format!(
                "{}: no database yet (has `ldae serve` run with this config?)",
                path.display()
            )));
        }
        let open_err = |source| StoreError::Open { path: path.clone(), source };
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(open_err)?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew { path, found, known });
        }
        if found < known {
            return Err(StoreError::TooOld { path, found, known });
        }
        Ok(Store { conn: Mutex::new(conn), path })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half transaction behind (rusqlite rolls back on drop),
        // so a poisoned mutex is still a usable connection.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply pending migrations. The version is read under the write lock (`BEGIN IMMEDIATE`) and every pending
    /// migration is applied in that one transaction: two processes opening a fresh database at once (the daemon
    /// starting and `ldae status` polling it) must not both apply migration 1.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        // A migration may rebuild a table others reference (SQLite's documented procedure): foreign keys are off
        // while migrations run (the pragma is a no-op inside a transaction) and checked before the commit.
        let fk_err = |source| StoreError::Migration { path: self.path.clone(), name: "(foreign_keys)".into(), source };
        conn.pragma_update(None, "foreign_keys", "OFF").map_err(fk_err)?;
        let result = self.migrate_in(&mut conn);
        conn.pragma_update(None, "foreign_keys", "ON").map_err(fk_err)?;
        result
    }

    fn migrate_in(&self, conn: &mut Connection) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let begin_err = |source| StoreError::Migration { path: self.path.clone(), name: "(begin)".into(), source };
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(begin_err)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > known {
            return Err(StoreError::TooNew { path: self.path.clone(), found: version, known });
        }
        if version == known {
            return Ok(());
        }
        for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let mig_err = |source| StoreError::Migration { path: self.path.clone(), name: name.to_string(), source };
            tx.execute_batch(sql).map_err(mig_err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(mig_err)?;
        }
        let broken: Option<String> = tx
            .query_row("SELECT \"table\" || ' row ' || rowid FROM pragma_foreign_key_check LIMIT 1", [], |r| r.get(0))
            .optional()?;
        if let Some(row) = broken {
            return Err(StoreError::ForeignKeys { path: self.path.clone(), row });
        }
        tx.commit().map_err(|source| StoreError::Migration { path: self.path.clone(), name: "(commit)".into(), source })
    }

    /// Schema version (number of applied migrations).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.lock().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Record an audit event on its own (most events are written inside the change they describe).
    pub fn audit(&self, kind: &str, subject: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        audit(&self.lock(), kind, subject, detail)
    }
}

/// Run `f` in one transaction committed with `synchronous = FULL`: when this returns, the change — and, WAL
/// being a log, every commit before it — survives a power loss. Used right before a destructive file step
/// (archive move, delete, quarantine move, requeue move); measured ≈ 6 ms per commit on the dev box's disk
/// against ≈ 0.01 ms for a NORMAL one, so only those few commits pay it.
fn durably<T>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let result = (|| -> Result<T, StoreError> {
        let tx = write_tx(conn)?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    })();
    let reset = conn.pragma_update(None, "synchronous", "NORMAL");
    let v = result?;
    reset?;
    Ok(v)
}

/// Insert an audit event (inside the caller's transaction).
fn audit(conn: &Connection, kind: &str, subject: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit_events (at, kind, subject, detail) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![now(), kind, subject, detail.to_string()],
    )?;
    Ok(())
}

/// A path as stored text.
fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;
