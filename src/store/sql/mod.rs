//! The backend-neutral SQL layer under the store: one connection type over SQLite (`rusqlite`) and PostgreSQL
//! (the sync `postgres` client), one transaction type, owned parameters ([`Value`]) and rows ([`Row`]), and one
//! error type ([`SqlError`]). Store code writes ONE piece of SQL per query, in the portable subset both engines
//! run the same way: `?N` placeholders (rewritten to `$N` for PostgreSQL, see [`postgres::placeholders`]),
//! `ON CONFLICT … DO NOTHING`, `RETURNING id`, `COALESCE`, `CASE` (no two-argument `MAX`), no `PRAGMA` outside the
//! SQLite backend's own open and migration code.
//!
//! Calls are synchronous. The PostgreSQL client drives its own small runtime and must not be called from a
//! tokio worker thread; the backend moves such calls to a scoped helper thread (see `postgres::off_runtime`), so
//! the store is safe to call from anywhere, as the daemon does.

use std::cell::RefCell;

pub mod postgres;
pub mod sqlite;
mod value;

pub(crate) use value::params;
pub use value::{FromValue, Row, Value};

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("column {index}: expected {expected}, found {found}")]
    Type { index: usize, expected: &'static str, found: &'static str },
    #[error("column {index} asked of a row of {columns} columns")]
    Column { index: usize, columns: usize },
    #[error("the query returned no rows")]
    NoRow,
    #[error("the connection is closed")]
    Closed,
    #[error("un-numbered `?` placeholder in {0:?}: write `?1`, `?2`, …")]
    Placeholder(String),
}

/// One connection.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<postgres::PgConn>>),
}

/// A transaction on a [`Conn`]: rolled back when dropped without [`Tx::commit`].
pub struct Tx<'c>(TxInner<'c>);

enum TxInner<'c> {
    Sqlite(Option<rusqlite::Transaction<'c>>),
    Postgres { pg: &'c RefCell<postgres::PgConn>, open: bool },
}

/// Statements, on a connection (autocommit) or in a transaction.
pub trait Exec {
    /// The engine behind it.
    fn backend(&self) -> Backend;
    /// Run a statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Value]) -> Result<usize, SqlError>;
    /// Run a query; every row.
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError>;
    /// Run `sql` (one or more statements, no parameters, no placeholder rewriting) as it is: migrations.
    fn batch(&self, sql: &str) -> Result<(), SqlError>;

    /// The first row, if any.
    fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, SqlError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// The first row; [`SqlError::NoRow`] when there is none.
    fn query_row(&self, sql: &str, params: &[Value]) -> Result<Row, SqlError> {
        self.query_opt(sql, params)?.ok_or(SqlError::NoRow)
    }
    /// Every row mapped by `f`.
    fn query_map<T, E: From<SqlError>>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnMut(&Row) -> Result<T, E>,
    ) -> Result<Vec<T>, E> {
        self.query(sql, params)?.iter().map(f).collect()
    }
    /// Column 0 of the first row, if any.
    fn query_value<T: FromValue>(&self, sql: &str, params: &[Value]) -> Result<Option<T>, SqlError> {
        self.query_opt(sql, params)?.map(|r| r.get(0)).transpose()
    }
}

impl Conn {
    /// Begin a write transaction. SQLite: `BEGIN IMMEDIATE`, so the write lock is taken (waiting up to the busy
    /// timeout) before the first read — a deferred transaction that reads and then writes fails at once with
    /// `SQLITE_BUSY` when another process committed in between. PostgreSQL: `BEGIN` (read committed).
    pub fn begin(&mut self) -> Result<Tx<'_>, SqlError> {
        match self {
            Conn::Sqlite(c) => {
                Ok(Tx(TxInner::Sqlite(Some(c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?))))
            }
            Conn::Postgres(pg) => {
                live(pg)?.batch("BEGIN")?;
                Ok(Tx(TxInner::Postgres { pg, open: true }))
            }
        }
    }

    /// Run `f` in one transaction whose commit is durable when this returns: SQLite commits it with
    /// `synchronous = FULL` (and, WAL being a log, every commit before it survives a power loss too); a
    /// PostgreSQL commit is durable already (`synchronous_commit` is the server's business).
    pub fn durably<T, E: From<SqlError>>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        let sqlite = matches!(self, Conn::Sqlite(_));
        if let Conn::Sqlite(c) = self {
            c.pragma_update(None, "synchronous", "FULL").map_err(SqlError::from)?;
        }
        let result: Result<T, E> = (|| {
            let tx = self.begin()?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })();
        if sqlite {
            if let Conn::Sqlite(c) = self {
                let reset = c.pragma_update(None, "synchronous", "NORMAL").map_err(SqlError::from);
                let v = result?;
                reset?;
                return Ok(v);
            }
        }
        result
    }
}

