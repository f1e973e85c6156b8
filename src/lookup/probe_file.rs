//! Probe files: safetensors with `weight` [1,E], `bias` [1], `mean` [E], `std` [E] (float32) and metadata
//! `ldae_probe` (JSON [`ProbeMeta`]: kind, target, classes, model id, λ, rows, cross-validation summary).
//!
//! The score of a y_sem row is `weight·((y − mean)/std) + bias` (a logit for classes: P(classes[0]) =
//! sigmoid(score)). The same file is a direction for `ldae manipulate --direction`: it reads `weight` as the
//! direction in the space normalised by `mean`/`std`, so a positive `--scale` moves towards `classes[0]` (or a
//! larger number).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::probe::{Linear, ZScore};

/// Why a probe file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an ldae probe file: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// Which model a probe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Logistic,
    Ridge,
}

/// A probe file's metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeMeta {
    pub kind: ProbeKind,
    pub target: String,
    /// For `logistic`: [positive, negative].
    #[serde(default)]
    pub classes: Vec<String>,
    /// The model id of the embeddings it was fitted on.
    pub model: String,
    pub lambda: f64,
    pub n_rows: usize,
    #[serde(default)]
    pub cv: serde_json::Value,
}

/// A probe: metadata, z-score and linear model.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub meta: ProbeMeta,
    pub zscore: ZScore,
    pub linear: Linear,
}

impl Probe {
    /// Scores of `rows` (n × E raw y_sem).
    pub fn score(&self, rows: &[f64]) -> Vec<f64> {
        self.linear.decision(&self.zscore.apply(rows))
    }

    pub fn dim(&self) -> usize {
        self.linear.weight.len()
    }
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Write `probe` to `path` atomically.
pub fn save_probe(path: &Path, probe: &Probe) -> Result<(), ProbeFileError> {
    let fmt = |reason: String| ProbeFileError::Format { path: path.to_path_buf(), reason };
    let e = probe.dim();
    let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &Device::Cpu).map_err(|x| fmt(x.to_string()));
    let tensors = vec![
        ("weight", t(f32s(&probe.linear.weight), &[1, e])?),
        ("bias", t(vec![probe.linear.bias as f32], &[1])?),
        ("mean", t(f32s(&probe.zscore.mean), &[e])?),
        ("std", t(f32s(&probe.zscore.std), &[e])?),
    ];
    let mut meta = HashMap::new();
    meta.insert("ldae_probe".to_string(), serde_json::to_string(&probe.meta).map_err(|x| fmt(x.to_string()))?);
    let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|x| fmt(x.to_string()))?;
    crate::nifti::write_atomic(path, &bytes).map_err(|source| ProbeFileError::Io { path: path.to_path_buf(), source })
}

/// Read a probe file written by [`save_probe`].
pub fn load_probe(path: &Path) -> Result<Probe, ProbeFileError> {
    let fmt = |reason: String| ProbeFileError::Format { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|source| ProbeFileError::Io { path: path.to_path_buf(), source })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|x| fmt(x.to_string()))?;
    let info = header.metadata().clone().unwrap_or_default();
    let meta: ProbeMeta =
        serde_json::from_str(info.get("ldae_probe").ok_or_else(|| fmt("no ldae_probe metadata".into()))?)
            .map_err(|x| fmt(format!("ldae_probe: {x}")))?;
    let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|x| fmt(x.to_string()))?;
    let get = |name: &str| -> Result<Vec<f64>, ProbeFileError> {
        let t = map.get(name).ok_or_else(|| fmt(format!("tensor {name:?} missing")))?;
        let v = t
            .to_dtype(candle_core::DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(|x| fmt(format!("{name}: {x}")))?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(fmt(format!("{name} has non-finite values")));
        }
        Ok(v)
    };
    let (weight, bias, mean, std) = (get("weight")?, get("bias")?, get("mean")?, get("std")?);
    let e = weight.len();
    if e == 0 || bias.len() != 1 || mean.len() != e || std.len() != e {
        return Err(fmt(format!(
            "shapes disagree: weight {e}, bias {}, mean {}, std {}",
            bias.len(),
            mean.len(),
            std.len()
        )));
    }
    if std.iter().any(|&s| s <= 0.0) {
        return Err(fmt("std must be > 0".into()));
    }
    if meta.kind == ProbeKind::Logistic && meta.classes.len() != 2 {
        return Err(fmt(format!("a logistic probe names 2 classes, this one {}", meta.classes.len())));
    }
    Ok(Probe { meta, zscore: ZScore { mean, std }, linear: Linear { weight, bias: bias[0] } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_manipulate_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.safetensors");
        let probe = Probe {
            meta: ProbeMeta {
                kind: ProbeKind::Logistic,
                target: "dx".into(),
                classes: vec!["AD".into(), "CN".into()],
                model: "m1".into(),
                lambda: 0.5,
                n_rows: 9,
                cv: serde_json::json!({"roc_auc": 0.9}),
            },
            zscore: ZScore { mean: vec![1.0, 2.0], std: vec![0.5, 4.0] },
            linear: Linear { weight: vec![0.25, -1.0], bias: 0.125 },
        };
        save_probe(&p, &probe).unwrap();
        assert_eq!(load_probe(&p).unwrap(), probe);
        // The names `ldae manipulate --direction` reads.
        let t = crate::model::codes::load_tensors(&p).unwrap();
        assert_eq!(t["weight"].dims(), &[1, 2]);
        assert_eq!(t["mean"].dims(), &[2]);
        assert_eq!(t["std"].dims(), &[2]);
        // score: 0.25·(3−1)/0.5 − 1·(6−2)/4 + 0.125 = 0.125
        assert_eq!(probe.score(&[3.0, 6.0]), vec![0.125]);
        std::fs::write(&p, b"garbage").unwrap();
        assert!(matches!(load_probe(&p), Err(ProbeFileError::Format { .. })));
    }
}
