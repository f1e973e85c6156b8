//! The preprocess stage adapter: a converted volume → registration to the template + the model's exact input
//! ([`crate::preprocess::preprocess_volume`]), written under `outputs/<series>/<key>/reg-<hash>/`.
//!
//! Keyed by content: the volume's SHA-256 and the preprocessing hash (template files, `[preprocess]` config,
//! the model's input grid, ldae version). Without an installed model the paper's input grid is used, so a
//! series is still registered and only the encode step is skipped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::model::config::ModelConfig;
use crate::preprocess::template::Template;
use crate::store::{Completion, EncodeJob, Job, NewJob, NewRegistration, Payload, PreprocessJob, SeriesUpdate, Store};

use super::digest::{file_digest, model_digest};
use super::files::sha256_bytes;
use super::stages::StageError;

/// Why registration cannot run with this config (the series is then stored without codes), if it cannot.
pub fn unavailable(cfg: &Config) -> Option<String> {
    for p in [&cfg.preprocess.template, &cfg.preprocess.template_mask] {
        if !p.is_file() {
            return Some(format!("template file {} not found", p.display()));
        }
    }
    None
}

/// The model config whose input grid the model input is built for (the paper's when no model is installed).
fn model_config(cfg: &Config) -> Result<ModelConfig, StageError> {
    let path = cfg.model.dir.join("config.json");
    if !path.exists() {
        return Ok(ModelConfig::paper());
    }
    ModelConfig::load(&path).map_err(|e| StageError::Permanent(e.to_string()))
}

/// The SHA-256 of the template and of its mask (cached per file version, see [`super::digest`]).
fn template_digests(cfg: &Config) -> Result<(String, String), StageError> {
    let digest = |p: &Path| file_digest(p).map_err(|e| StageError::Retry(format!("{}: {e}", p.display())));
    Ok((digest(&cfg.preprocess.template)?, digest(&cfg.preprocess.template_mask)?))
}

/// The preprocessing hash: everything that changes the model input — the template and mask by content, the
/// `[preprocess]` config, the model's input grid and the ldae version.
pub fn preprocess_hash(cfg: &Config, model: &ModelConfig) -> Result<String, StageError> {
    let (template, mask) = template_digests(cfg)?;
    let key = serde_json::json!({
        "preprocess": steps_key(&cfg.preprocess),
        "template": template,
        "template_mask": mask,
        "pixdim": model.data.pixdim,
        "resize_to": model.data.resize_to,
        "ldae": crate::VERSION,
    });
    Ok(sha256_bytes(key.to_string().as_bytes()))
}

/// The `[preprocess]` part of the key: the template paths, the registration settings, the grid, and the steps in
/// order, each with its own parameters (the parameters of a step that does not run do not change the key).
pub fn steps_key(p: &crate::config::PreprocessConfig) -> serde_json::Value {
    use crate::preprocess::steps::Step;
    let steps: Vec<serde_json::Value> = p
        .steps
        .iter()
        .map(|s| match s {
            Step::N4 => serde_json::json!({ "step": s, "n4": p.n4 }),
            Step::BrainExtract => serde_json::json!({ "step": s, "brain": p.brain }),
            Step::Register => serde_json::json!({ "step": s, "pyramid": p.pyramid, "iterations": p.iterations }),
            Step::Syn => serde_json::json!({ "step": s, "syn": p.syn }),
            Step::TemplateMask | Step::Resize => serde_json::json!({ "step": s }),
        })
        .collect();
    serde_json::json!({
        "template": p.template,
        "template_mask": p.template_mask,
        "grid": p.grid,
        "steps": steps,
    })
}

type Cached = Mutex<Option<((PathBuf, PathBuf, String), Arc<Template>)>>;
static TEMPLATE: Cached = Mutex::new(None);

/// The template, loaded once per (paths, content digests) and shared by the CPU workers.
fn template(cfg: &Config) -> Result<Arc<Template>, StageError> {
    let p = &cfg.preprocess;
    let (t, m) = template_digests(cfg)?;
    let key = (p.template.clone(), p.template_mask.clone(), format!("{t}:{m}"));
    let mut slot = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, t)) = slot.as_ref() {
        if *k == key {
            return Ok(t.clone());
        }
    }
    let t = Arc::new(Template::load(&p.template, &p.template_mask).map_err(|e| StageError::Permanent(e.to_string()))?);
    *slot = Some((key, t.clone()));
    Ok(t)
}

/// What names the model in the encode key: its weights digest, or `none` when no model is installed (the
/// encode stage then stores the series without codes).
fn model_key(cfg: &Config) -> Result<String, StageError> {
    if !cfg.model.dir.join("config.json").is_file() {
        return Ok("none".into());
    }
    model_digest(&cfg.model.dir).map_err(StageError::Retry)
}

/// The preprocess job for one converted volume.
pub fn job_for(series_ref: i64, content_key: &str, volume_path: &str, volume_sha: &str) -> NewJob {
    NewJob {
        // The series content key too: two series may hold byte-identical volumes and each gets its own rows.
        key: format!("preprocess:{content_key}:{volume_sha}"),
        series_ref: Some(series_ref),
        payload: Payload::Preprocess(PreprocessJob {
            content_key: content_key.into(),
            volume: volume_path.into(),
            volume_sha256: volume_sha.into(),
        }),
        priority: 8,
    }
}

