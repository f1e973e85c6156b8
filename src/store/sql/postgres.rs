//! The PostgreSQL side of the SQL layer: the sync `postgres` client, with `?N` placeholders rewritten to `$N`,
//! prepared statements cached per connection, [`Value`] converted to whatever type the server inferred for a
//! parameter (an integer for a `bigint`, `integer` or `boolean` slot, ...) and result columns read back as
//! [`Value`]s.
//!
//! The sync client runs each call on a private tokio runtime, and tokio panics when that happens on a thread
//! already inside a runtime (the daemon's async tasks). [`off_runtime`] runs such a call on a scoped helper
//! thread instead (≈ 20 µs, beside a round trip of ≈ 100 µs); on a plain thread the call runs where it is.

use std::collections::HashMap;
use std::error::Error;

use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::{Row, SqlError, Value};

/// A PostgreSQL connection with its statement cache. A connection the server closed (restart, network, or a
/// session it ended: see [`SessionLimits`]) is opened again by [`PgConn::revive`] before the next statement
/// outside a transaction; a transaction it was in is lost (rolled back by the server), and says so.
pub struct PgConn {
    url: String,
    /// Always `Some` until dropped (taken out by `Drop`, to be closed off the runtime).
    client: Option<Client>,
    cache: HashMap<String, Statement>,
    limits: SessionLimits,
}

/// How long a session may wait for a row lock, and sit idle inside a transaction, before the server gives up.
///
/// Store transactions run SQL only (no file work inside), so a session idle in a transaction for long is a
/// process that stopped (SIGSTOP, swapped out, hung) while holding row locks — and every other worker's lease
/// upkeep would wait on those locks, their own leases running out behind it. The server ends such a session
/// (its transaction rolls back, its locks go) and a waiting statement fails after `lock_ms` instead of
/// blocking its connection, and everything queued behind that connection, without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub lock_ms: u64,
    pub idle_in_transaction_ms: u64,
}

impl Default for SessionLimits {
    /// For operator commands and a store opened without a lease in mind.
    fn default() -> Self {
        SessionLimits { lock_ms: 5_000, idle_in_transaction_ms: 60_000 }
    }
}

impl SessionLimits {
    /// For a worker holding `lease_secs` leases: a lock wait of at most a quarter lease (so the heartbeat
    /// behind it still renews in time), and a session idle in a transaction for a whole lease is ended — by
    /// then its jobs are another worker's anyway.
    pub fn for_lease(lease_secs: f64) -> SessionLimits {
        let ms = (lease_secs.max(0.0) * 1000.0) as u64;
        SessionLimits { lock_ms: (ms / 4).clamp(200, 5_000), idle_in_transaction_ms: ms.max(1_000) }
    }

    fn sql(&self) -> String {
        format!(
            "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
            self.lock_ms, self.idle_in_transaction_ms
        )
    }
}

