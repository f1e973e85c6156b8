//! Header-only scan of one DICOM file: everything the converter (and the daemon's intake) needs to group, order
//! and check a series, read without touching the pixel data.
//!
//! [`read_header`] parses the file up to (not including) Pixel Data, so it costs a few kilobytes of I/O per file
//! whatever the image size. Geometry is kept in the file's own LPS frame here; `geometry.rs` turns it into RAS.
//! Multi-frame files (Enhanced MR/CT) yield one [`FrameInfo`] per frame from the per-frame and shared functional
//! groups; single-frame files yield one [`FrameInfo`] from the top-level attributes.

use std::path::{Path, PathBuf};

use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemDicomObject;
use dicom_object::{FileDicomObject, OpenFileOptions};

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::pixels::own_decoder;
use super::DicomError;
use crate::limits::Limits;

/// Siemens private "NumberOfImagesInMosaic" (group 0019, creator `SIEMENS MR HEADER`, element offset 0x0A).
/// Private tags are not in the standard dictionary; the creator is checked before the value is trusted.
const SIEMENS_MR_HEADER_CREATOR: &str = "SIEMENS MR HEADER";

/// Geometry and value scaling of one frame (a single-frame file has exactly one), in DICOM LPS millimetres.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrameInfo {
    /// Image Position (Patient): the centre of the first transmitted pixel, LPS mm.
    pub position: Option<[f64; 3]>,
    /// Image Orientation (Patient): row direction (along a row, i.e. increasing column) then column direction.
    pub orientation: Option<[f64; 6]>,
    /// Pixel Spacing: (row spacing = between rows, column spacing = between columns), mm.
    pub pixel_spacing: Option<[f64; 2]>,
    /// Slice thickness in mm, when given.
    pub slice_thickness: Option<f64>,
    /// Rescale slope (1 when absent).
    pub rescale_slope: f64,
    /// Rescale intercept (0 when absent).
    pub rescale_intercept: f64,
    /// Enhanced objects: Stack ID of the frame.
    pub stack_id: Option<String>,
    /// Enhanced objects: In-Stack Position Number.
    pub in_stack_position: Option<i64>,
    /// Enhanced objects: Temporal Position Index.
    pub temporal_index: Option<i64>,
    /// Enhanced MR: effective echo time of the frame (ms).
    pub echo_time: Option<f64>,
}

/// What the converter and the daemon know about one DICOM instance after reading its header.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceHeader {
    /// The file it came from.
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub file_size: u64,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub frame_of_reference_uid: Option<String>,
    /// Patient ID (never the name: ldae does not read Patient's Name).
    pub patient_id: Option<String>,
    /// Issuer of Patient ID: part of the patient's identity (one ID from two issuers is two patients).
    pub issuer_of_patient_id: Option<String>,
    pub modality: Option<String>,
    /// MR Acquisition Type (`2D` or `3D`), upper case, when given.
    pub mr_acquisition_type: Option<String>,
    /// Scanning Sequence values, upper case (e.g. `GR`, `IR`, `EP`).
    pub scanning_sequence: Vec<String>,
    /// Sequence Name (the vendor's, e.g. `*tfl3d1`, `*ep_b1000`), when given.
    pub sequence_name: Option<String>,
    pub manufacturer: Option<String>,
    pub series_number: Option<i64>,
    pub instance_number: Option<i64>,
    pub acquisition_number: Option<i64>,
    pub echo_number: Option<i64>,
    pub echo_time: Option<f64>,
    pub series_description: Option<String>,
    pub protocol_name: Option<String>,
    pub study_date: Option<String>,
    /// PatientAge as given (`nnnD|W|M|Y`), when given.
    pub patient_age: Option<String>,
    /// PatientBirthDate, when given (only used to derive an age; never stored).
    pub patient_birth_date: Option<String>,
    pub study_time: Option<String>,
    pub series_date: Option<String>,
    pub series_time: Option<String>,
    pub acquisition_date: Option<String>,
    pub acquisition_time: Option<String>,
    /// Images in Acquisition (0020,1002): the expected instance count, when the scanner says it.
    pub images_in_acquisition: Option<u32>,
    /// Image Type values, upper case (e.g. `ORIGINAL`, `PRIMARY`, `M`, `MOSAIC`).
    pub image_type: Vec<String>,
    /// Transfer syntax UID of the data set.
    pub transfer_syntax: String,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    /// Number of Frames (1 when absent).
    pub number_of_frames: u32,
    pub samples_per_pixel: Option<u16>,
    pub bits_allocated: Option<u16>,
    pub bits_stored: Option<u16>,
    /// 0 = unsigned, 1 = two's complement.
    pub pixel_representation: Option<u16>,
    pub photometric_interpretation: Option<String>,
    /// Gantry/Detector Tilt in degrees (CT), when given.
    pub gantry_tilt: Option<f64>,
    /// Spacing Between Slices (mm), when given.
    pub spacing_between_slices: Option<f64>,
    /// Siemens mosaic: number of images tiled in the frame (private tag), when the file says it.
    pub mosaic_images: Option<u32>,
    /// One entry per frame.
    pub frames: Vec<FrameInfo>,
    /// Where the native (uncompressed, little-endian) Pixel Data value lies in the file, from the header scan:
    /// decoding reads it from there without parsing the file again ([`super::pixels`]).
    pub native_pixels: Option<NativePixels>,
}

