//! Synthetic timepoints as DICOM that nobody can mistake for an acquired scan, and that viewers overlay on the
//! source series.
//!
//! Input: the synthetic [`Volume`] on the grid (and in the Frame of Reference) of the acquired neighbour, that
//! neighbour's [`SourceSnapshot`], references to both source series, and a [`SyntheticRequest`] (model, alpha,
//! dates, steps, seed, code version, creation time from the job record). Output: one series in a folder, as
//! [`SyntheticSopClass::Sc`] (default: Multi-frame Grayscale Word SC with Pixel Measures,
//! Plane Orientation and per-frame Plane Position functional groups and the Frame of Reference) or
//! [`SyntheticSopClass::Mr`] (MR Image Storage, one file per slice). Explicit VR Little Endian. The voxels are
//! the synthetic image or, as [`SyntheticContent::StdDev`], an uncertainty map of the same timepoint (same study,
//! its own series, `SYNTHETIC SD …`).
//!
//! Marks, in both: Synthetic Data (0008,001C) = YES; Image Type `DERIVED\SECONDARY` (MR adds `OTHER`, which
//! dciodvfy demands as value 3); SeriesDescription and StudyDescription starting with `SYNTHETIC`; a plain
//! disclaimer in ImageComments; ContentQualification RESEARCH; a Contributing Equipment item with Purpose of
//! Reference (109100, DCM, "Synthesizing Equipment") naming ldae and the model; Source Image Sequence (121322)
//! over every instance of both sources, Related Series (121323) and the Common Instance Reference module for
//! both; Derivation Description with the method and alpha.
//!
//! **Study choice.** Each synthetic timepoint is a new study of the patient (deterministic StudyInstanceUID,
//! StudyDate = the target date, StudyDescription `SYNTHETIC …`), never a series inside an acquired study: the
//! target date has no acquired study, adding series to a radiologist's signed study would change what was
//! reported, and a separate study sorts at its date in every PACS timeline. Both SOP classes of one timepoint
//! share that study (one series each).
//!
//! **Determinism.** UIDs are [`super::uid`] hashes of the request (model digest, both sources' SOP Instance UIDs,
//! target date, steps, seed, code version, target grid) — never of the output, the clock or a random number;
//! dates and times come from [`SyntheticRequest::created`]; elements are written in tag order. A rerun writes
//! byte-identical files under identical UIDs.

mod common;
pub mod elements;
mod mr;
mod sc;
pub mod scale;

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};
use dicom_dictionary_std::uids;
use dicom_encoding::text::SpecificCharacterSet;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::mem::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};

use super::snapshot::{SeriesRef, SourceSnapshot};
use super::uid::{self, FramedHasher};
use crate::limits::{LimitExceeded, Limits};
use crate::volume::Volume;

pub use scale::{Planes, Scaling};

/// Which SOP class a synthetic series is written as (`[delivery] sop_class`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyntheticSopClass {
    /// Multi-frame Grayscale Word Secondary Capture with functional groups (1.2.840.10008.5.1.4.1.1.7.3).
    #[default]
    Sc,
    /// MR Image Storage, one file per slice (1.2.840.10008.5.1.4.1.1.4).
    Mr,
}

impl SyntheticSopClass {
    /// The SOP Class UID.
    pub fn uid(self) -> &'static str {
        match self {
            SyntheticSopClass::Sc => uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
            SyntheticSopClass::Mr => uids::MR_IMAGE_STORAGE,
        }
    }

    /// The label hashed into the series UID (so the two classes of one timepoint are two series).
    fn kind(self) -> &'static str {
        match self {
            SyntheticSopClass::Sc => "sc",
            SyntheticSopClass::Mr => "mr",
        }
    }
}

/// What the voxels of a synthetic series are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticContent {
    /// The synthetic image itself.
    #[default]
    Image,
    /// The voxel-wise standard deviation over `samples` decodes with independently perturbed noise codes (an
    /// uncertainty map of the same timepoint: same study, its own series).
    StdDev { samples: u32 },
}

impl SyntheticContent {
    /// Added to the series UID's kind, so the map and the image of one timepoint are two series.
    fn kind(self) -> String {
        match self {
            SyntheticContent::Image => String::new(),
            SyntheticContent::StdDev { samples } => format!("-sd{samples}"),
        }
    }
}

/// What was asked for and how it was made (from the fill job's record).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticRequest {
    /// Model identifier (e.g. the weights' name).
    pub model_id: String,
    /// Model version string.
    pub model_version: String,
    /// Digest of the model weights (hex).
    pub model_digest: String,
    /// Interpolation weight: days(earlier → target) / days(earlier → later).
    pub alpha: f64,
    /// The date the synthetic timepoint stands for.
    pub target_date: NaiveDate,
    /// DDIM steps.
    pub steps: u32,
    /// Seed of the decoder's noise.
    pub seed: u64,
    /// ldae's version (or build id).
    pub code_version: String,
    /// When the job created the content (dates/times in the files come from here, never from the clock).
    pub created: NaiveDateTime,
    /// SeriesNumber of the synthetic series.
    pub series_number: i32,
}

