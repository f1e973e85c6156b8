//! What a synthetic series needs from an acquired source series, kept so that writing works after the source
//! files are gone: [`SourceSnapshot`], taken at intake and stored by the store as JSON.
//!
//! It holds the patient module (Patient's Name included — it goes back into the synthetic DICOM for the same
//! hospital, and nowhere else: the `Debug` output redacts it, and ldae never logs it), the study and series
//! identity, the equipment, the Frame of Reference, the MR acquisition attributes a synthetic MR may copy (PS3.3
//! allows acquisition attributes of a Synthetic Data object to "reflect the technique being simulated"), and the
//! sorted SOP Class/Instance UIDs of the source instances (for Source Image Sequence and the references).
//!
//! It is read on the hardened path ([`super::read::open_header_object`]: pre-scan, capped allocations, header
//! only) and bounded: every string is cut to its VR's maximum length (control characters dropped, a backslash
//! only where the VR is multi-valued), multi-valued attributes keep at most [`MAX_VALUES`] values, and the
//! instance list at most `limits.max_series_instances` entries (more is an error, not a silent cut).

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemDicomObject;
use serde::{Deserialize, Serialize};

use super::read::{float, int, multi_text, open_header_object, read_header_with, text, InstanceHeader};
use super::uid::is_valid_uid;
use super::DicomError;
use crate::limits::{LimitExceeded, Limits};

/// Most values a multi-valued attribute (Scanning Sequence, Sequence Variant, …) keeps.
pub const MAX_VALUES: usize = 16;

/// The version of the snapshot's JSON layout (a stored snapshot says which one it is).
pub const SNAPSHOT_FORMAT: u32 = 1;

/// One source instance: SOP Class and Instance UID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SopRef {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
}

/// Patient module (and Patient Study's age). `Debug` never shows the name.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatientModule {
    pub patient_id: Option<String>,
    pub issuer_of_patient_id: Option<String>,
    /// Patient's Name: only for the synthetic DICOM's patient module; never logged.
    pub patient_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    /// PatientAge as given at the source study (`nnnY` …).
    pub age: Option<String>,
}

impl std::fmt::Debug for PatientModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientModule")
            .field("patient_id", &self.patient_id)
            .field("issuer_of_patient_id", &self.issuer_of_patient_id)
            .field("patient_name", &self.patient_name.as_ref().map(|_| "<redacted>"))
            .field("birth_date", &self.birth_date.as_ref().map(|_| "<redacted>"))
            .field("sex", &self.sex)
            .field("age", &self.age)
            .finish()
    }
}

/// General Study identity of the source. `Debug` never shows the referring physician's name.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StudyModule {
    pub study_instance_uid: String,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub accession_number: Option<String>,
    pub referring_physician_name: Option<String>,
    pub study_id: Option<String>,
    pub study_description: Option<String>,
}

impl std::fmt::Debug for StudyModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudyModule")
            .field("study_instance_uid", &self.study_instance_uid)
            .field("study_date", &self.study_date)
            .field("study_time", &self.study_time)
            .field("accession_number", &self.accession_number)
            .field("referring_physician_name", &self.referring_physician_name.as_ref().map(|_| "<redacted>"))
            .field("study_id", &self.study_id)
            .field("study_description", &self.study_description)
            .finish()
    }
}

/// General Series identity of the source, and when it was acquired.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesModule {
    pub series_instance_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub protocol_name: Option<String>,
    pub series_date: Option<String>,
    pub series_time: Option<String>,
    /// AcquisitionDateTime, or AcquisitionDate + AcquisitionTime (`YYYYMMDDHHMMSS…`).
    pub acquisition_date_time: Option<String>,
    pub content_date: Option<String>,
    pub body_part_examined: Option<String>,
    pub patient_position: Option<String>,
}

/// General Equipment of the source (the acquiring scanner).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EquipmentModule {
    pub manufacturer: Option<String>,
    pub model_name: Option<String>,
    pub institution_name: Option<String>,
    pub station_name: Option<String>,
    pub device_serial_number: Option<String>,
    pub software_versions: Vec<String>,
}

/// MR acquisition attributes a synthetic MR copies to describe the technique it emulates (never dates or UIDs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MrAcquisition {
    pub scanning_sequence: Vec<String>,
    pub sequence_variant: Vec<String>,
    pub scan_options: Vec<String>,
    pub mr_acquisition_type: Option<String>,
    pub sequence_name: Option<String>,
    pub repetition_time: Option<f64>,
    pub echo_time: Option<f64>,
    pub inversion_time: Option<f64>,
    pub echo_train_length: Option<i64>,
    pub flip_angle: Option<f64>,
    pub magnetic_field_strength: Option<f64>,
    pub imaged_nucleus: Option<String>,
}

