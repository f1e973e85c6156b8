//! [`preprocess_volume`]: the facade the daemon calls — run the configured [`Step`]s on a native scan and produce
//! the model's exact input.
//!
//! The default steps are the original pipeline: rigid/affine registration → resampling onto the target grid →
//! template brain mask → model input (SPEC §6). The paper's order (config/published.toml) is N4 → brain
//! extraction → registration → resize. A deformable step slots in after `register` (it refines the transform
//! that resampling and the brain mask's [`NativeToTemplate`] use).

use serde::Serialize;
use tracing::info;

use super::brain::{carry_mask, extract_brain, AffineMapping, BrainOptions, BrainQc};
use super::mask::{apply_mask, mask_to_native};
use super::model_input::model_input;
use super::n4::{n4, N4Options};
use super::register::{register_affine, RegisterOptions};
use super::resample::{resample, Grid, Interp};
use super::steps::{GridSpec, Step};
use super::template::Template;
use super::transform::Transform;
use super::{invalid, PreprocessError};
use crate::config::PreprocessConfig;
use crate::limits::Limits;
use crate::model::config::ModelConfig;
use crate::volume::Volume;

/// Everything preprocessing produces for one scan.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// Template → native world map (store it: it maps synthetic template-space scans back).
    pub transform: Transform,
    /// The scan on the target grid (brain-masked when a masking step ran).
    pub registered: Volume,
    /// The brain mask on the native grid: the extracted one with `brain_extract`, else the template's mapped.
    pub native_mask: Volume,
    /// The model's input (spacing and shape from the model config), values in [0, 1].
    pub model_input: Volume,
    /// Mutual information at the end of registration.
    pub mi: f64,
    /// Fraction of the template brain mask inside the scan's field of view ([`super::qc::brain_coverage`]).
    pub brain_coverage: f64,
    /// What each step did, in order (for logs and the QC record).
    pub ran: Vec<StepRecord>,
}

/// One step that ran and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub step: Step,
    /// Seconds it took.
    pub secs: f64,
    /// N4: iterations per level; brain extraction: its QC; others: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n4_iterations: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brain: Option<BrainQc>,
}

/// Everything [`preprocess_steps`] needs besides the scan and the template.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub steps: Vec<Step>,
    pub register: RegisterOptions,
    pub n4: N4Options,
    pub brain: BrainOptions,
    pub grid: Option<GridSpec>,
    pub limits: Limits,
}

impl PipelineOptions {
    /// From the `[preprocess]` section.
    pub fn from_config(cfg: &PreprocessConfig, template_spacing: f64) -> Self {
        PipelineOptions {
            steps: cfg.steps.clone(),
            register: RegisterOptions::from_config(cfg, template_spacing),
            n4: cfg.n4.clone(),
            brain: cfg.brain.clone(),
            grid: cfg.grid.clone(),
            limits: Limits::default(),
        }
    }

    /// The default steps with explicit registration options.
    pub fn registration_only(register: RegisterOptions) -> Self {
        PipelineOptions {
            steps: Step::default_steps(),
            register,
            n4: N4Options::default(),
            brain: BrainOptions::default(),
            grid: None,
            limits: Limits::default(),
        }
    }
}

/// Run the `[preprocess]` steps on `native` for `model`.
pub fn preprocess_volume(
    native: &Volume,
    template: &Template,
    model: &ModelConfig,
    cfg: &PreprocessConfig,
) -> Result<Preprocessed, PreprocessError> {
    preprocess_steps(native, template, model, &PipelineOptions::from_config(cfg, template.spacing()))
}

/// [`preprocess_volume`] with the default steps and explicit registration options.
pub fn preprocess_with(
    native: &Volume,
    template: &Template,
    model: &ModelConfig,
    opts: &RegisterOptions,
) -> Result<Preprocessed, PreprocessError> {
    preprocess_steps(native, template, model, &PipelineOptions::registration_only(opts.clone()))
}