/// Byte range of a native Pixel Data value in its file, and how its element header is encoded (checked again
/// before the range is used, in case the file changed since the scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativePixels {
    pub offset: u64,
    pub len: u64,
    /// Explicit VR (12-byte element header before the value) or implicit (8 bytes).
    pub explicit: bool,
}

impl InstanceHeader {
    /// Does the header carry what a pixel image needs (Rows, Columns, Bits Allocated)?
    pub fn is_image(&self) -> bool {
        self.rows.is_some() && self.columns.is_some() && self.bits_allocated.is_some()
    }

    /// Siemens mosaic (Image Type contains `MOSAIC`).
    pub fn is_mosaic(&self) -> bool {
        self.image_type.iter().any(|t| t == "MOSAIC")
    }
}

/// The SOP classes that are certainly not images (the reason names them): structured reports, RT structure sets,
/// presentation states, key objects, raw data, encapsulated documents.
fn non_image_sop_class(uid: &str) -> Option<&'static str> {
    let known: &[(&str, &str)] = &[
        (uids::RT_STRUCTURE_SET_STORAGE, "RT Structure Set"),
        (uids::RT_PLAN_STORAGE, "RT Plan"),
        (uids::BASIC_TEXT_SR_STORAGE, "Basic Text SR"),
        (uids::ENHANCED_SR_STORAGE, "Enhanced SR"),
        (uids::COMPREHENSIVE_SR_STORAGE, "Comprehensive SR"),
        (uids::COMPREHENSIVE3_DSR_STORAGE, "Comprehensive 3D SR"),
        (uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE, "Key Object Selection"),
        (uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE, "Presentation State"),
        (uids::RAW_DATA_STORAGE, "Raw Data"),
        (uids::ENCAPSULATED_PDF_STORAGE, "Encapsulated PDF"),
        (uids::SEGMENTATION_STORAGE, "Segmentation"),
    ];
    known.iter().find(|(u, _)| *u == uid).map(|(_, n)| *n)
}

/// Read one file's header (everything before Pixel Data) under the default [`Limits`].
pub fn read_header(path: &Path) -> Result<InstanceHeader, DicomError> {
    read_header_with(path, &Limits::default())
}

