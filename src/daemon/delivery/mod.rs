//! Synthetic series out of ldae: the `[delivery]` configuration ([`config`]), the fill's DICOM series
//! ([`write`]) and its delivery to the PACS ([`deliver`]).

pub mod config;
pub mod deliver;
pub mod write;