/// Everything the writer needs from one acquired source series (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSnapshot {
    /// [`SNAPSHOT_FORMAT`] when taken.
    pub format: u32,
    pub patient: PatientModule,
    pub study: StudyModule,
    pub series: SeriesModule,
    pub equipment: EquipmentModule,
    pub frame_of_reference_uid: Option<String>,
    pub position_reference_indicator: Option<String>,
    pub mr: MrAcquisition,
    /// The source instances, sorted by SOP Instance UID, each once.
    pub instances: Vec<SopRef>,
}

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("a snapshot needs at least one file of the series")]
    Empty,
    #[error("{path}: SeriesInstanceUID {found} is not the series' {expected}")]
    MixedSeries { path: PathBuf, found: String, expected: String },
    #[error("series {series_uid}: {source}")]
    Limit { series_uid: String, source: LimitExceeded },
    #[error("{path}: {what} {value:?} is not a valid UID")]
    BadUid { path: PathBuf, what: &'static str, value: String },
    #[error(transparent)]
    Dicom(#[from] DicomError),
}

/// Maximum characters of a value of `vr` (PS3.5 6.2), and whether `\` separates values.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Vr {
    Cs,
    Sh,
    Lo,
    Pn,
    Da,
    Tm,
    Dt,
    As,
}

impl Vr {
    fn max_chars(self) -> usize {
        match self {
            Vr::Cs | Vr::Sh | Vr::Tm => 16,
            Vr::Lo | Vr::Pn => 64,
            Vr::Da => 8,
            Vr::Dt => 26,
            Vr::As => 4,
        }
    }
}

/// Drop control characters and backslashes, trim, cut to the VR's length; `None` when nothing is left.
/// A Person Name keeps up to 64 characters per component group (`=`-separated, at most 3).
pub(crate) fn clean(s: &str, vr: Vr) -> Option<String> {
    let kept: String = s.chars().filter(|c| !c.is_control() && *c != '\\').collect();
    let out = match vr {
        Vr::Pn => {
            kept.split('=').take(3).map(|g| g.trim().chars().take(64).collect::<String>()).collect::<Vec<_>>().join("=")
        }
        _ => kept.trim().chars().take(vr.max_chars()).collect(),
    };
    let out = out.trim().trim_end_matches('=').to_string();
    (!out.is_empty()).then_some(out)
}

fn get(obj: &InMemDicomObject, tag: Tag, vr: Vr) -> Option<String> {
    text(obj, tag).and_then(|s| clean(&s, vr))
}

fn get_multi(obj: &InMemDicomObject, tag: Tag, vr: Vr) -> Vec<String> {
    multi_text(obj, tag).iter().filter_map(|s| clean(s, vr)).take(MAX_VALUES).collect()
}

/// The first value of a multi-valued text attribute (for attributes that must be single-valued).
fn first(obj: &InMemDicomObject, tag: Tag, vr: Vr) -> Option<String> {
    get_multi(obj, tag, vr).into_iter().next()
}

fn checked_uid(path: &Path, what: &'static str, value: &str) -> Result<String, SnapshotError> {
    let v = value.trim_end_matches('\0').trim();
    if is_valid_uid(v) || (v.len() <= 64 && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')) {
        // Real scanners write UIDs with leading zeros in a component; they still identify the instance.
        Ok(v.to_string())
    } else {
        Err(SnapshotError::BadUid { path: path.to_path_buf(), what, value: value.chars().take(80).collect() })
    }
}

impl SourceSnapshot {
    /// Read the headers of `paths` (one series) on the hardened path and snapshot them.
    pub fn from_files(paths: &[PathBuf], limits: &Limits) -> Result<SourceSnapshot, SnapshotError> {
        Limits::check("the number of files of a series", paths.len() as u64, limits.max_series_instances)
            .map_err(|source| SnapshotError::Limit { series_uid: "(not yet read)".into(), source })?;
        let mut headers = Vec::with_capacity(paths.len());
        for p in paths {
            headers.push(read_header_with(p, limits)?);
        }
        Self::from_headers(&headers, limits)
    }

