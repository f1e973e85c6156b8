//! Synthetic timepoints (`synthetic_scans`): recorded by the fill job, read by `ldae timeline`, `ldae synthetic`
//! and the report, retired (never deleted) when a newer acquired scan supersedes them.

use super::sql::{params, Exec, Row, Tx};
use serde::Serialize;

use super::{audit, now, EmbeddingFilter, Store, StoreError};
use crate::longitudinal::dates;
use crate::longitudinal::timeline::{Acquired, Synthetic, SyntheticState};

/// A synthetic timepoint as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyntheticRow {
    pub id: i64,
    pub patient_key: String,
    /// `YYYY-MM-DD`.
    pub target_date: Option<String>,
    pub alpha: Option<f64>,
    /// The embeddings and series it was interpolated from (earlier, later).
    pub from_embedding: Option<i64>,
    pub to_embedding: Option<i64>,
    pub from_series_uid: Option<String>,
    pub to_series_uid: Option<String>,
    pub state: SyntheticState,
    pub state_note: Option<String>,
    pub model_id: Option<String>,
    pub model_version: Option<String>,
    pub steps: Option<i64>,
    pub seed: Option<i64>,
    /// The synthetic volume (NIfTI).
    pub path: String,
    pub dicom_study_uid: Option<String>,
    pub dicom_series_uid: Option<String>,
    pub sop_class: Option<String>,
    pub dicom_dir: Option<String>,
    pub content_key: Option<String>,
    pub created_at: f64,
}

/// A synthetic timepoint to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSynthetic {
    pub patient_key: String,
    pub content_key: String,
    pub target_date: String,
    pub alpha: f64,
    pub from_embedding: i64,
    pub to_embedding: i64,
    pub model_id: String,
    pub model_version: String,
    pub steps: i64,
    pub seed: i64,
    pub path: String,
    pub state: SyntheticState,
    /// The DICOM series written for it, if any.
    pub dicom: Option<SyntheticDicom>,
}

/// Where a synthetic timepoint's DICOM went.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticDicom {
    pub study_uid: String,
    pub series_uid: String,
    /// The SOP Class UID.
    pub sop_class: String,
    /// The folder holding its files (the outbox entry).
    pub dir: String,
}

const COLS: &str = "s.id, p.patient_key, s.target_date, s.alpha, s.from_embedding, s.to_embedding, sa.series_uid, \
     sb.series_uid, s.state, s.state_note, s.model_id, s.model_version, s.steps, s.seed, s.path, s.dicom_study_uid, \
     s.dicom_series_uid, s.sop_class, s.dicom_dir, s.content_key, s.created_at \
     FROM synthetic_scans s JOIN patients p ON p.id = s.patient_ref \
     LEFT JOIN embeddings ea ON ea.id = s.from_embedding LEFT JOIN registrations ra ON ra.id = ea.registration_ref \
     LEFT JOIN volumes va ON va.id = ra.volume_ref LEFT JOIN series sa ON sa.id = va.series_ref \
     LEFT JOIN embeddings eb ON eb.id = s.to_embedding LEFT JOIN registrations rb ON rb.id = eb.registration_ref \
     LEFT JOIN volumes vb ON vb.id = rb.volume_ref LEFT JOIN series sb ON sb.id = vb.series_ref";

fn row(r: &Row) -> Result<SyntheticRow, StoreError> {
    Ok(SyntheticRow {
        id: r.get(0)?,
        patient_key: r.get(1)?,
        target_date: r.get(2)?,
        alpha: r.get(3)?,
        from_embedding: r.get(4)?,
        to_embedding: r.get(5)?,
        from_series_uid: r.get(6)?,
        to_series_uid: r.get(7)?,
        state: {
            let s: String = r.get(8)?;
            SyntheticState::parse(&s).ok_or_else(|| {
                StoreError::Conflict(format!(
                    "synthetic scan {}: unknown state {s:?} in the store",
                    r.get::<i64>(0).unwrap_or(-1)
                ))
            })?
        },
        state_note: r.get(9)?,
        model_id: r.get(10)?,
        model_version: r.get(11)?,
        steps: r.get(12)?,
        seed: r.get(13)?,
        path: r.get(14)?,
        dicom_study_uid: r.get(15)?,
        dicom_series_uid: r.get(16)?,
        sop_class: r.get(17)?,
        dicom_dir: r.get(18)?,
        content_key: r.get(19)?,
        created_at: r.get(20)?,
    })
}

