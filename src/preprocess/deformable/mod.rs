//! Deformable registration after the affine, and the transforms it produces.
//!
//! - [`field`]: dense displacement fields (composition, smoothing, inversion, exponential);
//! - [`metric_cc`]: local normalised cross-correlation and its exact voxel-wise derivative;
//! - [`syn`]: symmetric greedy diffeomorphic registration (SyN-style) on a multi-resolution pyramid;
//! - [`itk_field`]: displacement fields as ITK/ANTs NIfTI (5-D vector, LPS);
//! - [`chain`]: a chain of affine and field transforms, forward or inverse, and resampling through it.

pub mod chain;
pub mod field;
pub mod itk_field;
pub mod metric_cc;
pub mod syn;

pub use chain::{Chain, Step};
pub use field::Field;
pub use syn::{register_syn, SynOptions, SynResult};
