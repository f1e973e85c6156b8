//! [`preprocess_volume`]: the facade the daemon calls — register a native scan to the template, mask the brain,
//! and produce the model's exact input.
//!
//! Stages run in this order; later additions slot in where marked: (bias-field correction) → rigid/affine
//! registration → (deformable refinement) → resampling onto the template grid → template brain mask →
//! model input (SPEC §6).

use tracing::info;

use super::mask::{apply_mask, mask_to_native};
use super::model_input::model_input;
use super::register::{register_affine, RegisterOptions};
use super::resample::{resample, Grid, Interp};
use super::template::Template;
use super::transform::Transform;
use super::{invalid, PreprocessError};
use crate::config::PreprocessConfig;
use crate::model::config::ModelConfig;
use crate::volume::Volume;

/// Everything preprocessing produces for one scan.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// Template → native world map (store it: it maps synthetic template-space scans back).
    pub transform: Transform,
    /// The scan on the template grid, brain-masked.
    pub registered: Volume,
    /// The template's brain mask on the native grid.
    pub native_mask: Volume,
    /// The model's input (spacing and shape from the model config), values in [0, 1].
    pub model_input: Volume,
    /// Mutual information at the end of registration.
    pub mi: f64,
    /// Fraction of the template brain mask inside the scan's field of view ([`super::qc::brain_coverage`]).
    pub brain_coverage: f64,
}

/// Register `native` to `template`, mask it, and build the model input for `model`.
pub fn preprocess_volume(
    native: &Volume,
    template: &Template,
    model: &ModelConfig,
    cfg: &PreprocessConfig,
) -> Result<Preprocessed, PreprocessError> {
    let opts = RegisterOptions::from_config(cfg, template.spacing());
    preprocess_with(native, template, model, &opts)
}

/// [`preprocess_volume`] with explicit registration options.
pub fn preprocess_with(
    native: &Volume,
    template: &Template,
    model: &ModelConfig,
    opts: &RegisterOptions,
) -> Result<Preprocessed, PreprocessError> {
    let reg = register_affine(native, &template.t1, Some(&template.mask), opts)?;
    info!(mi = reg.mi, "registered to the template");
    let mut registered = resample(native, &Grid::of(&template.t1), &reg.transform.matrix, Interp::Linear, 0.0)
        .ok_or_else(|| invalid("preprocess", "the native affine is singular"))?;
    apply_mask(&mut registered, &template.mask)?;
    let native_mask = mask_to_native(&template.mask, native, &reg.transform, false)?;
    let input = model_input(&registered, model.data.pixdim, model.data.resize_to)?;
    let brain_coverage = super::qc::brain_coverage(&template.mask, native, &reg.transform);
    info!(brain_coverage, "template brain inside the scan's field of view");
    Ok(Preprocessed {
        transform: reg.transform,
        registered,
        native_mask,
        model_input: input,
        mi: reg.mi,
        brain_coverage,
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
