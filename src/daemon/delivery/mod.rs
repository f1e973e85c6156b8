//! Synthetic series out of ldae: the `[delivery]` configuration ([`config`]) and the fill's DICOM series
//! ([`write`]).

pub mod config;
pub mod write;
