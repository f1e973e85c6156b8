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
        let mut buf = Vec::with_capacity(24);
        for v in r.y_sem.iter().take(dim) {
            s.push(',');
            push_f32(s, *v, &mut buf);
        }
    })
}

/// One JSON-lines record (y_sem serialised as f32, shortest round-trip form).
#[derive(serde::Serialize)]
struct Record<'a> {
    series_uid: &'a str,
    patient_id: Option<&'a str>,
    date: Option<&'a str>,
    age: Option<f64>,
    model: String,
    study_uid: &'a str,
    patient_key: &'a str,
    issuer: Option<&'a str>,
    study_date: Option<&'a str>,
    modality: Option<&'a str>,
    description: Option<&'a str>,
    steps: Option<i64>,
    preprocess_hash: &'a str,
    codes_path: &'a str,
    y_sem: &'a [f32],
}

/// JSON lines: one object per row with the identifier columns and `y_sem`.
pub fn write_jsonl<W: Write>(w: &mut W, rows: &[EmbeddingRow]) -> io::Result<()> {
    write_lines(w, rows, |r, s| {
        let rec = Record {
            series_uid: &r.series_uid,
            patient_id: r.patient_id.as_deref(),
            date: r.date.as_deref(),
            age: r.age,
            model: model_label(r),
            study_uid: &r.study_uid,
            patient_key: &r.patient_key,
            issuer: r.issuer.as_deref(),
            study_date: r.study_date.as_deref(),
            modality: r.modality.as_deref(),
            description: r.description.as_deref(),
            steps: r.steps,
            preprocess_hash: &r.preprocess_hash,
            codes_path: &r.codes_path,
            y_sem: &r.y_sem,
        };
        // Serialising plain strings and numbers cannot fail; a non-finite y_sem value becomes null.
        s.push_str(&serde_json::to_string(&rec).unwrap_or_default());
    })
}

/// Append `v` in its shortest round-trip form (`NaN`, `inf`, `-inf` for the non-finite).
fn push_f32(s: &mut String, v: f32, buf: &mut Vec<u8>) {
    if !v.is_finite() {
        s.push_str(if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "inf"
        } else {
            "-inf"
        });
        return;
    }
    buf.clear();
    if serde_json::to_writer(&mut *buf, &v).is_ok() {
        s.push_str(std::str::from_utf8(buf).unwrap_or("NaN"));
    }
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
        let (mut s, mut b) = (String::new(), Vec::new());
        for v in [0.1f32, -2.5e-8, f32::NAN, 3.0] {
            push_f32(&mut s, v, &mut b);
            s.push(' ');
        }
        assert_eq!(s, "0.1 -2.5e-8 NaN 3.0 ");
    }
}
