//! [`preprocess_volume`]: the facade the daemon calls — run the configured [`Step`]s on a native scan and produce
//! the model's exact input.
//!
//! The default steps are the original pipeline: rigid/affine registration → resampling onto the target grid →
//! template brain mask → model input (SPEC §6). The paper's order (config/published.toml) is N4 → brain
//! extraction → affine registration → SyN → resize. With `syn` in the steps the template → native map is the chain
//! `[Field(forward), Affine(A)]`: resampling onto the target grid follows it, and brain extraction carries the
//! template mask through its inverse `[Affine(A⁻¹), Field(inverse)]` (a deformable registration of the whole head);
//! [`Preprocessed::deformable`] holds the fields for the daemon to store as a chain folder.

use serde::Serialize;
use tracing::info;

use super::brain::{carry_mask, extract_brain, AffineMapping, BrainOptions, BrainQc, NativeToTemplate};
use super::deformable::{register_syn, Chain, Step as ChainStep, SynOptions, SynResult};
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
    /// Template → native world map, the affine (store it: it maps synthetic template-space scans back).
    pub transform: Transform,
    /// The `syn` step's fields (template → affinely aligned native and back); the full template → native map is
    /// then `[Field(forward), Affine(transform)]` ([`super::deformable::chain::write_chain_folder`] stores it).
    pub deformable: Option<SynResult>,
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
    /// SyN: local CC at the end of the finest level and iterations per level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_cc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_iterations: Option<Vec<u32>>,
}

/// Everything [`preprocess_steps`] needs besides the scan and the template.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub steps: Vec<Step>,
    pub register: RegisterOptions,
    pub n4: N4Options,
    pub brain: BrainOptions,
    pub syn: SynOptions,
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
            syn: cfg.syn.clone(),
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
            syn: SynOptions::default(),
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

/// The native → template map `[Affine(A⁻¹), Field(inverse)]` of an affine `A` (template → native) and a SyN result.
fn native_to_template(affine: &Transform, syn: &SynResult) -> Result<Chain, PreprocessError> {
    let inv = affine.inverse().ok_or_else(|| invalid("deformable registration", "singular affine"))?;
    Ok(Chain { steps: vec![ChainStep::Affine(inv.matrix), ChainStep::Field(Box::new(syn.inverse.clone()))] })
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
    let mut deformable: Option<SynResult> = None;
    let with_syn = opts.steps.contains(&Step::Syn);
    let mut ran = Vec::new();
    let mut input = None;
    for &step in &opts.steps {
        let start = std::time::Instant::now();
        let mut rec =
            StepRecord { step, secs: 0.0, n4_iterations: None, brain: None, syn_cc: None, syn_iterations: None };
        match step {
            Step::N4 => {
                let r = n4(&scan, None, &opts.n4, &opts.limits, &|_, _, _| {})?;
                info!(levels = ?r.levels.iter().map(|l| l.iterations).collect::<Vec<_>>(), "bias field corrected");
                rec.n4_iterations = Some(r.levels.iter().map(|l| l.iterations).collect());
                scan = r.corrected;
            }
            Step::BrainExtract => {
                // A first registration of the whole head gives the template → native mapping for the mask.
                // With `syn` in the steps the head is registered deformably too and the mask follows that chain.
                let head = register_affine(&scan, &template.t1, Some(&template.mask), &opts.register)?;
                let mapping: Box<dyn NativeToTemplate> = if with_syn {
                    let warp = register_syn(&template.t1, &scan, &head.transform.matrix, &opts.syn, &opts.limits)?;
                    info!(cc = warp.cc, "head registered deformably for brain extraction");
                    Box::new(native_to_template(&head.transform, &warp)?)
                } else {
                    let to_template =
                        head.transform.inverse().ok_or_else(|| invalid("brain extraction", "singular transform"))?;
                    Box::new(AffineMapping(to_template.matrix))
                };
                let carried = carry_mask(&template.mask, &Grid::of(&scan), mapping.as_ref())?;
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
            Step::Syn => {
                let r = reg.as_ref().ok_or_else(|| invalid("syn", "needs register first"))?;
                // A skull-stripped scan is matched to the template's brain, not to its head.
                let fixed = match &native_mask {
                    Some(_) => {
                        let mut t = template.t1.clone();
                        apply_mask(&mut t, &template.mask)?;
                        t
                    }
                    None => template.t1.clone(),
                };
                let warp = register_syn(&fixed, &scan, &r.transform.matrix, &opts.syn, &opts.limits)?;
                info!(cc = warp.cc, iterations = ?warp.iterations, "registered deformably");
                let chain = Chain {
                    steps: vec![
                        ChainStep::Field(Box::new(warp.forward.clone())),
                        ChainStep::Affine(r.transform.matrix),
                    ],
                };
                registered = Some(chain.resample(&scan, &target, Interp::Linear, 0.0)?);
                rec.syn_cc = Some(warp.cc);
                rec.syn_iterations = Some(warp.iterations.clone());
                deformable = Some(warp);
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
    let native_mask = match (native_mask, &deformable) {
        (Some(m), _) => m,
        (None, Some(warp)) => {
            carry_mask(&template.mask, &Grid::of(native), &native_to_template(&reg.transform, warp)?)?
        }
        (None, None) => mask_to_native(&template.mask, native, &reg.transform, false)?,
    };
    let brain_coverage = super::qc::brain_coverage(&template.mask, native, &reg.transform);
    info!(brain_coverage, "template brain inside the scan's field of view");
    Ok(Preprocessed {
        transform: reg.transform,
        deformable,
        registered,
        native_mask,
        model_input,
        mi: reg.mi,
        brain_coverage,
        ran,
    })
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