/// Read one file's header (everything before Pixel Data).
///
/// Errors name the file and the reason: unreadable, empty, not DICOM Part 10, a DICOMDIR, a non-image SOP class
/// (SR, RTSTRUCT, ...), a missing UID, an image without Rows/Columns, a claim over `limits` or one the Pixel
/// Data contradicts ([`super::claims`]). Nothing is sized from the file before the pre-scan ([`super::guard`])
/// has bounded it.
pub fn read_header_with(path: &Path, limits: &Limits) -> Result<InstanceHeader, DicomError> {
    let (obj, scan, file_size) = open_header_object(path, limits)?;
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0').trim().to_string();
    let sop_class = obj.meta().media_storage_sop_class_uid().trim_end_matches('\0').trim().to_string();
    if sop_class == uids::MEDIA_STORAGE_DIRECTORY_STORAGE || obj.get(tags::DIRECTORY_RECORD_SEQUENCE).is_some() {
        return Err(DicomError::DicomDir { path: path.to_path_buf() });
    }
    match TransferSyntaxRegistry.get(&ts) {
        None => return Err(DicomError::UnsupportedTransferSyntax { path: path.to_path_buf(), uid: ts }),
        Some(t) if !own_decoder(&ts) && (t.is_unsupported_pixel_encapsulation() || !t.can_decode_all()) => {
            return Err(DicomError::UnsupportedTransferSyntax { path: path.to_path_buf(), uid: ts })
        }
        Some(_) => {}
    }
    let mut h = header_from_object(path, &obj, limits)?;
    h.file_size = file_size;
    h.transfer_syntax = ts;
    if h.sop_class_uid.is_empty() {
        h.sop_class_uid = sop_class;
    }
    if let Some(name) = non_image_sop_class(&h.sop_class_uid) {
        return Err(DicomError::NotImage { path: path.to_path_buf(), what: name.to_string() });
    }
    if !h.is_image() {
        return Err(DicomError::NotImage {
            path: path.to_path_buf(),
            what: format!("no Rows/Columns/BitsAllocated (SOP class {})", h.sop_class_uid),
        });
    }
    super::claims::check(&h, &scan, limits)?;
    h.native_pixels = native_pixels(&h.transfer_syntax, &scan);
    Ok(h)
}

/// The native Pixel Data's place in the file, for the little-endian uncompressed transfer syntaxes.
fn native_pixels(ts: &str, scan: &super::guard::Scan) -> Option<NativePixels> {
    let explicit = match ts {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => false,
        uids::EXPLICIT_VR_LITTLE_ENDIAN => true,
        _ => return None,
    };
    match scan.pixel_data {
        Some(super::guard::PixelExtent::Native { bytes, offset: Some(offset) }) => {
            Some(NativePixels { offset, len: bytes, explicit })
        }
        _ => None,
    }
}

/// A parsed header data set (everything before Pixel Data), its pre-scan and the file size.
pub type HeaderObject = (FileDicomObject<InMemDicomObject>, super::guard::Scan, u64);

/// Open one file's header (everything before Pixel Data) on the hardened path: a regular non-empty file,
/// pre-scanned by [`super::guard::scan`] under `limits`, parsed with single allocations capped
/// (`alloc_cap`). Every other reader of DICOM attributes (e.g. [`super::snapshot`]) goes through here.
pub fn open_header_object(path: &Path, limits: &Limits) -> Result<HeaderObject, DicomError> {
    let file = super::prefix::HeadFile::open(path)?;
    let scan = super::guard::scan_open(&file, path, limits)?;
    // No value in the header is larger than the file (or, deflated, than max_header_bytes inflated).
    let cap = file.size().saturating_add(16 << 20).max(limits.max_header_bytes);
    let obj = parse_opened(&file, &scan, path, cap, Some(tags::PIXEL_DATA))?;
    Ok((obj, scan, file.size()))
}

/// Parse a pre-scanned file with dicom-rs, up to `until` (the whole file when `None`), every single
/// allocation capped at `cap` bytes. The preamble is taken as dicom-rs decides it when it opens a path: skipped
/// unless the file starts with `DICM` (a file with `DICM` at neither 128 nor 0 is read as if it had one, and
/// fails as not DICOM).
pub(crate) fn parse_opened(
    file: &super::prefix::HeadFile,
    scan: &super::guard::Scan,
    path: &Path,
    cap: u64,
    until: Option<dicom_core::Tag>,
) -> Result<FileDicomObject<InMemDicomObject>, DicomError> {
    let preamble = if scan.no_preamble { ReadPreamble::Never } else { ReadPreamble::Always };
    crate::alloc_cap::with_cap(cap, || {
        let options = OpenFileOptions::new().read_preamble(preamble);
        match until {
            Some(tag) => options.read_until(tag).from_reader(file.reader()),
            None => options.from_reader(file.reader()),
        }
    })
    .map_err(|e| DicomError::NotDicom { path: path.to_path_buf(), reason: one_line(&e) })
}

