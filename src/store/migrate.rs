//! The schema's migration histories, one per backend with the same schema meaning: SQLite's numbered files in
//! `migrations/sqlite/` (the version in `PRAGMA user_version`), PostgreSQL's in `migrations/postgres/` (the
//! version in the one-row table `schema_version`). The same rules on both: a database newer than this ldae is
//! refused (`TooNew`), an operator command refuses an older one (`TooOld`: only `ldae serve` migrates), and all
//! pending migrations are applied in one transaction that two processes starting at once cannot both run
//! (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock).

use super::sql::{params, Conn, Exec, SqlError};
use super::StoreError;

/// SQLite's migrations, in order.
pub const SQLITE_MIGRATIONS: &[(&str, &str)] = &[
    ("0001_dicom", include_str!("migrations/sqlite/0001_dicom.sql")),
    ("0002_results", include_str!("migrations/sqlite/0002_results.sql")),
    ("0003_jobs", include_str!("migrations/sqlite/0003_jobs.sql")),
    ("0004_quarantine_audit", include_str!("migrations/sqlite/0004_quarantine_audit.sql")),
    ("0005_recovery", include_str!("migrations/sqlite/0005_recovery.sql")),
    ("0006_keys_select_qc", include_str!("migrations/sqlite/0006_keys_select_qc.sql")),
    ("0007_lookup", include_str!("migrations/sqlite/0007_lookup.sql")),
    ("0008_synthetic", include_str!("migrations/sqlite/0008_synthetic.sql")),
    ("0009_deliveries", include_str!("migrations/sqlite/0009_deliveries.sql")),
    ("0010_leases", include_str!("migrations/sqlite/0010_leases.sql")),
];

/// PostgreSQL's migrations, in order (0001 is SQLite's 0001–0009 at once).
pub const PG_MIGRATIONS: &[(&str, &str)] = &[
    ("0001_schema", include_str!("migrations/postgres/0001_schema.sql")),
    ("0002_leases", include_str!("migrations/postgres/0002_leases.sql")),
];

/// The key of the advisory lock migrations run under (any fixed number: "ldae" in ASCII).
const PG_MIGRATION_LOCK: i64 = 0x6c64_6165;

fn known(conn: &Conn) -> i64 {
    match conn {
        Conn::Sqlite(_) => SQLITE_MIGRATIONS.len() as i64,
        Conn::Postgres(_) => PG_MIGRATIONS.len() as i64,
    }
}

/// The applied version (0 on a fresh PostgreSQL database).
pub(super) fn version(conn: &Conn) -> Result<i64, StoreError> {
    Ok(version_in(conn)?)
}

fn version_in(c: &impl Exec) -> Result<i64, SqlError> {
    match c.backend() {
        super::Backend::Sqlite => Ok(c.query_value("PRAGMA user_version", &[])?.unwrap_or(0)),
        super::Backend::Postgres => {
            let exists = c.query_value::<Option<String>>("SELECT to_regclass('schema_version')::text", &[])?.flatten();
            if exists.is_none() {
                return Ok(0);
            }
            Ok(c.query_value("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?.unwrap_or(0))
        }
    }
}

/// For an operator command: the schema must be exactly this ldae's.
pub(super) fn check_current(conn: &Conn, db: &str) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open { db: db.to_string(), source };
    let found = version_in(conn).map_err(open_err)?;
    let known = known(conn);
    if found > known {
        return Err(StoreError::TooNew { db: db.to_string(), found, known });
    }
    if found == 0 && matches!(conn, Conn::Postgres(_)) {
        return Err(StoreError::NotFound(format!("{db}: no ldae schema yet (has `ldae serve` run with this config?)")));
    }
    if found < known {
        return Err(StoreError::TooOld { db: db.to_string(), found, known });
    }
    Ok(())
}

/// Apply pending migrations.
pub(super) fn migrate(conn: &mut Conn, db: &str) -> Result<(), StoreError> {
    match conn {
        Conn::Sqlite(c) => {
            // A migration may rebuild a table others reference (SQLite's documented procedure): foreign keys are
            // off while migrations run (the pragma is a no-op inside a transaction) and checked before the commit.
            let fk_err = |source: rusqlite::Error| StoreError::Migration {
                db: db.to_string(),
                name: "(foreign_keys)".into(),
                source: source.into(),
            };
            c.pragma_update(None, "foreign_keys", "OFF").map_err(fk_err)?;
            let result = migrate_in(conn, db, SQLITE_MIGRATIONS);
            if let Conn::Sqlite(c) = conn {
                c.pragma_update(None, "foreign_keys", "ON").map_err(fk_err)?;
            }
            result
        }
        Conn::Postgres(_) => migrate_in(conn, db, PG_MIGRATIONS),
    }
}

fn migrate_in(conn: &mut Conn, db: &str, migrations: &[(&str, &str)]) -> Result<(), StoreError> {
    let known = migrations.len() as i64;
    let step_err = |name: &str| {
        let name = name.to_string();
        move |source| StoreError::Migration { db: db.to_string(), name, source }
    };
    let backend = conn.backend();
    // The version is read under the write lock and every pending migration is applied in that one
    // transaction: two processes opening a fresh database at once must not both apply migration 1.
    let tx = conn.begin().map_err(step_err("(begin)"))?;
    if backend == super::Backend::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(?1)", &params![PG_MIGRATION_LOCK]).map_err(step_err("(lock)"))?;
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)", &[])
            .map_err(step_err("(schema_version)"))?;
    }
    let version = version_in(&tx)?;
    if version > known {
        return Err(StoreError::TooNew { db: db.to_string(), found: version, known });
    }
    if version == known {
        return Ok(());
    }
    for (i, (name, sql)) in migrations.iter().enumerate().skip(version as usize) {
        let to = (i + 1) as i64;
        tx.batch(sql).map_err(step_err(name))?;
        match backend {
            super::Backend::Sqlite => tx.batch(&format!("PRAGMA user_version = {to}")),
            super::Backend::Postgres => tx
                .execute("DELETE FROM schema_version", &[])
                .and_then(|_| tx.execute("INSERT INTO schema_version (version) VALUES (?1)", &params![to]))
                .map(|_| ()),
        }
        .map_err(step_err(name))?;
    }
    if backend == super::Backend::Sqlite {
        let broken: Option<String> =
            tx.query_value("SELECT \"table\" || ' row ' || rowid FROM pragma_foreign_key_check LIMIT 1", &[])?;
        if let Some(row) = broken {
            return Err(StoreError::ForeignKeys { db: db.to_string(), row });
        }
    }
    tx.commit().map_err(step_err("(commit)"))
}
