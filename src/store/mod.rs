//! The store: the only module with SQL in it, over one of two backends behind the same methods — SQLite (the
//! embedded default: one writer connection per process, WAL so `ldae status` reads while the daemon writes) or
//! PostgreSQL (`[store] url`, shared by processes on several hosts). Each backend has its own numbered migration
//! history with the same schema meaning (`migrations/sqlite/`, `migrations/postgres/`, see `migrate.rs`); every
//! query is one piece of SQL in the portable subset of the SQL layer (`sql/`).
//!
//! Contract: every public method that changes state runs in **one transaction** and records its audit event in
//! the same transaction, so a crash leaves either the whole change or none of it. Callers never see SQL or
//! backend types: they pass and get plain values (`ArrivedFile`, `Job`, `NewJob`, ...), and do not know which
//! backend they talk to.
//!
//! Files: `intake.rs` (patients/studies/series/instances/duplicates/quarantine), `series.rs` (stability and
//! series states), `jobs.rs` (the queue; `job_kind.rs` its kinds, `payload.rs` their typed payloads,
//! `leases.rs` heartbeats and lease expiry), `results.rs` (volumes, registrations, embeddings), `status.rs`
//! (read-only summaries for the operator CLI), `lookup.rs` (embeddings read back for the researcher look-ups),
//! `synthetic.rs` (synthetic timepoints), `patient_scans.rs` (one patient's series, for `ldae report`).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use sql::{params, Conn, Exec, SqlError};

mod delivery;
mod intake;
mod job_kind;
mod jobs;
mod leases;
mod lookup;
mod migrate;
mod patient_scans;
mod payload;
mod recovery;
mod results;
mod series;
pub mod sql;
mod status;
mod synthetic;
mod training_inputs;

pub use delivery::DeliveryRow;
pub use intake::{patient_key, ArrivedFile, InstanceFacts, QuarantineRow, Recorded};
pub use job_kind::{JobKind, UnknownKind};
pub use jobs::{Completion, Job, JobState, Lease, NewJob, Recording, SeriesUpdate};
pub use lookup::{EmbeddingFilter, EmbeddingRow, EmbeddingsGeneration};
pub use migrate::{PG_MIGRATIONS, SQLITE_MIGRATIONS};
pub use patient_scans::{PatientRef, PatientSeries};
pub use payload::{DeliverRequest, EncodeJob, FillRequest, HookJob, Payload, PlanRequest, PreprocessJob, SeriesJob};
pub use recovery::ParseInFlight;
pub use results::{NewEmbedding, NewRegistration, NewVolume, VolumeRow};
pub use series::{ReadySeries, SeriesFiles};
pub use sql::Backend;
pub use status::{JobCount, SeriesSummary, StatusReport};
pub use synthetic::{EncodedScan, NewSynthetic, SyntheticDicom, SyntheticRow};

/// The SQLite database file inside `paths.state`.
pub const DB_FILE: &str = "ldae.sqlite";