/// One source series and the date of its timepoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSide {
    pub series: SeriesRef,
    pub date: NaiveDate,
}

/// The UIDs of a synthetic series (known before anything is written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticUids {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// One per instance, in instance order.
    pub sop_instance_uids: Vec<String>,
}

/// One written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenInstance {
    pub path: PathBuf,
    pub sop_instance_uid: String,
}

/// A written series.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenSeries {
    pub sop_class: SyntheticSopClass,
    pub uids: SyntheticUids,
    pub instances: Vec<WrittenInstance>,
    pub scaling: Scaling,
}

/// Why a series could not be written. Nothing is partially trusted: the caller discards the folder.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("the volume has {count} non-finite voxel(s)")]
    NotFinite { count: usize },
    #[error("the volume's grid cannot be written as DICOM planes: {reason}")]
    Geometry { reason: String },
    #[error("the volume is too large to write: {0}")]
    Limit(#[from] LimitExceeded),
    #[error("the neighbour series {neighbour} is neither of the two sources")]
    NeighbourNotASource { neighbour: String },
    #[error("{path}: cannot write: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot encode: {reason}")]
    Encode { path: PathBuf, reason: String },
}

/// Everything the SOP-class builders share.
pub(crate) struct Ctx<'a> {
    pub volume: &'a Volume,
    pub neighbour: &'a SourceSnapshot,
    pub earlier: &'a SourceSide,
    pub later: &'a SourceSide,
    pub req: &'a SyntheticRequest,
    pub class: SyntheticSopClass,
    pub content: SyntheticContent,
    pub uids: SyntheticUids,
    pub scaling: Scaling,
    pub planes: Planes,
}

/// What one synthetic series is made from.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticInput<'a> {
    /// The synthetic volume, on the neighbour's grid (RAS affine).
    pub volume: &'a Volume,
    /// The acquired neighbour whose grid, Frame of Reference, patient and technique the series takes.
    pub neighbour: &'a SourceSnapshot,
    /// The earlier source (alpha = 0).
    pub earlier: &'a SourceSide,
    /// The later source (alpha = 1).
    pub later: &'a SourceSide,
    pub request: &'a SyntheticRequest,
    /// Image or uncertainty map.
    pub content: SyntheticContent,
}

/// The study UID of a request (shared by both SOP classes of one timepoint).
pub fn study_uid(input: &SyntheticInput) -> String {
    let (req, volume) = (input.request, input.volume);
    let mut h = FramedHasher::new("ldae synthetic study");
    h.text(&req.code_version).text(&req.model_id).text(&req.model_version).text(&req.model_digest);
    h.text(&req.target_date.format("%Y%m%d").to_string());
    h.text(&req.steps.to_string()).text(&req.seed.to_string()).text(&elements::ds(req.alpha));
    for side in [input.earlier, input.later] {
        h.text(&side.series.series_instance_uid).text(&side.date.format("%Y%m%d").to_string());
        let sops: Vec<&str> = side.series.instances.iter().map(|s| s.sop_instance_uid.as_str()).collect();
        h.list(&sops);
    }
    h.text(&input.neighbour.series.series_instance_uid);
    // The target grid: a different grid is a different synthetic series.
    for d in volume.shape() {
        h.part(&(d as u64).to_le_bytes());
    }
    for row in volume.affine.0 {
        for v in row {
            h.part(&v.to_bits().to_le_bytes());
        }
    }
    h.uid()
}

/// The UIDs a request's series gets (no file is touched).
pub fn synthetic_uids(input: &SyntheticInput, class: SyntheticSopClass) -> SyntheticUids {
    let study = study_uid(input);
    let series = uid::series_uid(&study, &format!("{}{}", class.kind(), input.content.kind()));
    let n = match class {
        SyntheticSopClass::Sc => 1,
        SyntheticSopClass::Mr => input.volume.shape()[2],
    };
    let sops = (0..n).map(|i| uid::sop_instance_uid(&series, i)).collect();
    SyntheticUids { study_instance_uid: study, series_instance_uid: series, sop_instance_uids: sops }
}

