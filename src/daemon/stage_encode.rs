//! The encode stage adapter, run on the one model thread: a model input → LDAE codes
//! (`y_sem`, `x_T`, latent) saved as safetensors beside the input, and an embeddings row keyed by model id +
//! version + preprocessing hash. The model is loaded once per model directory and kept for the thread's life.
//! Without an installed model (no `config.json` in `model.dir`) the series is stored without codes, logged.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::config::{Config, DeviceKind};
use crate::model::ldae::{no_progress, Ldae};
use crate::store::{Completion, Job, NewEmbedding, Payload, SeriesUpdate, Store};

use super::hooks::hook_jobs;
use super::stages::StageError;

/// A loaded model: its directory, id (folder name), version (the first 16 hex digits of its weights digest,
/// [`super::digest::model_digest`]) and device. A different folder, device or digest loads the model again.
pub(super) struct Loaded {
    dir: PathBuf,
    device: DeviceKind,
    pub(super) digest: String,
    pub(super) id: String,
    pub(super) version: String,
    pub(super) model: Ldae,
}

thread_local! {
    static MODEL: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

fn load(cfg: &Config, digest: String) -> Result<Loaded, StageError> {
    let device = match cfg.model.device {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda => {
            Device::new_cuda(0).map_err(|e| StageError::Permanent(format!("model.device = cuda: {e}")))?
        }
    };
    let model = Ldae::load(&cfg.model.dir, &device, DType::F32)
        .map_err(|e| StageError::Permanent(format!("loading model {}: {e}", cfg.model.dir.display())))?;
    let (id, version) = super::digest::model_identity(&cfg.model.dir, &digest);
    tracing::info!(model = %cfg.model.dir.display(), "model loaded on the model thread");
    Ok(Loaded { dir: cfg.model.dir.clone(), device: cfg.model.device, id, version, digest, model })
}

/// Run `f` with the model thread's model, (re)loaded when the configured directory, device or weights changed.
pub(super) fn with_model<T>(cfg: &Config, f: impl FnOnce(&Loaded) -> Result<T, StageError>) -> Result<T, StageError> {
    MODEL.with(|slot| {
        let mut slot = slot.borrow_mut();
        let digest = super::digest::model_digest(&cfg.model.dir).map_err(StageError::Retry)?;
        if !slot.as_ref().is_some_and(|m| m.dir == cfg.model.dir && m.device == cfg.model.device && m.digest == digest)
        {
            *slot = Some(load(cfg, digest)?);
        }
        let Some(m) = slot.as_ref() else { return Err(StageError::Retry("model not loaded".into())) };
        f(m)
    })
}

/// Run it (on the model thread only).
pub fn run(store: &Store, cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    let Payload::Encode(p) = &job.payload else { return Err(super::stages::wrong_payload(job)) };
    let key = p.content_key.clone();
    let series_ref = job.series_ref.ok_or_else(|| StageError::Permanent(format!("job {}: no series", job.id)))?;
    if !cfg.model.dir.join("config.json").is_file() {
        let why = format!("no model installed at {}", cfg.model.dir.display());
        tracing::info!(job = job.id, "{why}: series stored without codes");
        return Ok(Completion {
            series: Some(SeriesUpdate {
                series_ref,
                content_key: key,
                state: "stored_without_codes".into(),
                note: Some(format!("stored without codes: {why}")),
                finished: true,
            }),
            ..Completion::default()
        });
    }
    let input_path = PathBuf::from(&p.model_input);
    let volume_path = p.volume.clone();
    let ph = p.preprocess_hash.clone();
    let input =
        crate::nifti::read_nifti_limited(&input_path, &cfg.limits).map_err(|e| StageError::Retry(e.to_string()))?;
    with_model(cfg, |m| {
        let err = |e: candle_core::Error| StageError::Permanent(format!("{}: {e}", input_path.display()));
        let codes = m
            .model
            .encode_volume(&input, cfg.model.steps, &no_progress)
            .map_err(|e| StageError::Permanent(format!("encoding {}: {e}", input_path.display())))?;
        let dir = input_path.parent().unwrap_or(Path::new("."));
        let codes_path = dir.join(format!("codes-{}-{}.safetensors", super::files::safe_component(&m.id), m.version));
        crate::model::codes::save_codes(&codes_path, &codes, &input.affine, cfg.model.steps)
            .map_err(|e| StageError::Retry(e.to_string()))?;
        let y_sem = codes.y_sem.flatten_all().and_then(|t| t.to_dtype(DType::F32)).and_then(|t| t.to_vec1::<f32>());
        let y_sem = y_sem.map_err(err)?;
        let series_uid = job.series_uid.clone().unwrap_or_default();
        Ok(Completion {
            embedding: Some(NewEmbedding {
                volume_path,
                preprocess_hash: ph,
                model_id: m.id.clone(),
                model_version: m.version.clone(),
                path: codes_path.to_string_lossy().into_owned(),
                steps: i64::try_from(cfg.model.steps).ok(),
                y_sem,
            }),
            series: Some(SeriesUpdate {
                series_ref,
                content_key: key.clone(),
                state: "encoded".into(),
                note: None,
                finished: true,
            }),
            next: {
                let mut next = hook_jobs(
                    &cfg.hooks,
                    "series_encoded",
                    &format!("{key}:{}", m.version),
                    Some(series_ref),
                    serde_json::json!({ "series_uid": series_uid, "codes": codes_path, "model_id": m.id, "model_version": m.version }),
                );
                let patient = store.patient_key_of_series(series_ref)?;
                next.push(super::stage_fill::plan_job(&patient, &m.id, &format!("{key}:{}", m.version)));
                next
            },
            ..Completion::default()
        })
    })
}