/// Why the store could not do what was asked. Every variant names the database (its file, or the PostgreSQL
/// URL without a password) or the subject.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{db}: {source}")]
    Open { db: String, source: SqlError },
    #[error("{db}: cannot create the state folder: {source}")]
    Folder { db: String, source: std::io::Error },
    #[error("{db}: not a usable store URL: {reason}")]
    Url { db: String, reason: String },
    #[error("{db}: migration {name} failed: {source}")]
    Migration { db: String, name: String, source: SqlError },
    #[error("{db}: after the migrations, {row} references a missing row; nothing was changed")]
    ForeignKeys { db: String, row: String },
    #[error("{db}: database schema version {found} is newer than this ldae ({known}); upgrade ldae")]
    TooNew { db: String, found: i64, known: i64 },
    #[error("{db}: database schema version {found} is older than this ldae ({known}); run `ldae serve` to migrate")]
    TooOld { db: String, found: i64, known: i64 },
    #[error("database: {0}")]
    Sql(#[from] SqlError),
    #[error("job {job}: kind `{kind}` is unknown to this ldae (written by a newer version?): upgrade ldae or cancel the job")]
    UnknownKind { job: i64, kind: String },
    #[error("job {job}: its {kind} payload cannot be read: {reason}")]
    BadPayload { job: i64, kind: JobKind, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// Whether the database connection was lost under the call, so that calling again (on a new connection)
    /// may succeed.
    pub fn connection_lost(&self) -> bool {
        match self {
            StoreError::Sql(e) | StoreError::Open { source: e, .. } => e.connection_lost(),
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sql(e.into())
    }
}

/// Seconds since the Unix epoch, as stored in every `*_at` column.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Where the store lives: `[store] url` when set (PostgreSQL), else the SQLite file in `paths.state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Location {
    /// The configured store.
    pub fn of(cfg: &crate::config::Config) -> Location {
        match &cfg.store.url {
            Some(url) => Location::Postgres(url.clone()),
            None => Location::Sqlite(cfg.paths.state.clone()),
        }
    }
}

/// The store. Cheap to share behind an `Arc`; methods take `&self` and serialise on the one connection.
pub struct Store {
    conn: Mutex<Conn>,
    /// The database as shown in messages: the SQLite file, or the URL without its password.
    location: String,
}

impl Store {
    /// Open the configured store (`Location::of`), creating and migrating it as needed: what `ldae serve` does.
    pub fn open_at(loc: &Location) -> Result<Store, StoreError> {
        match loc {
            Location::Sqlite(dir) => Store::open_in(dir),
            Location::Postgres(url) => Store::open_postgres(url),
        }
    }

    /// Open an existing configured store for an operator command: never creates or migrates it, and refuses a
    /// schema this ldae does not know exactly.
    pub fn open_existing_at(loc: &Location) -> Result<Store, StoreError> {
        match loc {
            Location::Sqlite(dir) => Store::open_existing_in(dir),
            Location::Postgres(url) => Store::open_existing_postgres(url),
        }
    }

    /// Open (creating if needed) `<state_dir>/ldae.sqlite`, switch to WAL and apply pending migrations.
    pub fn open_in(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| StoreError::Folder { db: state_dir.display().to_string(), source })?;
        Self::open(&state_dir.join(DB_FILE))
    }

    /// Open (creating if needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = path.display().to_string();
        let conn = sql::sqlite::open(path).map_err(|source| StoreError::Open { db: db.clone(), source })?;
        let mut conn = Conn::Sqlite(conn);
        migrate::migrate(&mut conn, &db)?;
        Ok(Store { conn: Mutex::new(conn), location: db })
    }

    /// Open an existing SQLite database for an operator command (`ldae status`, `jobs`, `quarantine`, `commit`):
    /// never creates or migrates it (only `ldae serve` does), and refuses a schema this ldae does not know
    /// exactly — a newer one (upgrade ldae) or an older one (run `ldae serve` to migrate).
    pub fn open_existing_in(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::NotFound(format!(
                "{}: no database yet (has `ldae serve` run with this config?)",
                path.display()
            )));
        }
        let db = path.display().to_string();
        let conn = sql::sqlite::open_existing(&path).map_err(|source| StoreError::Open { db: db.clone(), source })?;
        let conn = Conn::Sqlite(conn);
        migrate::check_current(&conn, &db)?;
        Ok(Store { conn: Mutex::new(conn), location: db })
    }

    /// Connect to the PostgreSQL database at `url` and apply pending migrations (under an advisory lock, so two
    /// processes starting at once apply each migration once).
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let db = redact(url)?;
        let pg = sql::postgres::PgConn::connect(url).map_err(|source| StoreError::Open { db: db.clone(), source })?;
        let mut conn = Conn::Postgres(Box::new(pg.into()));
        migrate::migrate(&mut conn, &db)?;
        Ok(Store { conn: Mutex::new(conn), location: db })
    }

    /// Connect to an existing PostgreSQL store for an operator command: no migrations; the schema must be
    /// exactly this ldae's.
    pub fn open_existing_postgres(url: &str) -> Result<Store, StoreError> {
        let db = redact(url)?;
        let pg = sql::postgres::PgConn::connect(url).map_err(|source| StoreError::Open { db: db.clone(), source })?;
        let conn = Conn::Postgres(Box::new(pg.into()));
        migrate::check_current(&conn, &db)?;
        Ok(Store { conn: Mutex::new(conn), location: db })
    }

    /// Where the database lives, for messages: the SQLite file, or the PostgreSQL URL without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Which backend this store talks to (for reports and tests; store users need not care).
    pub fn backend(&self) -> Backend {
        self.lock().backend()
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock cannot leave a half transaction behind (a dropped transaction rolls
        // back), so a poisoned mutex is still a usable connection.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply the database session limits for a worker holding `lease_secs` leases
    /// ([`sql::postgres::SessionLimits::for_lease`]); nothing to do on SQLite.
    pub fn limit_sessions_for_lease(&self, lease_secs: f64) -> Result<(), StoreError> {
        Ok(self.lock().set_limits(sql::postgres::SessionLimits::for_lease(lease_secs))?)
    }

    /// Schema version (number of applied migrations of this backend's history).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        migrate::version(&self.lock())
    }

    /// Record an audit event on its own (most events are written inside the change they describe).
    pub fn audit(&self, kind: &str, subject: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        audit(&*self.lock(), kind, subject, detail)
    }
}

/// A PostgreSQL URL as shown in messages: without its password. Refuses what is not a `postgres(ql)://` URL.
fn redact(url: &str) -> Result<String, StoreError> {
    let Some(rest) = url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://")) else {
        return Err(StoreError::Url {
            db: "[store] url".into(),
            reason: "expected postgresql://user@host:port/database".into(),
        });
    };
    Ok(match rest.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("postgresql://{user}@{host}")
        }
        None => format!("postgresql://{rest}"),
    })
}

/// Insert an audit event (inside the caller's transaction).
fn audit(conn: &impl Exec, kind: &str, subject: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit_events (at, kind, subject, detail) VALUES (?1, ?2, ?3, ?4)",
        &params![now(), kind, subject, detail.to_string()],
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