impl SqlError {
    /// Whether the connection is gone (PostgreSQL: the server or the network closed it), so that the same
    /// call on a fresh connection may succeed. SQLite connections do not get lost.
    pub fn connection_lost(&self) -> bool {
        match self {
            SqlError::Postgres(e) => postgres::connection_lost(e),
            SqlError::Closed => true,
            _ => false,
        }
    }
}

impl Conn {
    /// Apply a worker's [`postgres::SessionLimits`] (PostgreSQL; SQLite waits on its busy timeout instead).
    pub fn set_limits(&mut self, limits: postgres::SessionLimits) -> Result<(), SqlError> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Postgres(pg) => {
                let pg = pg.get_mut();
                pg.revive()?;
                pg.set_limits(limits)
            }
        }
    }
}

/// The connection, opened again first if the server closed it (autocommit statements only: see
/// [`postgres::PgConn::revive`]).
fn live(pg: &RefCell<postgres::PgConn>) -> Result<std::cell::RefMut<'_, postgres::PgConn>, SqlError> {
    let mut pg = pg.borrow_mut();
    pg.revive()?;
    Ok(pg)
}

impl Exec for Conn {
    fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }
    fn execute(&self, sql: &str, params: &[Value]) -> Result<usize, SqlError> {
        match self {
            Conn::Sqlite(c) => sqlite::execute(c, sql, params),
            Conn::Postgres(pg) => live(pg)?.execute(sql, params),
        }
    }
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        match self {
            Conn::Sqlite(c) => sqlite::query(c, sql, params),
            Conn::Postgres(pg) => live(pg)?.query(sql, params),
        }
    }
    fn batch(&self, sql: &str) -> Result<(), SqlError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(pg) => live(pg)?.batch(sql),
        }
    }
}

impl Tx<'_> {
    /// Commit.
    pub fn commit(mut self) -> Result<(), SqlError> {
        match &mut self.0 {
            TxInner::Sqlite(tx) => match tx.take() {
                Some(tx) => Ok(tx.commit()?),
                None => Ok(()),
            },
            TxInner::Postgres { pg, open } => {
                *open = false;
                pg.borrow_mut().batch("COMMIT")
            }
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // rusqlite's transaction rolls back on its own drop.
        if let TxInner::Postgres { pg, open: true } = &self.0 {
            // Nothing to report to: a failed rollback leaves the server to abort the transaction when the
            // connection's next statement (or its close) arrives.
            let _ = pg.borrow_mut().batch("ROLLBACK");
        }
    }
}

impl Exec for Tx<'_> {
    fn backend(&self) -> Backend {
        match &self.0 {
            TxInner::Sqlite(_) => Backend::Sqlite,
            TxInner::Postgres { .. } => Backend::Postgres,
        }
    }
    fn execute(&self, sql: &str, params: &[Value]) -> Result<usize, SqlError> {
        match &self.0 {
            TxInner::Sqlite(Some(tx)) => sqlite::execute(tx, sql, params),
            TxInner::Sqlite(None) => Err(SqlError::Closed),
            TxInner::Postgres { pg, .. } => pg.borrow_mut().execute(sql, params),
        }
    }
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        match &self.0 {
            TxInner::Sqlite(Some(tx)) => sqlite::query(tx, sql, params),
            TxInner::Sqlite(None) => Err(SqlError::Closed),
            TxInner::Postgres { pg, .. } => pg.borrow_mut().query(sql, params),
        }
    }
    fn batch(&self, sql: &str) -> Result<(), SqlError> {
        match &self.0 {
            TxInner::Sqlite(Some(tx)) => Ok(tx.execute_batch(sql)?),
            TxInner::Sqlite(None) => Err(SqlError::Closed),
            TxInner::Postgres { pg, .. } => pg.borrow_mut().batch(sql),
        }
    }
}