    /// Snapshot a series from its already-read headers (the daemon's intake has them): the instance list from
    /// every header, everything else from one representative file (lowest Instance Number, then SOP Instance
    /// UID — independent of file order), re-read on the hardened path.
    pub fn from_headers(headers: &[InstanceHeader], limits: &Limits) -> Result<SourceSnapshot, SnapshotError> {
        let first = headers.first().ok_or(SnapshotError::Empty)?;
        let series_uid = first.series_instance_uid.clone();
        Limits::check("the number of instances of a series", headers.len() as u64, limits.max_series_instances)
            .map_err(|source| SnapshotError::Limit { series_uid: series_uid.clone(), source })?;
        let mut instances = Vec::with_capacity(headers.len());
        for h in headers {
            if h.series_instance_uid != series_uid {
                return Err(SnapshotError::MixedSeries {
                    path: h.path.clone(),
                    found: h.series_instance_uid.clone(),
                    expected: series_uid,
                });
            }
            instances.push(SopRef {
                sop_instance_uid: checked_uid(&h.path, "SOPInstanceUID", &h.sop_instance_uid)?,
                sop_class_uid: checked_uid(&h.path, "SOPClassUID", &h.sop_class_uid)?,
            });
        }
        instances.sort();
        instances.dedup_by(|a, b| a.sop_instance_uid == b.sop_instance_uid);
        let rep = headers
            .iter()
            .min_by(|a, b| {
                (a.instance_number.unwrap_or(i64::MAX), &a.sop_instance_uid)
                    .cmp(&(b.instance_number.unwrap_or(i64::MAX), &b.sop_instance_uid))
            })
            .ok_or(SnapshotError::Empty)?;
        let (obj, _, _) = open_header_object(&rep.path, limits)?;
        let mut snap = Self::from_object(&rep.path, &obj)?;
        if snap.series.series_instance_uid != series_uid {
            return Err(SnapshotError::MixedSeries {
                path: rep.path.clone(),
                found: snap.series.series_instance_uid,
                expected: series_uid,
            });
        }
        snap.instances = instances;
        Ok(snap)
    }