/// Write the synthetic series into `dir` (created when missing); see the module doc.
///
/// Files are named by index (`SC0001.dcm`, `MR0001.dcm` …), never by patient data, and each is written to a
/// temporary name and renamed, so a crash leaves no half-written `.dcm`.
pub fn write_series(
    dir: &Path,
    input: &SyntheticInput,
    class: SyntheticSopClass,
    limits: &Limits,
) -> Result<WrittenSeries, WriterError> {
    let SyntheticInput { volume, neighbour, earlier, later, request, content } = *input;
    let [ni, nj, nk] = volume.shape();
    limits.voxels(&[ni as u64, nj as u64, nk as u64])?;
    Limits::check("Rows or Columns", ni.max(nj) as u64, u16::MAX as u64)?;
    if class == SyntheticSopClass::Sc {
        Limits::check("NumberOfFrames", nk as u64, limits.max_frames)?;
    }
    for side in [earlier, later] {
        Limits::check("source instances", side.series.instances.len() as u64, limits.max_series_instances)?;
    }
    let nb = &neighbour.series.series_instance_uid;
    if *nb != earlier.series.series_instance_uid && *nb != later.series.series_instance_uid {
        return Err(WriterError::NeighbourNotASource { neighbour: nb.clone() });
    }
    let ctx = Ctx {
        volume,
        neighbour,
        earlier,
        later,
        req: request,
        class,
        content,
        uids: synthetic_uids(input, class),
        scaling: Scaling::of(volume)?,
        planes: Planes::of(volume)?,
    };
    std::fs::create_dir_all(dir).map_err(|e| WriterError::Io { path: dir.to_path_buf(), source: e })?;
    let mut instances = Vec::with_capacity(ctx.uids.sop_instance_uids.len());
    for (k, sop) in ctx.uids.sop_instance_uids.iter().enumerate() {
        // One object at a time: an MR series never holds more than one slice's data set in memory.
        let (name, obj) = match class {
            SyntheticSopClass::Sc => ("SC0001.dcm".to_string(), sc::build(&ctx)),
            SyntheticSopClass::Mr => (format!("MR{:04}.dcm", k + 1), mr::build(&ctx, k)),
        };
        let path = dir.join(name);
        write_file(&path, obj, class.uid(), sop)?;
        instances.push(WrittenInstance { path, sop_instance_uid: sop.clone() });
    }
    Ok(WrittenSeries { sop_class: class, uids: ctx.uids.clone(), instances, scaling: ctx.scaling })
}

/// Implementation Class UID of ldae's writer (fixed) and its version name (≤ 16 characters).
fn implementation() -> (String, String) {
    let version: String = format!("LDAE_{}", crate::VERSION).chars().take(16).collect();
    (uid::uid_of("ldae implementation class", &[]), version)
}

/// Does any text value (at any depth) need more than ASCII?
fn needs_utf8(obj: &InMemDicomObject) -> bool {
    use dicom_core::value::{PrimitiveValue, Value};
    obj.iter().any(|e| match e.value() {
        Value::Sequence(seq) => seq.items().iter().any(needs_utf8),
        // Only text values: formatting Pixel Data as text would cost gigabytes.
        Value::Primitive(PrimitiveValue::Str(s)) => !s.is_ascii(),
        Value::Primitive(PrimitiveValue::Strs(v)) => v.iter().any(|s| !s.is_ascii()),
        _ => false,
    })
}

/// Encode one object (meta group + Explicit VR LE data set) and write it atomically.
fn write_file(path: &Path, mut obj: InMemDicomObject, class: &str, sop: &str) -> Result<(), WriterError> {
    let enc = |reason: String| WriterError::Encode { path: path.to_path_buf(), reason };
    let cs = if needs_utf8(&obj) {
        elements::put_str(
            &mut obj,
            dicom_dictionary_std::tags::SPECIFIC_CHARACTER_SET,
            dicom_core::VR::CS,
            "ISO_IR 192",
        );
        SpecificCharacterSet::ISO_IR_192
    } else {
        SpecificCharacterSet::default()
    };
    let (impl_uid, impl_version) = implementation();
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(sop)
        .implementation_class_uid(impl_uid)
        .implementation_version_name(impl_version)
        .build()
        .map_err(|e| enc(e.to_string()))?;
    let ts = TransferSyntaxRegistry
        .get(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .ok_or_else(|| enc("Explicit VR Little Endian is not registered".into()))?;
    let mut bytes: Vec<u8> = Vec::new();
    bytes.extend_from_slice(&[0u8; 128]);
    bytes.extend_from_slice(b"DICM");
    meta.write(&mut bytes).map_err(|e| enc(e.to_string()))?;
    obj.write_dataset_with_ts_cs(&mut bytes, ts, cs).map_err(|e| enc(super::read::one_line(&e)))?;
    let tmp = path.with_extension("dcm.tmp");
    let io = |e: std::io::Error| WriterError::Io { path: path.to_path_buf(), source: e };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}
