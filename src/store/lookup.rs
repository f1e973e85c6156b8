//! Embeddings read back for the researcher look-ups (`ldae similar`, `ldae export`, probes, reports): each
//! embedding joined to its registration, volume, series, study and patient, as plain rows. Rows of one model at a
//! time: embeddings of different models are never compared. The filter ([`EmbeddingFilter`]) is plain data that
//! the look-ups also apply in memory (to a cached matrix), so SQL and cache select exactly the same rows.

use super::sql::{params, Exec, Row, SqlError, Value};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One stored embedding and what identifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRow {
    /// The embeddings row id (increasing in insertion order).
    pub id: i64,
    pub series_uid: String,
    pub study_uid: String,
    /// DICOM PatientID; None when the files carried none.
    pub patient_id: Option<String>,
    pub issuer: Option<String>,
    /// What the patient is keyed by: `id:<issuer>\<PatientID>` or `study:<StudyInstanceUID>`.
    pub patient_key: String,
    /// Acquisition date (else the study date), `YYYYMMDD` as DICOM writes it.
    pub date: Option<String>,
    pub study_date: Option<String>,
    /// The patient's age in years at the study.
    pub age: Option<f64>,
    pub modality: Option<String>,
    pub description: Option<String>,
    pub model_id: String,
    /// The first 16 hex digits of the model's weights digest.
    pub model_version: String,
    /// Encoding steps (None for rows written before it was recorded).
    pub steps: Option<i64>,
    pub preprocess_hash: String,
    /// The codes file (y_sem, x_T, latent).
    pub codes_path: String,
    /// The semantic code; empty when the rows were read without vectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub y_sem: Vec<f32>,
}

/// Which embeddings a look-up considers. Dates are `YYYYMMDD` and inclusive; a row without a date never matches a
/// date bound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingFilter {
    /// A PatientID or a patient key.
    pub patient: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Rows of any patient but this one (a patient key).
    pub exclude_patient_key: Option<String>,
}

impl EmbeddingFilter {
    /// Does `row` pass?
    pub fn matches(&self, row: &EmbeddingRow) -> bool {
        if let Some(p) = &self.patient {
            if row.patient_id.as_deref() != Some(p.as_str()) && row.patient_key != *p {
                return false;
            }
        }
        if self.exclude_patient_key.as_deref() == Some(row.patient_key.as_str()) {
            return false;
        }
        let date = row.date.as_deref();
        if let Some(s) = &self.since {
            if date.is_none_or(|d| d < s.as_str()) {
                return false;
            }
        }
        if let Some(u) = &self.until {
            if date.is_none_or(|d| d > u.as_str()) {
                return false;
            }
        }
        true
    }
}

/// How many embeddings of a model the store holds and the newest id: a cache built at the same generation is
/// current (rows are only ever added; a re-encode adds a new row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingsGeneration {
    pub count: i64,
    pub max_id: i64,
}

const ROW_SQL: &str = "SELECT e.id, se.series_uid, st.study_uid, p.patient_id, p.issuer, p.patient_key, \
     COALESCE(se.acquisition_date, st.study_date), st.study_date, st.patient_age_years, se.modality, se.description, \
     e.model_id, e.model_version, e.steps, e.preprocess_hash, e.path, e.y_sem \
     FROM embeddings e JOIN registrations r ON r.id = e.registration_ref JOIN volumes v ON v.id = r.volume_ref \
     JOIN series se ON se.id = v.series_ref JOIN studies st ON st.id = se.study_ref \
     JOIN patients p ON p.id = st.patient_ref";

fn row(mut r: Row, with_vectors: bool) -> Result<EmbeddingRow, SqlError> {
    // y_sem: little-endian f32 bytes (a BLOB on SQLite, a bytea on PostgreSQL); NULL reads as no vector.
    let y_sem = match (with_vectors, r.take(16)) {
        (true, Value::Blob(b)) => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        (true, Value::Null) | (false, _) => Vec::new(),
        (true, v) => return Err(SqlError::Type { index: 16, expected: "blob", found: v.kind() }),
    };
    Ok(EmbeddingRow {
        id: r.get(0)?,
        series_uid: r.get(1)?,
        study_uid: r.get(2)?,
        patient_id: r.get(3)?,
        issuer: r.get(4)?,
        patient_key: r.get(5)?,
        date: r.get(6)?,
        study_date: r.get(7)?,
        age: r.get(8)?,
        modality: r.get(9)?,
        description: r.get(10)?,
        model_id: r.get(11)?,
        model_version: r.get(12)?,
        steps: r.get(13)?,
        preprocess_hash: r.get(14)?,
        codes_path: r.get(15)?,
        y_sem,
    })
}

impl Store {
    /// The embeddings of `model_id` that pass `filter`, in id order; `with_vectors` reads y_sem too.
    pub fn embeddings(
        &self,
        model_id: &str,
        filter: &EmbeddingFilter,
        with_vectors: bool,
    ) -> Result<Vec<EmbeddingRow>, StoreError> {
        let conn = self.lock();
        let mut out = Vec::new();
        for r in conn.query(&format!("{ROW_SQL} WHERE e.model_id = ?1 ORDER BY e.id"), &params![model_id])? {
            let r = row(r, with_vectors)?;
            if filter.matches(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The embeddings of one series (any model), newest first.
    pub fn embeddings_of_series(&self, series_uid: &str, with_vectors: bool) -> Result<Vec<EmbeddingRow>, StoreError> {
        let conn = self.lock();
        let rows =
            conn.query(&format!("{ROW_SQL} WHERE se.series_uid = ?1 ORDER BY e.id DESC"), &params![series_uid])?;
        Ok(rows.into_iter().map(|r| row(r, with_vectors)).collect::<Result<Vec<_>, _>>()?)
    }

    /// Count and newest id of `model_id`'s embeddings.
    pub fn embeddings_generation(&self, model_id: &str) -> Result<EmbeddingsGeneration, StoreError> {
        let conn = self.lock();
        let r = conn.query_row(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM embeddings WHERE model_id = ?1",
            &params![model_id],
        )?;
        Ok(EmbeddingsGeneration { count: r.get(0)?, max_id: r.get(1)? })
    }

    /// The model ids that have embeddings, with their counts (for error messages and `export`).
    pub fn embedding_models(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.lock();
        conn.query_map("SELECT model_id, COUNT(*) FROM embeddings GROUP BY model_id ORDER BY model_id", &[], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }
}
