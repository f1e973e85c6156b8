//! Backend-neutral values: query parameters ([`Value`], built with `From` from Rust values) and result rows
//! ([`Row`], read by column index with typed getters through [`FromValue`]). Both backends convert to and from
//! these, so store code never sees a rusqlite or postgres type.

use super::SqlError;

/// One SQL value, owned. Booleans are stored as integers (0/1) on both backends.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// The value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v.into())
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Value {
        Value::Int(v.into())
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
/// Build a parameter list: `params![a, b, c]` → `[Value; 3]`. Arguments are borrowed (copied with
/// `to_owned`), as with rusqlite's macro.
macro_rules! params {
    () => { [] as [$crate::store::sql::Value; 0] };
    ($($v:expr),+ $(,)?) => { [$($crate::store::sql::Value::from(($v).to_owned())),+] };
}
pub(crate) use params;

/// One result row, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub(super) values: Vec<Value>,
}

impl Row {
    /// Column `i` as `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, SqlError> {
        let v = self.values.get(i).ok_or(SqlError::Column { index: i, columns: self.values.len() })?;
        T::from_value(v).ok_or_else(|| SqlError::Type { index: i, expected: T::NAME, found: v.kind() })
    }

    /// Column `i` taken out as it is (blobs without a copy).
    pub fn take(&mut self, i: usize) -> Value {
        self.values.get_mut(i).map(|v| std::mem::replace(v, Value::Null)).unwrap_or(Value::Null)
    }
}

/// A Rust type a column converts to.
pub trait FromValue: Sized {
    const NAME: &'static str;
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const NAME: &'static str = "integer";
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for u16 {
    const NAME: &'static str = "integer 0..=65535";
    fn from_value(v: &Value) -> Option<u16> {
        i64::from_value(v).and_then(|i| u16::try_from(i).ok())
    }
}
impl FromValue for bool {
    const NAME: &'static str = "integer 0/1";
    fn from_value(v: &Value) -> Option<bool> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    const NAME: &'static str = "real";
    fn from_value(v: &Value) -> Option<f64> {
        match v {
            Value::Real(f) => Some(*f),
            // SQLite stores a whole REAL written as an integer literal as an integer.
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}
impl FromValue for String {
    const NAME: &'static str = "text";
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    const NAME: &'static str = "blob";
    fn from_value(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    const NAME: &'static str = T::NAME;
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_convert_and_name_the_column_on_a_wrong_type() {
        let r = Row { values: vec![Value::Int(3), Value::Null, Value::Text("x".into()), Value::Int(70000)] };
        assert_eq!(r.get::<i64>(0).unwrap(), 3);
        assert_eq!(r.get::<f64>(0).unwrap(), 3.0);
        assert_eq!(r.get::<Option<String>>(1).unwrap(), None);
        assert_eq!(r.get::<String>(2).unwrap(), "x");
        assert!(matches!(r.get::<i64>(2), Err(SqlError::Type { index: 2, .. })));
        assert!(matches!(r.get::<u16>(3), Err(SqlError::Type { index: 3, .. })));
        assert!(matches!(r.get::<i64>(9), Err(SqlError::Column { index: 9, columns: 4 })));
        let p = params![1i64, "a", None::<i64>, true, 2.5];
        assert_eq!(p, [Value::Int(1), Value::Text("a".into()), Value::Null, Value::Int(1), Value::Real(2.5)]);
    }
}
