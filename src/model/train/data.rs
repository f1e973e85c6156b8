//! Training data: model-input NIfTIs (as `ldae preprocess` writes them, shape = the model config's
//! `data.resize_to`, values in [0, 1]) from a folder or from the store's registered inputs, held in memory as
//! `[1, 1, X, Y, Z]` f32 tensors. A volume of another shape is handed to an optional preprocessing function
//! (the daemon's pipeline, wired by the CLI); without one it is an error that says what is accepted.
//!
//! Volumes are named by their index in the sorted list in logs (never by file name, which may carry a patient's
//! name).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::TrainError;
use crate::model::tensor_volume::volume_tensor;
use crate::volume::Volume;

/// Turns a raw volume into a model input (`Err` with the reason).
pub type Preprocess<'a> = &'a dyn Fn(&Volume) -> Result<Volume, String>;

/// The `.nii`/`.nii.gz` files directly in `dir`, sorted by name.
pub fn nifti_files(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| TrainError::Data { path: dir.into(), reason: format!("reading the folder: {e}") })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
            p.is_file() && (n.ends_with(".nii") || n.ends_with(".nii.gz"))
        })
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(TrainError::Data {
            path: dir.into(),
            reason: "no .nii or .nii.gz files (give model inputs as `ldae preprocess` writes them)".into(),
        });
    }
    Ok(v)
}

/// Read every path as a model input of `shape`; other shapes go through `prep` when given.
pub fn load_model_inputs(
    paths: &[PathBuf],
    shape: [usize; 3],
    prep: Option<Preprocess>,
) -> Result<Vec<Tensor>, TrainError> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let vol =
            crate::nifti::read_nifti(p).map_err(|e| TrainError::Data { path: p.clone(), reason: e.to_string() })?;
        let vol = if vol.shape() == shape {
            vol
        } else if let Some(f) = prep {
            let v = f(&vol).map_err(|reason| TrainError::Data { path: p.clone(), reason })?;
            if v.shape() != shape {
                return Err(TrainError::Data {
                    path: p.clone(),
                    reason: format!("preprocessing gave shape {:?}, the model takes {shape:?}", v.shape()),
                });
            }
            v
        } else {
            return Err(TrainError::Data {
                path: p.clone(),
                reason: format!(
                    "shape {:?} is not the model input shape {shape:?}: give model inputs (`ldae preprocess` output) \
                     or pass --preprocess to run the daemon's pipeline on raw volumes",
                    vol.shape()
                ),
            });
        };
        check_values(p, &vol)?;
        out.push(volume_tensor(&vol).map_err(|e| TrainError::Data { path: p.clone(), reason: e.to_string() })?);
    }
    Ok(out)
}

fn check_values(p: &Path, v: &Volume) -> Result<(), TrainError> {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in v.data.iter() {
        if !x.is_finite() {
            return Err(TrainError::Data { path: p.into(), reason: "contains NaN or infinite values".into() });
        }
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if lo < -1e-4 || hi > 1.0 + 1e-4 {
        return Err(TrainError::Data {
            path: p.into(),
            reason: format!("values span [{lo}, {hi}]; a model input is scaled to [0, 1] (`ldae preprocess`)"),
        });
    }
    Ok(())
}

/// The training and validation split: the last `val_count` volumes are held out; with `val_count = 0` the first
/// training volume doubles as the validation volume.
pub fn split(mut all: Vec<Tensor>, val_count: usize) -> Result<(Vec<Tensor>, Vec<Tensor>), TrainError> {
    if val_count >= all.len() {
        return Err(TrainError::Unsupported(format!(
            "run.val_count = {val_count} leaves no training volume of {}",
            all.len()
        )));
    }
    let val = if val_count == 0 { vec![all[0].clone()] } else { all.split_off(all.len() - val_count) };
    Ok((all, val))
}

/// Stack volumes `[1,1,X,Y,Z]` into a batch on `dev`.
pub fn batch(items: &[&Tensor], dev: &Device) -> Result<Tensor, TrainError> {
    Tensor::cat(items, 0).and_then(|t| t.to_device(dev)).map_err(TrainError::candle("batching"))
}