/// Collapse an error and its sources into one line.
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s.replace('\n', " ")
}

/// Build the header from an (already parsed) data set. `obj` may hold the pixel data too; it is not looked at.
/// NumberOfFrames is checked against `limits.max_frames` before the per-frame list is built.
pub fn header_from_object(path: &Path, obj: &InMemDicomObject, limits: &Limits) -> Result<InstanceHeader, DicomError> {
    let missing = |tag: &'static str| DicomError::MissingTag { path: path.to_path_buf(), tag };
    let mut h = InstanceHeader {
        path: path.to_path_buf(),
        sop_instance_uid: uid(obj, tags::SOP_INSTANCE_UID).ok_or_else(|| missing("SOPInstanceUID"))?,
        sop_class_uid: uid(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
        series_instance_uid: uid(obj, tags::SERIES_INSTANCE_UID).ok_or_else(|| missing("SeriesInstanceUID"))?,
        study_instance_uid: uid(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference_uid: uid(obj, tags::FRAME_OF_REFERENCE_UID),
        patient_id: text(obj, tags::PATIENT_ID),
        issuer_of_patient_id: text(obj, tags::ISSUER_OF_PATIENT_ID),
        modality: text(obj, tags::MODALITY),
        mr_acquisition_type: text(obj, tags::MR_ACQUISITION_TYPE).map(|s| s.to_ascii_uppercase()),
        scanning_sequence: multi_text(obj, tags::SCANNING_SEQUENCE)
            .into_iter()
            .map(|s| s.to_ascii_uppercase())
            .collect(),
        sequence_name: text(obj, tags::SEQUENCE_NAME),
        manufacturer: text(obj, tags::MANUFACTURER),
        series_number: int(obj, tags::SERIES_NUMBER),
        instance_number: int(obj, tags::INSTANCE_NUMBER),
        acquisition_number: int(obj, tags::ACQUISITION_NUMBER),
        echo_number: int(obj, tags::ECHO_NUMBERS),
        echo_time: float(obj, tags::ECHO_TIME),
        series_description: text(obj, tags::SERIES_DESCRIPTION),
        protocol_name: text(obj, tags::PROTOCOL_NAME),
        study_date: text(obj, tags::STUDY_DATE),
        patient_age: text(obj, tags::PATIENT_AGE),
        patient_birth_date: text(obj, tags::PATIENT_BIRTH_DATE),
        study_time: text(obj, tags::STUDY_TIME),
        series_date: text(obj, tags::SERIES_DATE),
        series_time: text(obj, tags::SERIES_TIME),
        acquisition_date: text(obj, tags::ACQUISITION_DATE),
        acquisition_time: text(obj, tags::ACQUISITION_TIME),
        images_in_acquisition: int(obj, tags::IMAGES_IN_ACQUISITION).and_then(|v| u32::try_from(v).ok()),
        image_type: multi_text(obj, tags::IMAGE_TYPE).into_iter().map(|s| s.to_ascii_uppercase()).collect(),
        rows: int(obj, tags::ROWS).and_then(|v| u32::try_from(v).ok()),
        columns: int(obj, tags::COLUMNS).and_then(|v| u32::try_from(v).ok()),
        number_of_frames: number_of_frames(path, obj, limits)?,
        samples_per_pixel: int(obj, tags::SAMPLES_PER_PIXEL).and_then(|v| u16::try_from(v).ok()),
        bits_allocated: int(obj, tags::BITS_ALLOCATED).and_then(|v| u16::try_from(v).ok()),
        bits_stored: int(obj, tags::BITS_STORED).and_then(|v| u16::try_from(v).ok()),
        pixel_representation: int(obj, tags::PIXEL_REPRESENTATION).and_then(|v| u16::try_from(v).ok()),
        photometric_interpretation: text(obj, tags::PHOTOMETRIC_INTERPRETATION),
        gantry_tilt: float(obj, tags::GANTRY_DETECTOR_TILT),
        spacing_between_slices: float(obj, tags::SPACING_BETWEEN_SLICES),
        mosaic_images: siemens_mosaic_count(obj),
        ..Default::default()
    };
    if h.acquisition_date.is_none() || h.acquisition_time.is_none() {
        // Enhanced objects carry Acquisition DateTime instead.
        if let Some(dt) = text(obj, tags::ACQUISITION_DATE_TIME) {
            if h.acquisition_date.is_none() && dt.len() >= 8 {
                h.acquisition_date = dt.get(..8).map(str::to_string);
            }
            if h.acquisition_time.is_none() && dt.len() > 8 {
                h.acquisition_time = dt.get(8..).map(str::to_string);
            }
        }
    }
    h.frames = frames(obj, h.number_of_frames as usize);
    Ok(h)
}

/// NumberOfFrames (1 when absent or empty); a value that is not a positive integer, or over `max_frames`, is an
/// error.
fn number_of_frames(path: &Path, obj: &InMemDicomObject, limits: &Limits) -> Result<u32, DicomError> {
    let Some(t) = text(obj, tags::NUMBER_OF_FRAMES) else { return Ok(1) };
    let n = int(obj, tags::NUMBER_OF_FRAMES).filter(|&n| n >= 1).ok_or_else(|| DicomError::Inconsistent {
        path: path.to_path_buf(),
        reason: format!("NumberOfFrames {t:?} is not a positive integer"),
    })?;
    Limits::check("NumberOfFrames", n as u64, limits.max_frames.min(u32::MAX as u64))
        .map_err(|source| DicomError::Limit { path: path.to_path_buf(), source })?;
    Ok(n as u32)
}

/// Frame geometry: per-frame functional groups first, then shared groups, then top-level attributes.
fn frames(obj: &InMemDicomObject, n: usize) -> Vec<FrameInfo> {
    let top = frame_from(&[obj], None);
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame: &[InMemDicomObject] =
        obj.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|e| e.items()).unwrap_or(&[]);
    if per_frame.is_empty() && shared.is_none() {
        return vec![top; n];
    }
    (0..n)
        .map(|f| {
            let mut groups: Vec<&InMemDicomObject> = Vec::new();
            if let Some(p) = per_frame.get(f) {
                groups.push(p);
            }
            if let Some(s) = shared {
                groups.push(s);
            }
            frame_from(&groups, Some(&top))
        })
        .collect()
}

/// One frame's info from functional-group items (searched in order), falling back to `top`.
fn frame_from(groups: &[&InMemDicomObject], top: Option<&FrameInfo>) -> FrameInfo {
    let seq_attr = |seq, tag, get: &dyn Fn(&InMemDicomObject, dicom_core::Tag) -> Option<Vec<f64>>| {
        groups.iter().find_map(|g| match seq {
            Some(seq) => first_item(g, seq).and_then(|it| get(it, tag)),
            None => get(g, tag),
        })
    };
    let floats = |o: &InMemDicomObject, t| multi_float(o, t);
    let is_top = top.is_none();
    let (pos_seq, ori_seq, meas_seq, pvt_seq) = if is_top {
        (None, None, None, None)
    } else {
        (
            Some(tags::PLANE_POSITION_SEQUENCE),
            Some(tags::PLANE_ORIENTATION_SEQUENCE),
            Some(tags::PIXEL_MEASURES_SEQUENCE),
            Some(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE),
        )
    };
    let fallback = top.cloned().unwrap_or_default();
    let position = seq_attr(pos_seq, tags::IMAGE_POSITION_PATIENT, &floats)
        .and_then(|v| <[f64; 3]>::try_from(v.as_slice()).ok())
        .or(fallback.position);
    let orientation = seq_attr(ori_seq, tags::IMAGE_ORIENTATION_PATIENT, &floats)
        .and_then(|v| <[f64; 6]>::try_from(v.as_slice()).ok())
        .or(fallback.orientation);
    let pixel_spacing = seq_attr(meas_seq, tags::PIXEL_SPACING, &floats)
        .and_then(|v| <[f64; 2]>::try_from(v.as_slice()).ok())
        .or(fallback.pixel_spacing);
    let slice_thickness = seq_attr(meas_seq, tags::SLICE_THICKNESS, &floats)
        .and_then(|v| v.first().copied())
        .or(fallback.slice_thickness);
    let slope = seq_attr(pvt_seq, tags::RESCALE_SLOPE, &floats).and_then(|v| v.first().copied());
    let intercept = seq_attr(pvt_seq, tags::RESCALE_INTERCEPT, &floats).and_then(|v| v.first().copied());
    let (slope, intercept) = match (slope, intercept, top) {
        (None, None, Some(t)) => (t.rescale_slope, t.rescale_intercept),
        (s, i, _) => (s.unwrap_or(1.0), i.unwrap_or(0.0)),
    };
    let content = if is_top { None } else { groups.iter().find_map(|g| first_item(g, tags::FRAME_CONTENT_SEQUENCE)) };
    let echo = if is_top {
        None
    } else {
        groups
            .iter()
            .find_map(|g| first_item(g, tags::MR_ECHO_SEQUENCE).and_then(|e| float(e, tags::EFFECTIVE_ECHO_TIME)))
    };
    FrameInfo {
        position,
        orientation,
        pixel_spacing,
        slice_thickness,
        rescale_slope: if slope.is_finite() && slope != 0.0 { slope } else { 1.0 },
        rescale_intercept: if intercept.is_finite() { intercept } else { 0.0 },
        stack_id: content.and_then(|c| text(c, tags::STACK_ID)),
        in_stack_position: content.and_then(|c| int(c, tags::IN_STACK_POSITION_NUMBER)),
        temporal_index: content.and_then(|c| int(c, tags::TEMPORAL_POSITION_INDEX)),
        echo_time: echo,
    }
}

/// Siemens "NumberOfImagesInMosaic", only when the private creator of group 0019 is `SIEMENS MR HEADER`.
fn siemens_mosaic_count(obj: &InMemDicomObject) -> Option<u32> {
    for block in 0x10u16..=0xFF {
        let creator = text(obj, dicom_core::Tag(0x0019, block))?;
        if creator.trim() == SIEMENS_MR_HEADER_CREATOR {
            let tag = dicom_core::Tag(0x0019, (block << 8) | 0x0A);
            return int(obj, tag).and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0);
        }
    }
    None
}

