//! LDAE code files: safetensors with `y_sem`, `x_t`, `latent_mu`, `latent_logvar` (float32, batch 1) and
//! metadata `ldae_affine` (the source volume's voxel→RAS affine as JSON rows), `ldae_steps` (DDIM steps of the
//! inversion) and `ldae_shape` (model-input shape), so that a decode can write a NIfTI on the source grid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::ldae::Codes;
use crate::volume::Affine;

/// Why a code file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodesError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an LDAE code file: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// A code file's content.
#[derive(Debug, Clone)]
pub struct CodesFile {
    pub codes: Codes,
    pub affine: Option<Affine>,
    pub steps: Option<usize>,
}

/// Write `codes` (+ metadata) to `path` atomically.
pub fn save_codes(path: &Path, codes: &Codes, affine: &Affine, steps: usize) -> Result<(), CodesError> {
    let fmt = |reason: String| CodesError::Format { path: path.to_path_buf(), reason };
    let mut tensors = Vec::new();
    for (name, t) in codes.named() {
        let t = t.to_device(&Device::Cpu).and_then(|t| t.contiguous()).map_err(|e| fmt(format!("{name}: {e}")))?;
        tensors.push((name, t));
    }
    let mut meta = HashMap::new();
    meta.insert("ldae_affine".to_string(), serde_json::to_string(&affine.0).map_err(|e| fmt(e.to_string()))?);
    meta.insert("ldae_steps".to_string(), steps.to_string());
    let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|e| fmt(e.to_string()))?;
    crate::nifti::write_atomic(path, &bytes).map_err(|source| CodesError::Io { path: path.to_path_buf(), source })
}

/// Read a code file; every one of [`Codes::NAMES`] must be present.
pub fn load_codes(path: &Path) -> Result<CodesFile, CodesError> {
    let fmt = |reason: String| CodesError::Format { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|source| CodesError::Io { path: path.to_path_buf(), source })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| fmt(e.to_string()))?;
    let mut map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| fmt(e.to_string()))?;
    let mut take = |name: &str| -> Result<Tensor, CodesError> {
        let t = map.remove(name).ok_or_else(|| fmt(format!("tensor {name:?} missing")))?;
        t.to_dtype(candle_core::DType::F32).map_err(|e| fmt(format!("{name}: {e}")))
    };
    let codes = Codes {
        y_sem: take("y_sem")?,
        x_t: take("x_t")?,
        latent_mu: take("latent_mu")?,
        latent_logvar: take("latent_logvar")?,
    };
    let info = meta.metadata().clone().unwrap_or_default();
    let affine = match info.get("ldae_affine") {
        Some(s) => {
            let rows: [[f64; 4]; 4] = serde_json::from_str(s).map_err(|e| fmt(format!("ldae_affine: {e}")))?;
            if rows.iter().flatten().any(|v| !v.is_finite()) {
                return Err(fmt("ldae_affine has non-finite entries".into()));
            }
            Some(Affine(rows))
        }
        None => None,
    };
    let steps = match info.get("ldae_steps") {
        Some(s) => Some(s.parse().map_err(|_| fmt(format!("ldae_steps {s:?} is not a number")))?),
        None => None,
    };
    Ok(CodesFile { codes, affine, steps })
}

/// Read a safetensors file of named vectors (manipulation direction, statistics) to CPU f32 tensors.
pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>, CodesError> {
    let bytes = std::fs::read(path).map_err(|source| CodesError::Io { path: path.to_path_buf(), source })?;
    let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| CodesError::Format { path: path.to_path_buf(), reason: e.to_string() })?;
    map.into_iter()
        .map(|(k, t)| {
            let t = t
                .to_dtype(candle_core::DType::F32)
                .map_err(|e| CodesError::Format { path: path.to_path_buf(), reason: format!("{k}: {e}") })?;
            Ok((k, t))
        })
        .collect()
}
