//! Preprocessing: from a native-space head volume to the model's exact input.
//!
//! The stages, each a pure function on values:
//! - [`template`]: the T1 template and its brain mask (default: MNI ICBM152 2009a shipped in `weights/templates/`);
//! - [`register`]: rigid then affine (12 DOF) registration to the template, multi-resolution, Mattes mutual
//!   information over the template's (dilated) brain mask, regular-step gradient descent;
//! - [`transform`]: [`Transform`], a 4×4 map in RAS mm between two named spaces, with ITK/ANTs text IO;
//! - [`resample`]: trilinear/nearest sampling of a [`Volume`] on another grid through a transform (rayon);
//! - [`mask`]: the template mask mapped to the subject, optionally refined by intensity;
//! - [`model_input`]: the reference loader's deterministic steps (SPEC §6) exactly;
//! - [`n4`] (with [`sharpen`] and [`bspline`]): N4-style bias-field correction;
//! - [`brain`]: brain extraction — the template mask carried through a template → native mapping, refined by
//!   intensity (Otsu, morphology, largest component, hole filling), with QC values;
//! - [`steps`]: the configurable `[preprocess] steps` list and the model input's grid (e.g. `icbm152_2009c`);
//! - [`deformable`]: SyN-style symmetric diffeomorphic registration after the affine (local CC), displacement
//!   fields with their inverse, ITK/ANTs warp files, transform chains;
//! - [`pipeline`]: [`preprocess_volume`], the facade the daemon calls, running the configured steps.

pub mod brain;
pub mod bspline;
pub mod deformable;
pub mod mask;
pub mod metric;
pub mod model_input;
pub mod n4;
pub mod pipeline;
pub mod pyramid;
pub mod qc;
pub mod register;
pub mod resample;
pub mod sharpen;
pub mod steps;
pub mod template;
pub mod transform;

use std::path::PathBuf;

pub use pipeline::{preprocess_volume, Preprocessed};
pub use transform::Transform;

/// Why preprocessing failed: always names the file or the stage and the reason.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error(transparent)]
    Nifti(#[from] crate::nifti::NiftiError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a transform file ({reason})")]
    TransformFormat { path: PathBuf, reason: String },
    #[error("template {path}: {reason}")]
    Template { path: PathBuf, reason: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("registration failed: {0}")]
    Registration(String),
}

/// Shorthand for an [`PreprocessError::Invalid`].
pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> PreprocessError {
    PreprocessError::Invalid { what: what.into(), reason: reason.into() }
}