    /// The modules from one parsed data set (instances left empty).
    fn from_object(path: &Path, obj: &InMemDicomObject) -> Result<SourceSnapshot, SnapshotError> {
        let uid_of = |tag: Tag, what: &'static str| -> Result<Option<String>, SnapshotError> {
            text(obj, tag).map(|v| checked_uid(path, what, &v)).transpose()
        };
        let missing = |tag: &'static str| DicomError::MissingTag { path: path.to_path_buf(), tag };
        let acquisition_date_time = get(obj, tags::ACQUISITION_DATE_TIME, Vr::Dt).or_else(|| {
            let d = get(obj, tags::ACQUISITION_DATE, Vr::Da)?;
            let t = get(obj, tags::ACQUISITION_TIME, Vr::Tm).unwrap_or_default();
            clean(&format!("{d}{t}"), Vr::Dt)
        });
        let software_versions = get_multi(obj, tags::SOFTWARE_VERSIONS, Vr::Lo);
        Ok(SourceSnapshot {
            format: SNAPSHOT_FORMAT,
            patient: PatientModule {
                patient_id: get(obj, tags::PATIENT_ID, Vr::Lo),
                issuer_of_patient_id: get(obj, tags::ISSUER_OF_PATIENT_ID, Vr::Lo),
                patient_name: get(obj, tags::PATIENT_NAME, Vr::Pn),
                birth_date: get(obj, tags::PATIENT_BIRTH_DATE, Vr::Da),
                sex: get(obj, tags::PATIENT_SEX, Vr::Cs),
                age: get(obj, tags::PATIENT_AGE, Vr::As),
            },
            study: StudyModule {
                study_instance_uid: uid_of(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?
                    .ok_or_else(|| missing("StudyInstanceUID"))?,
                study_date: get(obj, tags::STUDY_DATE, Vr::Da),
                study_time: get(obj, tags::STUDY_TIME, Vr::Tm),
                accession_number: get(obj, tags::ACCESSION_NUMBER, Vr::Sh),
                referring_physician_name: get(obj, tags::REFERRING_PHYSICIAN_NAME, Vr::Pn),
                study_id: get(obj, tags::STUDY_ID, Vr::Sh),
                study_description: get(obj, tags::STUDY_DESCRIPTION, Vr::Lo),
            },
            series: SeriesModule {
                series_instance_uid: uid_of(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?
                    .ok_or_else(|| missing("SeriesInstanceUID"))?,
                modality: get(obj, tags::MODALITY, Vr::Cs),
                series_number: int(obj, tags::SERIES_NUMBER),
                series_description: get(obj, tags::SERIES_DESCRIPTION, Vr::Lo),
                protocol_name: get(obj, tags::PROTOCOL_NAME, Vr::Lo),
                series_date: get(obj, tags::SERIES_DATE, Vr::Da),
                series_time: get(obj, tags::SERIES_TIME, Vr::Tm),
                acquisition_date_time,
                content_date: get(obj, tags::CONTENT_DATE, Vr::Da),
                body_part_examined: get(obj, tags::BODY_PART_EXAMINED, Vr::Cs),
                patient_position: get(obj, tags::PATIENT_POSITION, Vr::Cs),
            },
            equipment: EquipmentModule {
                manufacturer: get(obj, tags::MANUFACTURER, Vr::Lo),
                model_name: get(obj, tags::MANUFACTURER_MODEL_NAME, Vr::Lo),
                institution_name: get(obj, tags::INSTITUTION_NAME, Vr::Lo),
                station_name: get(obj, tags::STATION_NAME, Vr::Sh),
                device_serial_number: get(obj, tags::DEVICE_SERIAL_NUMBER, Vr::Lo),
                software_versions,
            },
            frame_of_reference_uid: uid_of(tags::FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID")?,
            position_reference_indicator: get(obj, tags::POSITION_REFERENCE_INDICATOR, Vr::Lo),
            mr: MrAcquisition {
                scanning_sequence: get_multi(obj, tags::SCANNING_SEQUENCE, Vr::Cs),
                sequence_variant: get_multi(obj, tags::SEQUENCE_VARIANT, Vr::Cs),
                scan_options: get_multi(obj, tags::SCAN_OPTIONS, Vr::Cs),
                mr_acquisition_type: first(obj, tags::MR_ACQUISITION_TYPE, Vr::Cs),
                sequence_name: get(obj, tags::SEQUENCE_NAME, Vr::Sh),
                repetition_time: float(obj, tags::REPETITION_TIME),
                echo_time: float(obj, tags::ECHO_TIME),
                inversion_time: float(obj, tags::INVERSION_TIME),
                echo_train_length: int(obj, tags::ECHO_TRAIN_LENGTH),
                flip_angle: float(obj, tags::FLIP_ANGLE),
                magnetic_field_strength: float(obj, tags::MAGNETIC_FIELD_STRENGTH),
                imaged_nucleus: get(obj, tags::IMAGED_NUCLEUS, Vr::Sh),
            },
            instances: Vec::new(),
        })
    }

    /// Study, series and instances of this source, for references from a derived series.
    pub fn reference(&self) -> SeriesRef {
        SeriesRef {
            study_instance_uid: self.study.study_instance_uid.clone(),
            series_instance_uid: self.series.series_instance_uid.clone(),
            instances: self.instances.clone(),
        }
    }
}

/// A source series as a derived series references it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesRef {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// Sorted by SOP Instance UID.
    pub instances: Vec<SopRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_caps_and_strips() {
        assert_eq!(clean("  T1\u{0}\u{7}\\MPRAGE ", Vr::Lo).as_deref(), Some("T1MPRAGE"));
        assert_eq!(clean(&"x".repeat(100), Vr::Lo).map(|s| s.len()), Some(64));
        assert_eq!(clean(&"x".repeat(100), Vr::Cs).map(|s| s.len()), Some(16));
        assert_eq!(clean("   ", Vr::Sh), None);
        let pn = clean(&format!("{}={}=c=d", "a".repeat(70), "b"), Vr::Pn).unwrap_or_default();
        assert_eq!(pn, format!("{}=b=c", "a".repeat(64)));
        assert_eq!(clean("Müller^Jörg", Vr::Pn).as_deref(), Some("Müller^Jörg"));
    }

    #[test]
    fn debug_redacts_the_name() {
        let p = PatientModule {
            patient_name: Some("SECRET^NAME".into()),
            birth_date: Some("19500101".into()),
            ..Default::default()
        };
        let d = format!("{p:?}");
        assert!(!d.contains("SECRET") && !d.contains("1950"), "{d}");
        let s = StudyModule { referring_physician_name: Some("DOC^WHO".into()), ..Default::default() };
        assert!(!format!("{s:?}").contains("DOC"));
    }

    #[test]
    fn bad_uids_are_refused() {
        let p = Path::new("f.dcm");
        assert!(checked_uid(p, "SOPInstanceUID", "1.2.3").is_ok());
        assert!(checked_uid(p, "SOPInstanceUID", "1.2.03").is_ok(), "leading zeros from real scanners pass");
        assert!(checked_uid(p, "SOPInstanceUID", "1.2.3\\4").is_err());
        assert!(checked_uid(p, "SOPInstanceUID", &"1".repeat(65)).is_err());
        assert!(checked_uid(p, "SOPInstanceUID", "").is_err());
    }

    #[test]
    fn empty_and_over_limit() {
        assert!(matches!(SourceSnapshot::from_headers(&[], &Limits::default()), Err(SnapshotError::Empty)));
        let h = InstanceHeader { series_instance_uid: "1.2".into(), ..Default::default() };
        let small = Limits { max_series_instances: 1, ..Limits::default() };
        let r = SourceSnapshot::from_headers(&[h.clone(), h], &small);
        assert!(matches!(r, Err(SnapshotError::Limit { .. })), "{r:?}");
    }
}