impl Store {
    /// A patient's synthetic timepoints (all states), in target-date order.
    pub fn synthetic_of_patient(&self, patient_key: &str) -> Result<Vec<SyntheticRow>, StoreError> {
        let conn = self.lock();
        conn.query_map(
            &format!("SELECT {COLS} WHERE p.patient_key = ?1 ORDER BY s.target_date NULLS FIRST, s.id"),
            &params![patient_key],
            row,
        )
    }

    /// Every synthetic timepoint, newest first (for `ldae synthetic list`).
    pub fn synthetic_all(&self, limit: usize) -> Result<Vec<SyntheticRow>, StoreError> {
        let conn = self.lock();
        conn.query_map(&format!("SELECT {COLS} ORDER BY s.id DESC LIMIT ?1"), &params![limit as i64], row)
    }

    /// One synthetic timepoint by id.
    pub fn synthetic(&self, id: i64) -> Result<Option<SyntheticRow>, StoreError> {
        let conn = self.lock();
        conn.query_opt(&format!("SELECT {COLS} WHERE s.id = ?1"), &params![id])?.as_ref().map(row).transpose()
    }

    /// The patient keys a PatientID (or a patient key) names, sorted.
    pub fn patient_keys(&self, id_or_key: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        Ok(conn.query_map(
            "SELECT patient_key FROM patients WHERE patient_key = ?1 OR patient_id = ?1 ORDER BY patient_key",
            &params![id_or_key],
            |r| r.get::<String>(0),
        )?)
    }

    /// Record a synthetic timepoint unless one with its content key exists. Returns its id and whether it was
    /// inserted now.
    pub fn insert_synthetic(&self, s: &NewSynthetic) -> Result<(i64, bool), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let r = insert_synthetic(&tx, s)?;
        tx.commit()?;
        Ok(r)
    }

    /// Move a synthetic timepoint to `state`, with a note (e.g. why it was superseded).
    pub fn set_synthetic_state(&self, id: i64, state: SyntheticState, note: Option<&str>) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        set_state(&tx, id, state, note)?;
        tx.commit()?;
        Ok(())
    }

    /// The inputs of a patient's timeline for `model`: its encoded scans and its synthetic timepoints.
    pub fn timeline_inputs(
        &self,
        patient_key: &str,
        model: &str,
    ) -> Result<(Vec<Acquired>, Vec<Synthetic>), StoreError> {
        let filter = EmbeddingFilter { patient: Some(patient_key.to_string()), ..EmbeddingFilter::default() };
        let acquired = self
            .embeddings(model, &filter, false)?
            .into_iter()
            .map(|r| Acquired {
                embedding_id: r.id,
                date: r.date.as_deref().and_then(dates::parse),
                series_uid: r.series_uid,
                age: r.age,
                description: r.description,
            })
            .collect();
        let synthetic = self
            .synthetic_of_patient(patient_key)?
            .into_iter()
            .filter(|s| s.model_id.as_deref().is_none_or(|m| m == model))
            .filter_map(|s| {
                Some(Synthetic {
                    id: s.id,
                    target: s.target_date.as_deref().and_then(dates::parse)?,
                    alpha: s.alpha.unwrap_or(f64::NAN),
                    sources: (s.from_series_uid.unwrap_or_default(), s.to_series_uid.unwrap_or_default()),
                    state: s.state,
                    dicom_series_uid: s.dicom_series_uid,
                })
            })
            .collect();
        Ok((acquired, synthetic))
    }

    /// An encoded scan and the files the fill job needs from it.
    pub fn encoded_scan(&self, embedding_id: i64) -> Result<EncodedScan, StoreError> {
        let conn = self.lock();
        let r = conn
            .query_opt(
                "SELECT e.id, p.patient_key, se.series_uid, COALESCE(se.acquisition_date, st.study_date), e.model_id, \
             e.model_version, e.path, v.path, r.transform_path, r.model_input_path \
             FROM embeddings e JOIN registrations r ON r.id = e.registration_ref JOIN volumes v ON v.id = r.volume_ref \
             JOIN series se ON se.id = v.series_ref JOIN studies st ON st.id = se.study_ref \
             JOIN patients p ON p.id = st.patient_ref WHERE e.id = ?1",
                &params![embedding_id],
            )?
            .ok_or_else(|| StoreError::NotFound(format!("embedding {embedding_id}")))?;
        Ok(EncodedScan {
            embedding_id: r.get(0)?,
            patient_key: r.get(1)?,
            series_uid: r.get(2)?,
            date: r.get(3)?,
            model_id: r.get(4)?,
            model_version: r.get(5)?,
            codes_path: r.get(6)?,
            volume_path: r.get(7)?,
            transform_path: r.get(8)?,
            model_input_path: r.get(9)?,
        })
    }

    /// The source snapshot (JSON) taken at a series' conversion.
    pub fn series_snapshot(&self, series_uid: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_value::<Option<String>>("SELECT snapshot FROM series WHERE series_uid = ?1", &params![series_uid])?
            .flatten())
    }

    /// A synthetic timepoint by its content key.
    pub fn synthetic_by_key(&self, content_key: &str) -> Result<Option<SyntheticRow>, StoreError> {
        let conn = self.lock();
        conn.query_opt(&format!("SELECT {COLS} WHERE s.content_key = ?1"), &params![content_key])?
            .as_ref()
            .map(row)
            .transpose()
    }

    /// The patient key of a series.
    pub fn patient_key_of_series(&self, series_ref: i64) -> Result<String, StoreError> {
        let conn = self.lock();
        conn.query_value(
            "SELECT p.patient_key FROM series se JOIN studies st ON st.id = se.study_ref \
             JOIN patients p ON p.id = st.patient_ref WHERE se.id = ?1",
            &params![series_ref],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("series {series_ref}")))
    }
}

