//! DICOM in and out: header scan, series grouping/splitting, geometry (LPS↔RAS, slice order, spacing checks),
//! pixel decoding to f32, source snapshots, deterministic UIDs and the synthetic-series writer ([`writer`]),
//! and [`net`], which sends series to a PACS by C-STORE.
//!
//! The converter's flow: [`read::read_header`] on every file (in parallel, header only) → [`series`] groups the
//! headers by SeriesInstanceUID and splits them (orientation, size, echo, acquisition, Image Type) →
//! [`geometry`] orders the slices and checks the stack → [`pixels`] decodes the chosen files to f32 →
//! [`convert::convert_paths`] returns the volumes with their sidecars and every rejection with its
//! [`RejectReason`].

pub mod age;
pub mod claims;
pub mod codestream;
pub mod convert;
pub mod geometry;
pub mod guard;
pub mod jpeg12;
pub mod jpegls;
pub mod net;
pub mod net_context;
pub mod net_pdu;
pub mod net_peer;
pub mod net_retry;
pub mod net_status;
pub mod pixels;
pub mod prefix;
pub mod read;
pub mod reject;
pub mod select;
pub mod series;
pub mod snapshot;
pub mod uid;
pub mod writer;

use std::path::PathBuf;

pub use convert::{convert_paths, convert_paths_each, convert_paths_with, ConvertReport, ConvertedSeries};
pub use read::{read_header, read_header_with, FrameInfo, InstanceHeader, NativePixels};
pub use reject::{RejectReason, Rejection};

/// Why one file could not be read or decoded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: empty file (0 bytes)")]
    Empty { path: PathBuf },
    #[error("{path}: not a DICOM file: {reason}")]
    NotDicom { path: PathBuf, reason: String },
    #[error("{path}: a DICOMDIR (media directory), not an image")]
    DicomDir { path: PathBuf },
    #[error("{path}: not an image: {what}")]
    NotImage { path: PathBuf, what: String },
    #[error("{path}: missing required attribute {tag}")]
    MissingTag { path: PathBuf, tag: &'static str },
    #[error("{path}: no Pixel Data")]
    NoPixelData { path: PathBuf },
    #[error("{path}: unsupported transfer syntax {uid}")]
    UnsupportedTransferSyntax { path: PathBuf, uid: String },
    #[error("{path}: unsupported pixel format: {reason}")]
    UnsupportedPixels { path: PathBuf, reason: String },
    #[error("{path}: cannot decode pixel data: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// A count, length or dimension the file claims is over a configured limit.
    #[error("{path}: {source}")]
    Limit { path: PathBuf, source: crate::limits::LimitExceeded },
    /// The header contradicts itself (e.g. more frames than the Pixel Data holds).
    #[error("{path}: inconsistent header: {reason}")]
    Inconsistent { path: PathBuf, reason: String },
}

impl DicomError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            DicomError::Io { path, .. }
            | DicomError::Empty { path }
            | DicomError::NotDicom { path, .. }
            | DicomError::DicomDir { path }
            | DicomError::NotImage { path, .. }
            | DicomError::MissingTag { path, .. }
            | DicomError::NoPixelData { path }
            | DicomError::UnsupportedTransferSyntax { path, .. }
            | DicomError::UnsupportedPixels { path, .. }
            | DicomError::Decode { path, .. }
            | DicomError::Limit { path, .. }
            | DicomError::Inconsistent { path, .. } => path,
        }
    }
}