/// Run it.
pub fn run(_store: &Store, cfg: &Config, job: &Job) -> Result<Completion, StageError> {
    let Payload::Preprocess(p) = &job.payload else { return Err(super::stages::wrong_payload(job)) };
    let key = p.content_key.clone();
    let volume_path = PathBuf::from(&p.volume);
    let volume_sha = p.volume_sha256.clone();
    let series_ref = job.series_ref.ok_or_else(|| StageError::Permanent(format!("job {}: no series", job.id)))?;
    let model = model_config(cfg)?;
    let ph = preprocess_hash(cfg, &model)?;
    let native =
        crate::nifti::read_nifti_limited(&volume_path, &cfg.limits).map_err(|e| StageError::Retry(e.to_string()))?;
    let template = template(cfg)?;
    let out = crate::preprocess::preprocess_volume(&native, &template, &model, &cfg.preprocess)
        .map_err(|e| StageError::Permanent(format!("{}: {e}", volume_path.display())))?;
    let dir = volume_path.parent().unwrap_or(Path::new(".")).join(format!("reg-{}", &ph[..16]));
    let stem = volume_path.file_name().map(|n| n.to_string_lossy().replace(".nii.gz", "")).unwrap_or_default();
    let input_path = dir.join(format!("{stem}_model_input.nii.gz"));
    // The affine alone, or with `syn` the chain folder (ITK files + ldae's record), whose `transform.json` gap
    // filling's unwarp follows (chain::unwarp reads either).
    let transform_path = match &out.deformable {
        None => {
            let path = dir.join(format!("{stem}_template_to_native.txt"));
            out.transform.write(&path).map_err(|e| StageError::Retry(e.to_string()))?;
            path
        }
        Some(warp) => crate::preprocess::deformable::chain::write_chain_folder(
            &dir.join(format!("{stem}_template_to_native")),
            &out.transform,
            &warp.forward,
            &warp.inverse,
        )
        .map_err(|e| StageError::Retry(e.to_string()))?,
    };
    crate::nifti::write_nifti(&input_path, &out.model_input).map_err(|e| StageError::Retry(e.to_string()))?;
    let registration = NewRegistration {
        volume_path: volume_path.to_string_lossy().into_owned(),
        preprocess_hash: ph.clone(),
        transform_path: transform_path.to_string_lossy().into_owned(),
        model_input_path: input_path.to_string_lossy().into_owned(),
        metric: out.mi,
        brain_coverage: out.brain_coverage,
    };
    let steps: Vec<&str> = out.ran.iter().map(|r| r.step.name()).collect();
    let mut measured = format!(
        "steps {}; mutual information {:.3}, brain coverage {:.1} %",
        steps.join(" → "),
        out.mi,
        out.brain_coverage * 100.0
    );
    if let Some(cc) = out.ran.iter().find_map(|r| r.syn_cc) {
        measured.push_str(&format!(", deformable local CC {cc:.3}"));
    }
    if let Some(b) = out.ran.iter().find_map(|r| r.brain) {
        measured.push_str(&format!(", extracted brain {:.2}× the template mask", b.volume_ratio));
    }
    // The QC gate: a registration below a [qc] threshold is kept (transform, model input) but not encoded.
    if let Some(why) = cfg.qc.review_reason(out.mi, out.brain_coverage) {
        tracing::warn!(volume = %volume_path.display(), "registration needs review: {why}");
        return Ok(Completion {
            registration: Some(registration),
            series: Some(SeriesUpdate {
                series_ref,
                content_key: key,
                state: "needs_review".into(),
                note: Some(format!("needs review: {why} ({measured})")),
                finished: true,
            }),
            ..Completion::default()
        });
    }
    let encode = NewJob {
        // The model by its content (weights digest), not its folder: weights replaced in place encode anew.
        key: format!("encode:{key}:{volume_sha}:{ph}:{}", model_key(cfg)?),
        series_ref: Some(series_ref),
        payload: Payload::Encode(EncodeJob {
            content_key: key.clone(),
            volume: volume_path.to_string_lossy().into_owned(),
            preprocess_hash: ph.clone(),
            model_input: input_path.to_string_lossy().into_owned(),
        }),
        priority: 6,
    };
    Ok(Completion {
        registration: Some(registration),
        series: Some(SeriesUpdate {
            series_ref,
            content_key: key,
            state: "registered".into(),
            note: Some(format!("registered ({measured})")),
            finished: false,
        }),
        next: vec![encode],
        ..Completion::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::steps::{GridSpec, NamedGrid, Step};

    #[test]
    fn the_key_follows_the_steps_and_only_their_parameters() {
        let base = crate::config::PreprocessConfig::default();
        let key = |p: &crate::config::PreprocessConfig| steps_key(p).to_string();
        let mut n4_params = base.clone();
        n4_params.n4.shrink = 2;
        assert_eq!(key(&base), key(&n4_params), "n4 does not run by default: its parameters do not matter");
        let mut published = base.clone();
        published.steps = Step::published_steps();
        assert_ne!(key(&base), key(&published));
        let mut published_n4 = published.clone();
        published_n4.n4.shrink = 2;
        assert_ne!(key(&published), key(&published_n4));
        let mut grid = base.clone();
        grid.grid = Some(GridSpec::Named(NamedGrid::Icbm152_2009c));
        assert_ne!(key(&base), key(&grid));
        assert!(key(&published).contains("\"brain_extract\""));
        let mut published_syn = published.clone();
        published_syn.syn.radius = 3;
        assert_ne!(key(&published), key(&published_syn), "syn runs in the published steps: its parameters count");
        let mut default_syn = base.clone();
        default_syn.syn.radius = 3;
        assert_eq!(key(&base), key(&default_syn), "syn does not run by default");
    }
}
