//! Stored embeddings written out for analysis (`ldae export`): CSV (identifiers, then `y0…y{E-1}`), JSON lines
//! (identifiers + a `y_sem` array), or NPY (an N×E little-endian f32 matrix, NPY format 1.0) beside a CSV index of
//! the same rows in the same order. Pure writers on rows; the CLI reads the rows from the store.
//!
//! The identifier columns are fixed ([`COLUMNS`]); `model` is `<model id>@<model version>`. CSV fields holding a
//! comma, a quote or a line break are quoted (RFC 4180).

use std::borrow::Cow;
use std::io::{self, Write};

use rayon::prelude::*;

use crate::store::EmbeddingRow;

/// The identifier columns, in order.
pub const COLUMNS: [&str; 14] = [
    "series_uid",
    "patient_id",
    "date",
    "age",
    "model",
    "study_uid",
    "patient_key",
    "issuer",
    "study_date",
    "modality",
    "description",
    "steps",
    "preprocess_hash",
    "codes_path",
];

/// `<model id>@<model version>`, the model column of every look-up.
pub fn model_label(r: &EmbeddingRow) -> String {
    format!("{}@{}", r.model_id, r.model_version)
}

/// The identifier fields of `r`, in [`COLUMNS`] order (empty when absent).
pub fn fields(r: &EmbeddingRow) -> [String; 14] {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.series_uid.clone(),
        o(&r.patient_id),
        o(&r.date),
        r.age.map(|a| a.to_string()).unwrap_or_default(),
        model_label(r),
        r.study_uid.clone(),
        r.patient_key.clone(),
        o(&r.issuer),
        o(&r.study_date),
        o(&r.modality),
        o(&r.description),
        r.steps.map(|s| s.to_string()).unwrap_or_default(),
        r.preprocess_hash.clone(),
        r.codes_path.clone(),
    ]
}

/// A CSV field, quoted when it must be.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

fn csv_line(fields: &[String], out: &mut String) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(f));
    }
}

/// Rows formatted in parallel, written in order.
fn write_lines<W: Write>(
    w: &mut W,
    rows: &[EmbeddingRow],
    line: impl Fn(&EmbeddingRow, &mut String) + Sync,
) -> io::Result<()> {
    for chunk in rows.chunks(4096) {
        let parts: Vec<String> = chunk
            .par_chunks(256)
            .map(|c| {
                let mut s = String::new();
                for r in c {
                    line(r, &mut s);
                    s.push('\n');
                }
                s
            })
            .collect();
        for p in parts {
            w.write_all(p.as_bytes())?;
        }
    }
    Ok(())
}

/// CSV: the identifier columns, then `y0…y{dim-1}` when `dim > 0` (rows must then hold their vectors).
pub fn write_csv<W: Write>(w: &mut W, rows: &[EmbeddingRow], dim: usize) -> io::Result<()> {
    let mut head = COLUMNS.join(",");
    for j in 0..dim {
        head.push_str(&format!(",y{j}"));
    }
    writeln!(w, "{head}")?;
    write_lines(w, rows, |r, s| {
        csv_line(&fields(r), s);
        for v in r.y_sem.iter().take(dim) {
            s.push(',');
            s.push_str(&v.to_string());
        }
    })
}

/// JSON lines: one object per row with the identifier columns and `y_sem`.
pub fn write_jsonl<W: Write>(w: &mut W, rows: &[EmbeddingRow]) -> io::Result<()> {
    write_lines(w, rows, |r, s| {
        let f = fields(r);
        let mut obj = serde_json::Map::new();
        for (name, v) in COLUMNS.iter().zip(f) {
            let value = match *name {
                "age" => r.age.map(serde_json::Value::from).unwrap_or(serde_json::Value::Null),
                "steps" => r.steps.map(serde_json::Value::from).unwrap_or(serde_json::Value::Null),
                "patient_id" | "date" | "issuer" | "study_date" | "modality" | "description" if v.is_empty() => {
                    serde_json::Value::Null
                }
                _ => serde_json::Value::String(v),
            };
            obj.insert((*name).to_string(), value);
        }
        obj.insert("y_sem".into(), serde_json::Value::from(r.y_sem.clone()));
        s.push_str(&serde_json::Value::Object(obj).to_string());
    })
}

/// The NPY 1.0 header of a C-order `<f4` array of shape (n, e), padded so the data starts at a multiple of 64.
pub fn npy_header(n: usize, e: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {e}), }}");
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.next_multiple_of(64);
    let mut h = Vec::with_capacity(total);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    h
}

/// NPY: the rows' vectors as an N×`dim` f32 matrix (every row must hold `dim` values).
pub fn write_npy<W: Write>(w: &mut W, rows: &[EmbeddingRow], dim: usize) -> io::Result<()> {
    if let Some(r) = rows.iter().find(|r| r.y_sem.len() != dim) {
        return Err(io::Error::other(format!("{}: {} values, expected {dim}", r.series_uid, r.y_sem.len())));
    }
    w.write_all(&npy_header(rows.len(), dim))?;
    let mut buf = Vec::with_capacity(dim * 4 * 1024);
    for chunk in rows.chunks(1024) {
        buf.clear();
        for v in chunk.iter().flat_map(|r| &r.y_sem) {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_csv_quotes() {
        let h = npy_header(100_000, 768);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
        assert!(std::str::from_utf8(&h[10..]).unwrap().contains("'shape': (100000, 768)"));
        assert_eq!(*h.last().unwrap(), b'\n');
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