fn first_item(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    obj.get(tag).and_then(|e| e.items()).and_then(|items| items.first())
}

/// A text value, trimmed of padding; `None` when absent or empty.
pub(crate) fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!s.is_empty()).then(|| s.to_string())
}

fn uid(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    text(obj, tag)
}

pub(crate) fn multi_text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Vec<String> {
    obj.get(tag)
        .and_then(|e| e.to_multi_str().ok().map(|v| v.iter().map(|s| s.trim().to_string()).collect()))
        .unwrap_or_default()
}

pub(crate) fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    let e = obj.get(tag)?;
    e.to_int::<i64>()
        .ok()
        .or_else(|| e.to_float64().ok().filter(|f| f.is_finite() && f.fract() == 0.0).map(|f| f as i64))
}

pub(crate) fn float(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    obj.get(tag)?.to_float64().ok().filter(|f| f.is_finite())
}

fn multi_float(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    (!v.is_empty() && v.iter().all(|f| f.is_finite())).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_its_preamble_reads_as_the_original() {
        // A Part 10 file with the 128-byte preamble cut off (`DICM` at byte 0) is still one a PACS may send:
        // the pre-scan and the parser must both start at the magic, and give the same header.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dicom/series/explicit_vr_le");
        let mut files: Vec<_> = std::fs::read_dir(&dir).expect("series").flatten().map(|e| e.path()).collect();
        files.sort();
        let original = &files[0];
        let bytes = std::fs::read(original).expect("read");
        assert_eq!(&bytes[128..132], b"DICM");
        let tmp = tempfile::tempdir().expect("tempdir");
        let cut = tmp.path().join("cut.dcm");
        std::fs::write(&cut, &bytes[128..]).expect("write");
        let a = read_header(original).expect("original");
        let b = read_header(&cut).expect("without preamble");
        assert_eq!(a.sop_instance_uid, b.sop_instance_uid);
        assert_eq!((a.rows, a.columns), (b.rows, b.columns));
        let (pa, pb) = (a.native_pixels.expect("native"), b.native_pixels.expect("native"));
        assert_eq!(pa.offset, pb.offset + 128, "the pixel offset moves with the cut");
        assert_eq!(pa.len, pb.len);
    }
}
