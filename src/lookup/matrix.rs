//! The matrix cache behind `ldae similar`: one model version's embeddings as unit-normalised f32 rows in one
//! file beside the database, memory-mapped, so a query reads no vector from SQLite once the cache exists.
//!
//! File layout (little-endian): the magic `LDAEMAT1`; a `u64` header length; a JSON header ([`Header`]: the
//! [`CacheKey`] it was built at, `dim`, and the rows' identifiers without vectors); zero padding to a multiple of
//! 64 bytes; then `n × dim` f32. The key holds the store's generation (count and newest id of the model's
//! embeddings): rows are only ever added, so a cache whose key differs from the store's is stale and rebuilt. A
//! file that does not parse (truncated, foreign, lying header) is reported as such and the caller rebuilds it.
//! Files are written to a temporary name and renamed, never modified in place.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::similar::{normalise, top_k, Hit};
use crate::store::EmbeddingRow;

const MAGIC: &[u8; 8] = b"LDAEMAT1";
const ALIGN: usize = 64;

/// What a cache was built from: a model id and version at a store generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    pub model_id: String,
    pub model_version: String,
    /// `embeddings_generation` of the model id: number of rows and newest row id.
    pub count: i64,
    pub max_id: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: CacheKey,
    dim: usize,
    rows: Vec<EmbeddingRow>,
}

/// Why a matrix could not be built or a cache file read.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an ldae matrix cache: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("embedding {series_uid} (row {id}) has {got} values, the others {expected}")]
    Dim { series_uid: String, id: i64, got: usize, expected: usize },
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matrix").field("key", &self.key).field("dim", &self.dim).field("n", &self.rows.len()).finish()
    }
}

enum Data {
    Owned(Vec<f32>),
    Mapped { map: memmap2::Mmap, offset: usize, len: usize },
}

/// Unit-normalised embeddings (row-major, `dim` columns) and the rows they belong to, in row-id order.
pub struct Matrix {
    pub key: CacheKey,
    pub dim: usize,
    /// Identifiers of each row (`y_sem` empty).
    pub rows: Vec<EmbeddingRow>,
    data: Data,
}

impl Matrix {
    /// Build from rows read with their vectors (their `y_sem` are moved out, normalised).
    pub fn from_rows(key: CacheKey, mut rows: Vec<EmbeddingRow>) -> Result<Matrix, MatrixError> {
        let dim = rows.first().map_or(0, |r| r.y_sem.len());
        let mut data = Vec::with_capacity(rows.len().saturating_mul(dim));
        for r in rows.iter_mut() {
            if r.y_sem.len() != dim {
                return Err(MatrixError::Dim {
                    series_uid: r.series_uid.clone(),
                    id: r.id,
                    got: r.y_sem.len(),
                    expected: dim,
                });
            }
            let mut v = std::mem::take(&mut r.y_sem);
            normalise(&mut v);
            data.extend_from_slice(&v);
        }
        Ok(Matrix { key, dim, rows, data: Data::Owned(data) })
    }

    /// The normalised rows, `rows.len() × dim`.
    pub fn data(&self) -> &[f32] {
        match &self.data {
            Data::Owned(v) => v,
            Data::Mapped { map, offset, len } => {
                // SAFETY: `open` checked that the mapped range is 4-byte aligned, in bounds and holds `len` f32;
                // every bit pattern is a valid f32. The file is never written in place (see the module doc).
                let (pre, mid, _) = unsafe { map[*offset..*offset + *len * 4].align_to::<f32>() };
                debug_assert!(pre.is_empty());
                mid
            }
        }
    }

    /// The `k` best rows for `query` (normalised here) among those `keep` accepts, best first.
    pub fn search(&self, query: &[f32], k: usize, keep: impl Fn(&EmbeddingRow) -> bool + Sync) -> Vec<Hit> {
        let mut q = query.to_vec();
        normalise(&mut q);
        top_k(self.data(), self.dim, &q, k, |i| self.rows.get(i).is_some_and(&keep))
    }

