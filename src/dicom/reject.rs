//! Why the converter refused a file or a series: the typed contract every caller (CLI, daemon quarantine) relies on.

use serde::Serialize;

use super::DicomError;

/// The reason a file or a series was not converted.
///
/// Contract: the converter never writes a volume whose geometry or values it cannot vouch for. A series is either
/// converted exactly (slices ordered along the normal, uniform spacing, one orientation, rescale applied) or
/// refused with one of these reasons; a file that cannot be read is refused on its own and never silently dropped
/// from a series. `Display` gives one line without the subject; [`Rejection`] adds the file or series.
/// [`RejectReason::code`] is a stable snake_case name (quarantine folder names, JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum RejectReason {
    /// The file could not be read, is empty, is not DICOM, or its pixel data cannot be decoded.
    Unreadable { detail: String },
    /// A DICOMDIR (media directory), which holds no image.
    DicomDir,
    /// A DICOM object that is not an image (SR, RTSTRUCT, presentation state, ...).
    NotAnImage { what: String },
    /// An image object without Pixel Data.
    NoPixelData,
    /// The transfer syntax is not one ldae can decode.
    UnsupportedTransferSyntax { uid: String },
    /// Colour, 1-bit or other pixel formats a scalar volume cannot hold.
    UnsupportedPixels { detail: String },
    /// A slice lacks ImagePositionPatient / ImageOrientationPatient / PixelSpacing (or they are degenerate).
    MissingGeometry { detail: String },
    /// Fewer slices than `convert.min_slices`.
    TooFewSlices { found: usize, min: usize },
    /// Slices of one stack have different orientations (when not split apart).
    MixedOrientation,
    /// The slice step is not along the slice normal (CT gantry tilt or a sheared stack).
    GantryTilt { degrees: f64 },
    /// Two different instances at the same slice position.
    DuplicatePosition { position_mm: f64 },
    /// Some slice steps are whole multiples of the usual step: slices are missing.
    MissingSlices { missing: usize, step_mm: f64, largest_gap_mm: f64 },
    /// Slice steps differ beyond `convert.spacing_tolerance` and are not whole multiples.
    NonUniformSpacing { min_mm: f64, max_mm: f64 },
    /// Frames/tiles cannot be laid out (mosaic without a count, multi-frame without per-frame positions, ...).
    UnsupportedLayout { detail: String },
}

impl RejectReason {
    /// Stable snake_case name.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Unreadable { .. } => "unreadable",
            RejectReason::DicomDir => "dicomdir",
            RejectReason::NotAnImage { .. } => "not_an_image",
            RejectReason::NoPixelData => "no_pixel_data",
            RejectReason::UnsupportedTransferSyntax { .. } => "unsupported_transfer_syntax",
            RejectReason::UnsupportedPixels { .. } => "unsupported_pixels",
            RejectReason::MissingGeometry { .. } => "missing_geometry",
            RejectReason::TooFewSlices { .. } => "too_few_slices",
            RejectReason::MixedOrientation => "mixed_orientation",
            RejectReason::GantryTilt { .. } => "gantry_tilt",
            RejectReason::DuplicatePosition { .. } => "duplicate_position",
            RejectReason::MissingSlices { .. } => "missing_slices",
            RejectReason::NonUniformSpacing { .. } => "nonuniform_spacing",
            RejectReason::UnsupportedLayout { .. } => "unsupported_layout",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::Unreadable { detail } => write!(f, "unreadable: {detail}"),
            RejectReason::DicomDir => write!(f, "a DICOMDIR (media directory), not an image"),
            RejectReason::NotAnImage { what } => write!(f, "not an image: {what}"),
            RejectReason::NoPixelData => write!(f, "no Pixel Data"),
            RejectReason::UnsupportedTransferSyntax { uid } => write!(f, "unsupported transfer syntax {uid}"),
            RejectReason::UnsupportedPixels { detail } => write!(f, "unsupported pixel format: {detail}"),
            RejectReason::MissingGeometry { detail } => write!(f, "missing or invalid geometry: {detail}"),
            RejectReason::TooFewSlices { found, min } => write!(f, "too few slices: {found} (minimum {min})"),
            RejectReason::MixedOrientation => write!(f, "mixed slice orientations in one stack"),
            RejectReason::GantryTilt { degrees } => {
                write!(f, "gantry tilt / sheared stack: slice step {degrees:.2} deg off the slice normal")
            }
            RejectReason::DuplicatePosition { position_mm } => {
                write!(f, "two different instances at the same slice position ({position_mm:.3} mm)")
            }
            RejectReason::MissingSlices { missing, step_mm, largest_gap_mm } => {
                write!(f, "missing slices: {missing} missing (step {step_mm:.3} mm, gap of {largest_gap_mm:.3} mm)")
            }
            RejectReason::NonUniformSpacing { min_mm, max_mm } => {
                write!(f, "non-uniform slice spacing: steps from {min_mm:.3} to {max_mm:.3} mm")
            }
            RejectReason::UnsupportedLayout { detail } => write!(f, "unsupported layout: {detail}"),
        }
    }
}

impl From<&DicomError> for RejectReason {
    fn from(e: &DicomError) -> Self {
        match e {
            DicomError::DicomDir { .. } => RejectReason::DicomDir,
            DicomError::NotImage { what, .. } => RejectReason::NotAnImage { what: what.clone() },
            DicomError::NoPixelData { .. } => RejectReason::NoPixelData,
            DicomError::UnsupportedTransferSyntax { uid, .. } => {
                RejectReason::UnsupportedTransferSyntax { uid: uid.clone() }
            }
            DicomError::UnsupportedPixels { reason, .. } => RejectReason::UnsupportedPixels { detail: reason.clone() },
            DicomError::Io { source, .. } => RejectReason::Unreadable { detail: source.to_string() },
            DicomError::Empty { .. } => RejectReason::Unreadable { detail: "empty file (0 bytes)".into() },
            DicomError::NotDicom { reason, .. } => RejectReason::Unreadable { detail: format!("not DICOM: {reason}") },
            DicomError::MissingTag { tag, .. } => RejectReason::Unreadable { detail: format!("missing {tag}") },
            DicomError::Decode { reason, .. } => RejectReason::Unreadable { detail: format!("decode: {reason}") },
            DicomError::Limit { source, .. } => RejectReason::Unreadable { detail: format!("over a limit: {source}") },
            DicomError::Inconsistent { reason, .. } => {
                RejectReason::Unreadable { detail: format!("inconsistent header: {reason}") }
            }
        }
    }
}

/// One refused file or series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// A file path, or `series <SeriesInstanceUID>` (plus the split label).
    pub subject: String,
    /// Why.
    pub reason: RejectReason,
    /// The files involved (one for a file rejection; the series' files otherwise).
    pub files: Vec<std::path::PathBuf>,
}

impl Rejection {
    /// A file-level rejection from a read/decode error.
    pub fn from_error(e: &DicomError) -> Self {
        Rejection { subject: e.path().display().to_string(), reason: e.into(), files: vec![e.path().to_path_buf()] }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One line whatever the file name holds: control characters (newlines, escapes) become `?`.
        let clean = |s: String| s.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>();
        write!(f, "{}: {}", clean(self.subject.clone()), clean(self.reason.to_string()))
    }
}
