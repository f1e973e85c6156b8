//! What the preprocessing pipeline runs and on which grid: the `[preprocess] steps` list ([`Step`], checked by
//! [`validate_steps`]) and the model's input grid ([`GridSpec`], a named template grid or an explicit one).
//!
//! A new stage is a new [`Step`] variant, a rule in [`validate_steps`] and an arm in
//! [`super::pipeline::preprocess_volume`].

use serde::{Deserialize, Serialize};

use super::resample::Grid;
use crate::volume::Affine;

/// One preprocessing stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// N4 bias-field correction of the native scan ([`super::n4`]).
    N4,
    /// Brain extraction in native space: the template mask carried through a registration, refined by the
    /// scan's intensities ([`super::brain`]); the scan is skull-stripped before `register`.
    BrainExtract,
    /// Rigid then affine registration to the template ([`super::register`]).
    Register,
    /// Deformable (SyN-style) registration after `register` ([`super::deformable::syn`]): the scan is resampled
    /// onto the target grid through the warp and the affine, and the stored transform becomes the chain.
    Syn,
    /// The template's brain mask applied on the template grid (the original pipeline's masking).
    TemplateMask,
    /// The model's exact input (SPEC §6: spacing, pad/crop, min–max) from the scan on the target grid.
    Resize,
}

impl Step {
    /// The steps the pipeline ran before configurable steps existed (the default).
    pub fn default_steps() -> Vec<Step> {
        vec![Step::Register, Step::TemplateMask, Step::Resize]
    }

    /// The paper's training order (SPEC §6): N4 → brain extraction → affine + SyN to the template → resize.
    pub fn published_steps() -> Vec<Step> {
        vec![Step::N4, Step::BrainExtract, Step::Register, Step::Syn, Step::Resize]
    }

    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Step::N4 => "n4",
            Step::BrainExtract => "brain_extract",
            Step::Register => "register",
            Step::Syn => "syn",
            Step::TemplateMask => "template_mask",
            Step::Resize => "resize",
        }
    }
}

/// Check a steps list: each step at most once, `register` and `resize` present, `resize` last, native-space
/// steps (`n4`, `brain_extract`) before `register`, `template_mask` and `syn` after it (`syn` before `template_mask`,
/// which masks the scan `syn` resamples). The message says which rule broke.
pub fn validate_steps(steps: &[Step]) -> Result<(), String> {
    let pos = |s: Step| steps.iter().position(|x| *x == s);
    for (i, s) in steps.iter().enumerate() {
        if steps[..i].contains(s) {
            return Err(format!("\"{}\" is listed twice", s.name()));
        }
    }
    let Some(reg) = pos(Step::Register) else { return Err("\"register\" is required".into()) };
    if steps.last() != Some(&Step::Resize) {
        return Err("\"resize\" is required and must be the last step".into());
    }
    for s in [Step::N4, Step::BrainExtract] {
        if pos(s).is_some_and(|p| p > reg) {
            return Err(format!("\"{}\" works on the native scan and must come before \"register\"", s.name()));
        }
    }
    if pos(Step::TemplateMask).is_some_and(|p| p < reg) {
        return Err("\"template_mask\" works on the template grid and must come after \"register\"".into());
    }
    if let Some(syn) = pos(Step::Syn) {
        if syn < reg {
            return Err("\"syn\" refines the affine and must come after \"register\"".into());
        }
        if pos(Step::TemplateMask).is_some_and(|p| p < syn) {
            return Err("\"syn\" resamples the scan and must come before \"template_mask\"".into());
        }
    }
    Ok(())
}

/// A template grid known by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedGrid {
    /// MNI ICBM152 2009c (symmetric and asymmetric share it): 193×229×193 at 1 mm, voxel 0 at (-96, -132, -78) mm
    /// RAS, the grid the published weights' training data was registered to (SPEC §6).
    #[serde(rename = "icbm152_2009c")]
    Icbm152_2009c,
}

/// The grid the registered scan is resampled onto before the model input is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GridSpec {
    Named(NamedGrid),
    Explicit { shape: [usize; 3], affine: [[f64; 4]; 4] },
}

impl GridSpec {
    /// The grid itself.
    pub fn grid(&self) -> Grid {
        match self {
            GridSpec::Named(NamedGrid::Icbm152_2009c) => {
                Grid { shape: [193, 229, 193], affine: Affine::from_spacing_origin([1.0; 3], [-96.0, -132.0, -78.0]) }
            }
            GridSpec::Explicit { shape, affine } => Grid { shape: *shape, affine: Affine(*affine) },
        }
    }

    /// Check an explicit grid: axes in 1..=4096, a finite invertible affine with last row (0, 0, 0, 1).
    pub fn validate(&self) -> Result<(), String> {
        let g = self.grid();
        if g.shape.iter().any(|n| !(1..=4096).contains(n)) {
            return Err(format!("shape {:?} must have axes of 1 to 4096 voxels", g.shape));
        }
        let a = g.affine.0;
        if a.iter().flatten().any(|v| !v.is_finite()) || a[3] != [0.0, 0.0, 0.0, 1.0] {
            return Err("affine must be finite with last row [0, 0, 0, 1]".into());
        }
        if g.affine.inverse().is_none() || g.affine.det3().abs() < 1e-9 {
            return Err("affine is singular".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lists_are_checked() {
        assert!(validate_steps(&Step::default_steps()).is_ok());
        assert!(validate_steps(&Step::published_steps()).is_ok());
        assert!(validate_steps(&[Step::Register]).unwrap_err().contains("resize"));
        assert!(validate_steps(&[Step::Resize]).unwrap_err().contains("register"));
        assert!(validate_steps(&[Step::Register, Step::N4, Step::Resize]).unwrap_err().contains("before"));
        assert!(validate_steps(&[Step::TemplateMask, Step::Register, Step::Resize]).unwrap_err().contains("after"));
        assert!(validate_steps(&[Step::N4, Step::N4, Step::Register, Step::Resize]).unwrap_err().contains("twice"));
        assert!(validate_steps(&[Step::Syn, Step::Register, Step::Resize]).unwrap_err().contains("after"));
        let late = [Step::Register, Step::TemplateMask, Step::Syn, Step::Resize];
        assert!(validate_steps(&late).unwrap_err().contains("before \"template_mask\""));
        assert!(validate_steps(&[Step::Register, Step::Syn, Step::TemplateMask, Step::Resize]).is_ok());
    }

    #[test]
    fn the_named_grid_parses_from_toml_and_is_the_2009c_grid() {
        #[derive(Deserialize)]
        struct W {
            grid: GridSpec,
        }
        let w: W = toml::from_str("grid = \"icbm152_2009c\"").unwrap();
        let g = w.grid.grid();
        assert_eq!(g.shape, [193, 229, 193]);
        assert_eq!(g.affine.origin(), [-96.0, -132.0, -78.0]);
        let e: W = toml::from_str(
            "grid = { shape = [2, 3, 4], affine = [[2, 0, 0, 1], [0, 2, 0, 2], [0, 0, 2, 3], [0, 0, 0, 1]] }",
        )
        .unwrap();
        assert_eq!(e.grid.grid().shape, [2, 3, 4]);
        assert!(e.grid.validate().is_ok());
        let bad = GridSpec::Explicit { shape: [2, 2, 2], affine: [[0.0; 4], [0.0; 4], [0.0; 4], [0.0, 0.0, 0.0, 1.0]] };
        assert!(bad.validate().is_err());
    }
}