    /// Write the cache file (to a temporary name, then renamed over `path`).
    pub fn write(&self, path: &Path) -> Result<(), MatrixError> {
        let io = |source| MatrixError::Io { path: path.to_path_buf(), source };
        let header = serde_json::to_vec(&Header { key: self.key.clone(), dim: self.dim, rows: self.rows.clone() })
            .map_err(|e| io(std::io::Error::other(e)))?;
        let mut bytes = Vec::with_capacity(header.len() + ALIGN + self.data().len() * 4 + 16);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.resize(bytes.len().next_multiple_of(ALIGN), 0);
        for v in self.data() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Open the cache file at `path`: `Ok(None)` when there is none or it was built at another key (stale).
    pub fn open(path: &Path, key: &CacheKey) -> Result<Option<Matrix>, MatrixError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MatrixError::Io { path: path.to_path_buf(), source }),
        };
        // SAFETY: the cache is ldae's own file, replaced by rename and never written in place, so the mapping
        // does not change under us; its contents are validated below before any use.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|source| MatrixError::Io { path: path.into(), source })?;
        let bad = |reason: String| MatrixError::Format { path: path.to_path_buf(), reason };
        if map.len() < 16 || &map[..8] != MAGIC {
            return Err(bad("no LDAEMAT1 magic".into()));
        }
        let hlen = u64::from_le_bytes(map[8..16].try_into().map_err(|_| bad("short header".into()))?);
        let hlen = usize::try_from(hlen)
            .ok()
            .filter(|h| *h <= map.len() - 16)
            .ok_or_else(|| bad("header length beyond the file".into()))?;
        let header: Header = serde_json::from_slice(&map[16..16 + hlen]).map_err(|e| bad(format!("header: {e}")))?;
        if header.key != *key {
            return Ok(None);
        }
        let offset = (16 + hlen).next_multiple_of(ALIGN);
        let len = header.rows.len().checked_mul(header.dim).ok_or_else(|| bad("rows × dim overflows".into()))?;
        if Some(map.len()) != len.checked_mul(4).and_then(|b| b.checked_add(offset)) {
            return Err(bad(format!(
                "{} bytes, the header says {} rows × {}",
                map.len(),
                header.rows.len(),
                header.dim
            )));
        }
        let aligned = cfg!(target_endian = "little") && map[offset..].as_ptr().align_offset(4) == 0;
        let data = if aligned {
            Data::Mapped { map, offset, len }
        } else {
            Data::Owned(map[offset..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        Ok(Some(Matrix { key: header.key, dim: header.dim, rows: header.rows, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, v: Vec<f32>) -> EmbeddingRow {
        EmbeddingRow {
            id,
            series_uid: format!("1.2.{id}"),
            study_uid: "1.2".into(),
            patient_id: Some(format!("P{}", id % 2)),
            issuer: None,
            patient_key: format!("id:\\P{}", id % 2),
            date: Some(format!("2020010{id}")),
            study_date: None,
            age: Some(70.0),
            modality: Some("MR".into()),
            description: None,
            model_id: "m".into(),
            model_version: "v".into(),
            steps: Some(10),
            preprocess_hash: "h".into(),
            codes_path: "c".into(),
            y_sem: v,
        }
    }

    fn key(count: i64) -> CacheKey {
        CacheKey { model_id: "m".into(), model_version: "v".into(), count, max_id: count }
    }

    #[test]
    fn cache_round_trip_staleness_and_bad_files() {
        let rows: Vec<EmbeddingRow> = (1..=5).map(|i| row(i, vec![i as f32, 1.0, -(i as f32), 0.5])).collect();
        let m = Matrix::from_rows(key(5), rows).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("emb.f32");
        assert!(Matrix::open(&p, &key(5)).unwrap().is_none());
        m.write(&p).unwrap();
        let back = Matrix::open(&p, &key(5)).unwrap().expect("current");
        assert_eq!(back.data(), m.data());
        assert_eq!(back.rows, m.rows);
        let q = [3.0, 1.0, -3.0, 0.5];
        assert_eq!(back.search(&q, 2, |_| true)[0].index, 2);
        assert_eq!(back.search(&q, 5, |r| r.patient_id.as_deref() == Some("P0")).len(), 2);
        assert!(Matrix::open(&p, &key(6)).unwrap().is_none(), "another generation is stale");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        assert!(Matrix::open(&p, &key(5)).unwrap_err().to_string().contains("bytes"));
        std::fs::write(&p, b"garbage garbage garbage").unwrap();
        assert!(Matrix::open(&p, &key(5)).unwrap_err().to_string().contains("magic"));
        let mut lying = bytes.clone();
        lying[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&p, &lying).unwrap();
        assert!(Matrix::open(&p, &key(5)).unwrap_err().to_string().contains("header length"));
        let mixed = vec![row(1, vec![1.0, 2.0]), row(2, vec![1.0])];
        assert!(matches!(Matrix::from_rows(key(2), mixed), Err(MatrixError::Dim { got: 1, .. })));
    }
}