/// An encoded scan with its files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncodedScan {
    pub embedding_id: i64,
    pub patient_key: String,
    pub series_uid: String,
    /// `YYYYMMDD`.
    pub date: Option<String>,
    pub model_id: String,
    pub model_version: String,
    pub codes_path: String,
    /// The converted volume (native grid).
    pub volume_path: String,
    /// Template → native transform.
    pub transform_path: String,
    pub model_input_path: String,
}

/// Insert unless the content key exists; (id, inserted).
pub(super) fn insert_synthetic(tx: &Tx<'_>, s: &NewSynthetic) -> Result<(i64, bool), StoreError> {
    if let Some(id) =
        tx.query_value("SELECT id FROM synthetic_scans WHERE content_key = ?1", &params![s.content_key])?
    {
        return Ok((id, false));
    }
    let patient_ref: i64 = tx
        .query_value("SELECT id FROM patients WHERE patient_key = ?1", &params![s.patient_key])?
        .ok_or_else(|| StoreError::NotFound(format!("patient {}", s.patient_key)))?;
    let t = now();
    let id: i64 = tx
        .query_row(
            "INSERT INTO synthetic_scans (patient_ref, from_embedding, to_embedding, alpha, target_date, path, \
         created_at, content_key, state, model_id, model_version, steps, seed, updated_at, dicom_study_uid, \
         dicom_series_uid, sop_class, dicom_dir) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?7, ?14, ?15, ?16, ?17) RETURNING id",
            &params![
                patient_ref,
                s.from_embedding,
                s.to_embedding,
                s.alpha,
                s.target_date,
                s.path,
                t,
                s.content_key,
                s.state.as_str(),
                s.model_id,
                s.model_version,
                s.steps,
                s.seed,
                s.dicom.as_ref().map(|d| d.study_uid.as_str()),
                s.dicom.as_ref().map(|d| d.series_uid.as_str()),
                s.dicom.as_ref().map(|d| d.sop_class.as_str()),
                s.dicom.as_ref().map(|d| d.dir.as_str())
            ],
        )?
        .get(0)?;
    audit(
        tx,
        "synthetic_recorded",
        &s.patient_key,
        &serde_json::json!({"synthetic": id, "target_date": s.target_date, "alpha": s.alpha}),
    )?;
    Ok((id, true))
}

/// Set a synthetic timepoint's state (with its audit event) inside `tx`.
pub(super) fn set_state(tx: &Tx<'_>, id: i64, state: SyntheticState, note: Option<&str>) -> Result<(), StoreError> {
    let n = tx.execute(
        "UPDATE synthetic_scans SET state = ?2, state_note = ?3, updated_at = ?4 WHERE id = ?1",
        &params![id, state.as_str(), note, now()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("synthetic scan {id}")));
    }
    audit(tx, "synthetic_state", &id.to_string(), &serde_json::json!({"state": state.as_str(), "note": note}))
}
