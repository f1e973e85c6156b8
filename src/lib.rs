//! ldae — latent diffusion autoencoders beside a hospital's PACS.
//!
//! The path of one scan (see README "Architecture"): DICOM files → [`dicom`] (series → [`volume::Volume`])
//! → [`preprocess`] (registration to the template, model input) → [`model`] (LDAE codes) →
//! [`longitudinal`] (timelines, gap filling) → DICOM secondary capture. [`store`] keeps all state in SQLite,
//! [`daemon`] runs every stage as a persistent job, [`cli`] is the command line.
//!
//! The imaging modules are pure libraries of functions on values: they know nothing of SQLite, watched folders,
//! tokio or the CLI.

pub mod alloc_cache;
mod alloc_cap;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dicom;
mod huge_pages;
mod io;
pub mod limits;
pub mod longitudinal;
pub mod lookup;
pub mod model;
pub mod nifti;
mod nifti_write;
pub mod preprocess;
mod scratch;
pub mod store;
pub mod volume;

pub use volume::{Affine, Provenance, Volume};

/// The converter/daemon version written into sidecars and DICOM output.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
