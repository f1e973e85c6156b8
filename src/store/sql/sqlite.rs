//! The SQLite side of the SQL layer: [`Value`] as a rusqlite parameter, rusqlite rows as [`Row`]s, statements
//! through rusqlite's prepared-statement cache. SQLite takes the `?N` placeholders as written.

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{Row, SqlError, Value};

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn value(v: ValueRef<'_>) -> Result<Value, SqlError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec())
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// Run a statement on `c` (a connection or, through `Deref`, a transaction).
pub(super) fn execute(c: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<usize, SqlError> {
    let mut st = c.prepare_cached(sql)?;
    Ok(st.execute(rusqlite::params_from_iter(params.iter()))?)
}

/// Run a query on `c`; every row.
pub(super) fn query(c: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
    let mut st = c.prepare_cached(sql)?;
    let n = st.column_count();
    let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let values = (0..n).map(|i| value(r.get_ref(i)?)).collect::<Result<Vec<_>, SqlError>>()?;
        out.push(Row { values });
    }
    Ok(out)
}

/// Open (creating if needed) the database at `path`: busy timeout, WAL, `synchronous = NORMAL`, foreign keys.
pub fn open(path: &std::path::Path) -> Result<rusqlite::Connection, SqlError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Switching a fresh file to WAL needs an exclusive lock and SQLite answers BUSY at once, without the busy
    // handler, while another process is doing the same: retry for as long as the busy timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Open an existing database read-write without creating it (operator commands).
pub fn open_existing(path: &std::path::Path) -> Result<rusqlite::Connection, SqlError> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}