/// Run `opts.steps` in order (they are checked first, see [`super::steps::validate_steps`]).
pub fn preprocess_steps(
    native: &Volume,
    template: &Template,
    model: &ModelConfig,
    opts: &PipelineOptions,
) -> Result<Preprocessed, PreprocessError> {
    super::steps::validate_steps(&opts.steps).map_err(|m| invalid("preprocess.steps", m))?;
    let target = opts.grid.as_ref().map_or_else(|| Grid::of(&template.t1), |g| g.grid());
    let mut scan = native.clone();
    let mut reg: Option<super::register::Registration> = None;
    let mut registered: Option<Volume> = None;
    let mut native_mask: Option<Volume> = None;
    let mut ran = Vec::new();
    let mut input = None;
    for &step in &opts.steps {
        let start = std::time::Instant::now();
        let mut rec = StepRecord { step, secs: 0.0, n4_iterations: None, brain: None };
        match step {
            Step::N4 => {
                let r = n4(&scan, None, &opts.n4, &opts.limits, &|_, _, _| {})?;
                info!(levels = ?r.levels.iter().map(|l| l.iterations).collect::<Vec<_>>(), "bias field corrected");
                rec.n4_iterations = Some(r.levels.iter().map(|l| l.iterations).collect());
                scan = r.corrected;
            }
            Step::BrainExtract => {
                // A first registration of the whole head gives the template → native mapping for the mask.
                let head = register_affine(&scan, &template.t1, Some(&template.mask), &opts.register)?;
                let to_template =
                    head.transform.inverse().ok_or_else(|| invalid("brain extraction", "singular transform"))?;
                let carried = carry_mask(&template.mask, &Grid::of(&scan), &AffineMapping(to_template.matrix))?;
                let b = extract_brain(&scan, &carried, &opts.brain)?;
                info!(volume_ratio = b.qc.volume_ratio, dice = b.qc.dice_to_template, "brain extracted");
                apply_mask(&mut scan, &b.mask)?;
                rec.brain = Some(b.qc);
                native_mask = Some(b.mask);
            }
            Step::Register => {
                let r = register_affine(&scan, &template.t1, Some(&template.mask), &opts.register)?;
                info!(mi = r.mi, "registered to the template");
                registered = Some(
                    resample(&scan, &target, &r.transform.matrix, Interp::Linear, 0.0)
                        .ok_or_else(|| invalid("preprocess", "the native affine is singular"))?,
                );
                reg = Some(r);
            }
            Step::TemplateMask => {
                let vol = registered.as_mut().ok_or_else(|| invalid("template_mask", "needs register first"))?;
                let mask = if Grid::of(&template.mask) == target {
                    template.mask.clone()
                } else {
                    let mut m =
                        resample(&template.mask, &target, &crate::volume::Affine::identity(), Interp::Linear, 0.0)
                            .ok_or_else(|| invalid("template_mask", "singular template affine"))?;
                    m.data.mapv_inplace(|v| if v > 0.5 { 1.0 } else { 0.0 });
                    m
                };
                apply_mask(vol, &mask)?;
            }
            Step::Resize => {
                let vol = registered.as_ref().ok_or_else(|| invalid("resize", "needs register first"))?;
                input = Some(model_input(vol, model.data.pixdim, model.data.resize_to)?);
            }
        }
        rec.secs = start.elapsed().as_secs_f64();
        ran.push(rec);
    }
    let (Some(reg), Some(registered), Some(model_input)) = (reg, registered, input) else {
        return Err(invalid("preprocess.steps", "register and resize did not both run"));
    };
    let native_mask = match native_mask {
        Some(m) => m,
        None => mask_to_native(&template.mask, native, &reg.transform, false)?,
    };
    let brain_coverage = super::qc::brain_coverage(&template.mask, native, &reg.transform);
    info!(brain_coverage, "template brain inside the scan's field of view");
    Ok(Preprocessed { transform: reg.transform, registered, native_mask, model_input, mi: reg.mi, brain_coverage, ran })
}

/// Map a template-space volume back onto a native grid with the stored template → native transform.
pub fn unwarp(
    template_space: &Volume,
    native_grid: &Grid,
    template_to_native: &Transform,
) -> Result<Volume, PreprocessError> {
    let inv = template_to_native.inverse().ok_or_else(|| invalid("unwarp", "singular transform"))?;
    resample(template_space, native_grid, &inv.matrix, Interp::Linear, 0.0)
        .ok_or_else(|| invalid("unwarp", "the template-space volume's affine is singular"))
}