/// Run `f` where the sync client may block: on this thread, or on a scoped helper thread when this thread is
/// inside a tokio runtime.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl PgConn {
    /// Connect to `url` (`postgresql://user@host:port/db`), without TLS (a server on the local network).
    pub fn connect(url: &str) -> Result<PgConn, SqlError> {
        let limits = SessionLimits::default();
        let client = open(url, &limits)?;
        Ok(PgConn { url: url.to_string(), client: Some(client), cache: HashMap::new(), limits })
    }

    fn client(&mut self) -> Result<&mut Client, SqlError> {
        self.client.as_mut().ok_or(SqlError::Closed)
    }

    /// Apply `limits` to this session (and to every session [`PgConn::revive`] opens later).
    pub fn set_limits(&mut self, limits: SessionLimits) -> Result<(), SqlError> {
        self.limits = limits;
        self.batch(&limits.sql())
    }

    /// Open the connection again if the server closed it. Called before a statement outside a transaction
    /// only: inside one, the error must reach the transaction's owner (its work was rolled back).
    pub fn revive(&mut self) -> Result<(), SqlError> {
        if !self.client.as_ref().is_some_and(Client::is_closed) {
            return Ok(());
        }
        let client = open(&self.url, &self.limits)?;
        if let Some(old) = self.client.replace(client) {
            off_runtime(move || drop(old));
        }
        self.cache.clear();
        tracing::warn!("the PostgreSQL connection was closed by the server: connected again");
        Ok(())
    }

    /// Run `sql` (one or more statements, no parameters) as it is.
    pub fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        let client = self.client()?;
        Ok(off_runtime(|| client.batch_execute(sql))?)
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, SqlError> {
        if let Some(st) = self.cache.get(sql) {
            return Ok(st.clone());
        }
        let text = placeholders(sql)?;
        let client = self.client()?;
        let st = off_runtime(|| client.prepare(&text))?;
        self.cache.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// Run a statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> Result<usize, SqlError> {
        let st = self.statement(sql)?;
        let client = self.client()?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let n = off_runtime(|| client.execute(&st, &refs))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Run a query; every row.
    pub fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let st = self.statement(sql)?;
        let client = self.client()?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = off_runtime(|| client.query(&st, &refs))?;
        rows.iter()
            .map(|r| {
                let values = (0..r.len()).map(|i| r.try_get::<_, Value>(i)).collect::<Result<Vec<_>, _>>()?;
                Ok(Row { values })
            })
            .collect()
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing the client blocks on its runtime too.
        if let Some(client) = self.client.take() {
            off_runtime(move || drop(client));
        }
    }
}

/// Connect and apply the session limits.
fn open(url: &str, limits: &SessionLimits) -> Result<Client, SqlError> {
    off_runtime(|| {
        let mut client = Client::connect(url, NoTls)?;
        client.batch_execute(&limits.sql())?;
        Ok(client)
    })
}

/// Whether `e` means the session is gone (closed by the server or the network), as opposed to a statement
/// that failed on a live session.
pub fn connection_lost(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    e.code().is_some_and(|c| {
        *c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
            || *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || c.code().starts_with("08")
    })
}

/// Rewrite `?N` placeholders to `$N`, leaving string literals (`'…'`) and quoted identifiers (`"…"`) alone. A
/// bare `?` is refused: SQLite numbers those by position, PostgreSQL has no such thing.
pub fn placeholders(sql: &str) -> Result<String, SqlError> {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                if !chars.peek().is_some_and(char::is_ascii_digit) {
                    return Err(SqlError::Placeholder(sql.to_string()));
                }
                out.push('$');
            }
            (None, c) => out.push(c),
        }
    }
    Ok(out)
}

/// A PostgreSQL error with the server's message (the client's own `Display` says only "db error").
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("postgresql: {}: {}", db.severity(), db.message()),
        None => format!("postgresql: {e}"),
    }
}

fn wrong(v: &Value, ty: &Type) -> Box<dyn Error + Sync + Send> {
    format!("a {} value cannot go into a parameter of type {ty}", v.kind()).into()
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(wrong(self, ty)),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => f.to_string().to_sql(ty, out),
                _ => Err(wrong(self, ty)),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => s.as_str().to_sql(ty, out),
                _ => Err(wrong(self, ty)),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(wrong(self, ty)),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Value::Text(String::from_sql(ty, raw)?)
            }
            _ => return Err(format!("a result column of type {ty} is not read by ldae").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value, Box<dyn Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_literals() {
        let sql = "SELECT '?1', \"a?2\" FROM t WHERE a = ?1 AND b IN (?2, ?10) AND c = 'it''s ?3'";
        assert_eq!(
            placeholders(sql).unwrap(),
            "SELECT '?1', \"a?2\" FROM t WHERE a = $1 AND b IN ($2, $10) AND c = 'it''s ?3'"
        );
        assert!(matches!(placeholders("SELECT ? FROM t"), Err(SqlError::Placeholder(_))));
    }
}
