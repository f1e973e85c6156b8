//! Resumable checkpoints and the output model directory.
//!
//! A checkpoint is the folder `<out>/checkpoint/`: `params.safetensors` (every tensor of the trained weights
//! files, keys `<file stem>/<key>`), `ema.safetensors` (the EMA shadows, same keys), `adam.safetensors` (the
//! moments, `m.<file stem>/<key>`, `v.…`) and `state.json` ([`CheckpointState`]). Files are written under temporary
//! names and renamed, `state.json` last, so a crash leaves the previous checkpoint readable.
//!
//! The model directory `<out>` gets `config.json` and the three published weights files (the trained ones as
//! their EMA copies), so `ldae weights check` and every model command accept it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::params::save_tensors;
use super::{Stage, TrainError};

/// The folder of the resumable state inside an output directory.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// What `state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    pub stage: Stage,
    /// Optimiser steps done.
    pub step: u64,
    /// Best validation SSIM so far and validations since it improved (early stopping).
    pub best_ssim: Option<f64>,
    pub bad_validations: u32,
    /// The training configuration the run started with (a resume must use the same stage and sizes).
    pub config: serde_json::Value,
    pub model_config: serde_json::Value,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::File { path: path.into(), reason: e.to_string() }
}

/// Write a checkpoint: `params`, `ema`, `adam` as named tensors, then the state.
pub fn save(
    out: &Path,
    state: &CheckpointState,
    params: &HashMap<String, Tensor>,
    ema: &HashMap<String, Tensor>,
    adam: &HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    let dir = checkpoint_dir(out);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    save_tensors(params, &dir.join("params.safetensors"))?;
    save_tensors(ema, &dir.join("ema.safetensors"))?;
    save_tensors(adam, &dir.join("adam.safetensors"))?;
    let path = dir.join("state.json");
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| TrainError::File { path: path.clone(), reason: e.to_string() })?;
    crate::nifti::write_atomic(&path, text.as_bytes()).map_err(io(&path))
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Loaded {
    pub state: CheckpointState,
    pub params: BTreeMap<String, Tensor>,
    pub ema: BTreeMap<String, Tensor>,
    pub adam: BTreeMap<String, Tensor>,
}

/// Read the checkpoint in `out` (tensors on `dev`).
pub fn load(out: &Path, dev: &Device) -> Result<Loaded, TrainError> {
    let dir = checkpoint_dir(out);
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::File {
        path: path.clone(),
        reason: format!("no resumable checkpoint ({e}); run without --resume to start"),
    })?;
    let state: CheckpointState = serde_json::from_str(&text)
        .map_err(|e| TrainError::File { path: path.clone(), reason: format!("not a checkpoint state: {e}") })?;
    let read = |name: &str| -> Result<BTreeMap<String, Tensor>, TrainError> {
        let p = dir.join(name);
        let m = candle_core::safetensors::load(&p, dev)
            .map_err(|e| TrainError::File { path: p.clone(), reason: e.to_string() })?;
        Ok(m.into_iter().collect())
    };
    Ok(Loaded {
        state,
        params: read("params.safetensors")?,
        ema: read("ema.safetensors")?,
        adam: read("adam.safetensors")?,
    })
}
