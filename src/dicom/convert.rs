//! The converter facade: files/folders in, volumes (with sidecars) and rejections out.

use std::path::PathBuf;

use crate::config::ConvertConfig;
use crate::volume::Volume;

use super::Rejection;

/// One converted series (or split of a series).
#[derive(Debug, Clone)]
pub struct ConvertedSeries {
    pub volume: Volume,
    pub sidecar: serde_json::Value,
    pub series_uid: String,
    /// Sanitised file stem (no patient name, no path separators, no `..`).
    pub file_stem: String,
    pub sources: Vec<PathBuf>,
}

/// Everything `convert_paths` produced.
#[derive(Debug, Clone, Default)]
pub struct ConvertReport {
    pub converted: Vec<ConvertedSeries>,
    pub rejected: Vec<Rejection>,
}

/// Scan, group and convert (work in progress).
pub fn convert_paths(_inputs: &[PathBuf], _cfg: &ConvertConfig) -> ConvertReport {
    ConvertReport::default()
}
