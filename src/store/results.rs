//! Pipeline results: volumes (convert), registrations and model inputs (preprocess), embeddings (encode).
//! Rows are written inside a job's completion (see `jobs.rs`), keyed by content so a re-run adds nothing.

use super::sql::{params, Exec, Tx};
use serde::Serialize;

use super::{now, Store, StoreError};

/// A converted volume on disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewVolume {
    pub series_ref: i64,
    /// The volume key: the series content key + converter version + `[convert]` config.
    pub content_key: String,
    /// The series content key it was made from (what `ldae status` counts a series' current volumes by).
    pub series_key: String,
    pub file_stem: String,
    pub path: String,
    pub sidecar: Option<String>,
    pub sha256: String,
}

/// A registration + model input of a volume (found by its path: two series can hold identical volumes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewRegistration {
    pub volume_path: String,
    pub preprocess_hash: String,
    pub transform_path: String,
    pub model_input_path: String,
    /// The registration's final metric (Mattes mutual information) and the fraction of the template brain mask
    /// inside the scan's field of view: what the QC gate judged.
    pub metric: f64,
    pub brain_coverage: f64,
}

/// The codes of a model input (found by volume path + preprocess hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEmbedding {
    pub volume_path: String,
    pub preprocess_hash: String,
    pub model_id: String,
    pub model_version: String,
    pub path: String,
    /// Encoding steps the codes were made with.
    pub steps: Option<i64>,
    pub y_sem: Vec<f32>,
}

/// A stored volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeRow {
    pub id: i64,
    pub series_uid: String,
    pub file_stem: String,
    pub path: String,
    pub sha256: String,
}

pub(super) fn insert_volume(tx: &Tx<'_>, v: &NewVolume) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO volumes (series_ref, content_key, series_key, file_stem, path, sidecar, sha256, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (content_key, file_stem) DO NOTHING",
        &params![v.series_ref, v.content_key, v.series_key, v.file_stem, v.path, v.sidecar, v.sha256, now()],
    )?;
    Ok(())
}

fn volume_id(tx: &Tx<'_>, path: &str) -> Result<i64, StoreError> {
    tx.query_value("SELECT id FROM volumes WHERE path = ?1 ORDER BY id LIMIT 1", &params![path])?
        .ok_or_else(|| StoreError::NotFound(format!("volume {path}: not in the store")))
}

pub(super) fn insert_registration(tx: &Tx<'_>, r: &NewRegistration) -> Result<(), StoreError> {
    let vid = volume_id(tx, &r.volume_path)?;
    tx.execute(
        "INSERT INTO registrations (volume_ref, preprocess_hash, transform_path, model_input_path, metric, \
         brain_coverage, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (volume_ref, preprocess_hash) \
         DO NOTHING",
        &params![vid, r.preprocess_hash, r.transform_path, r.model_input_path, r.metric, r.brain_coverage, now()],
    )?;
    Ok(())
}

pub(super) fn insert_embedding(tx: &Tx<'_>, e: &NewEmbedding) -> Result<(), StoreError> {
    let vid = volume_id(tx, &e.volume_path)?;
    let rid: i64 = tx
        .query_value(
            "SELECT id FROM registrations WHERE volume_ref = ?1 AND preprocess_hash = ?2",
            &params![vid, e.preprocess_hash],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("registration of volume {}: not in the store", e.volume_path)))?;
    let blob: Vec<u8> = e.y_sem.iter().flat_map(|x| x.to_le_bytes()).collect();
    tx.execute(
        "INSERT INTO embeddings (registration_ref, model_id, model_version, preprocess_hash, path, y_sem, steps, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (registration_ref, model_id, model_version) \
         DO NOTHING",
        &params![rid, e.model_id, e.model_version, e.preprocess_hash, e.path, blob, e.steps, now()],
    )?;
    Ok(())
}

impl Store {
    /// Volumes of a series (by UID).
    pub fn volumes_of(&self, series_uid: &str) -> Result<Vec<VolumeRow>, StoreError> {
        let conn = self.lock();
        conn.query_map(
            "SELECT v.id, s.series_uid, v.file_stem, v.path, v.sha256 FROM volumes v JOIN series s ON s.id = v.series_ref \
             WHERE s.series_uid = ?1 ORDER BY v.id",
            &params![series_uid],
            |r| {
                Ok(VolumeRow {
                    id: r.get(0)?,
                    series_uid: r.get(1)?,
                    file_stem: r.get(2)?,
                    path: r.get(3)?,
                    sha256: r.get(4)?,
                })
            },
        )
    }
}
