//! One patient's acquired scans read back for `ldae report`: the patient found by PatientID or patient key, and
//! each stored series of that patient with its volume, model input (template space) and the newest embedding of
//! one model. (Its synthetic scans: `synthetic.rs`.)

use std::collections::BTreeMap;

use super::sql::{params, Exec, SqlError};
use serde::Serialize;

use super::{Store, StoreError};

/// A stored patient: its key and DICOM PatientID (never a name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientRef {
    /// `id:<issuer>\<PatientID>` or `study:<StudyInstanceUID>` (see `patient_key`).
    pub patient_key: String,
    pub patient_id: Option<String>,
    pub issuer: Option<String>,
}

/// One stored series of a patient, with what the pipeline made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientSeries {
    pub series_uid: String,
    pub study_uid: String,
    /// Acquisition date (else the study date), `YYYYMMDD`.
    pub date: Option<String>,
    pub age: Option<f64>,
    pub modality: Option<String>,
    pub description: Option<String>,
    /// The series state (`encoded`, `skipped`, `needs_review`, ...).
    pub state: String,
    /// The converted volume (native grid).
    pub volume_path: String,
    /// The model input in template space, when the series was registered.
    pub model_input_path: Option<String>,
    /// The newest embedding of the model asked for, when the series was encoded by it.
    pub embedding_id: Option<i64>,
    pub model_version: Option<String>,
}

/// Which of a series' rows to keep, larger first: (encoded by the model, registered, embedding id,
/// registration id, volume id).
type Rank = (bool, bool, i64, i64, i64);

impl Store {
    /// The patients whose PatientID or patient key is `patient` (one PatientID from two issuers is two
    /// patients), in key order.
    pub fn find_patients(&self, patient: &str) -> Result<Vec<PatientRef>, StoreError> {
        let conn = self.lock();
        conn.query_map(
            "SELECT patient_key, patient_id, issuer FROM patients WHERE patient_id = ?1 OR patient_key = ?1 \
             ORDER BY patient_key",
            &params![patient],
            |r| Ok(PatientRef { patient_key: r.get(0)?, patient_id: r.get(1)?, issuer: r.get(2)? }),
        )
    }

    /// Every series of the patient `patient_key` that has a volume, in series order. Of several volumes,
    /// registrations or embeddings of one series, the newest is taken, preferring one encoded by `model_id`,
    /// then one registered.
    pub fn patient_series(&self, patient_key: &str, model_id: &str) -> Result<Vec<PatientSeries>, StoreError> {
        let conn = self.lock();
        let rows = conn.query_map(
            "SELECT se.id, se.series_uid, st.study_uid, COALESCE(se.acquisition_date, st.study_date), \
             st.patient_age_years, se.modality, se.description, se.state, v.id, v.path, r.id, r.model_input_path, \
             e.id, e.model_version \
             FROM series se JOIN studies st ON st.id = se.study_ref JOIN patients p ON p.id = st.patient_ref \
             JOIN volumes v ON v.series_ref = se.id \
             LEFT JOIN registrations r ON r.volume_ref = v.id \
             LEFT JOIN embeddings e ON e.registration_ref = r.id AND e.model_id = ?2 \
             WHERE p.patient_key = ?1 ORDER BY se.id",
            &params![patient_key, model_id],
            |r| {
                let (vid, rid, eid): (i64, Option<i64>, Option<i64>) = (r.get(8)?, r.get(10)?, r.get(12)?);
                let rank = (eid.is_some(), rid.is_some(), eid.unwrap_or(0), rid.unwrap_or(0), vid);
                let row = PatientSeries {
                    series_uid: r.get(1)?,
                    study_uid: r.get(2)?,
                    date: r.get(3)?,
                    age: r.get(4)?,
                    modality: r.get(5)?,
                    description: r.get(6)?,
                    state: r.get(7)?,
                    volume_path: r.get(9)?,
                    model_input_path: r.get(11)?,
                    embedding_id: eid,
                    model_version: r.get(13)?,
                };
                Ok::<_, SqlError>((r.get::<i64>(0)?, rank, row))
            },
        )?;
        // (series id) → (rank, row).
        let mut best: BTreeMap<i64, (Rank, PatientSeries)> = BTreeMap::new();
        for (sid, rank, row) in rows {
            if best.get(&sid).is_none_or(|(b, _)| rank > *b) {
                best.insert(sid, (rank, row));
            }
        }
        Ok(best.into_values().map(|(_, row)| row).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::*;

    fn facts(series: &str, date: &str) -> InstanceFacts {
        InstanceFacts {
            sop_uid: format!("{series}.1"),
            series_uid: series.into(),
            study_uid: format!("{series}.0"),
            patient_id: Some("P7".into()),
            issuer_of_patient_id: None,
            modality: Some("MR".into()),
            instance_number: Some(1),
            expected_count: None,
            study_date: Some(date.into()),
            series_description: Some("T1".into()),
            acquisition_date: None,
            patient_age_years: Some(70.0),
        }
    }

    /// Record one instance of `series` and complete a job that stores its volume, optionally its registration
    /// and an embedding of `model`.
    fn stored(s: &Store, series: &str, date: &str, registered: bool, model: Option<&str>) {
        let f = ArrivedFile {
            path: PathBuf::from(format!("/in/{series}")),
            drop_folder: PathBuf::from("/in"),
            size: 1,
            mtime_ns: 1,
            sha256: series.into(),
        };
        s.record_instance(&f, &facts(series, date)).unwrap();
        let sid = s.series_id(series).unwrap().unwrap();
        let key = format!("job-{series}");
        s.enqueue(&NewJob {
            key: key.clone(),
            series_ref: Some(sid),
            payload: crate::store::Payload::Convert(crate::store::SeriesJob { content_key: key.clone() }),
            priority: 0,
        })
        .unwrap();
        let j = s
            .claim(&[crate::store::JobKind::Convert], &crate::store::Lease { owner: "test".into(), secs: 30.0 })
            .unwrap()
            .expect("claimed");
        let vp = format!("/o/{series}.nii.gz");
        let c = Completion {
            volumes: vec![NewVolume {
                series_ref: sid,
                content_key: key.clone(),
                series_key: key,
                file_stem: "v".into(),
                path: vp.clone(),
                sidecar: None,
                sha256: "s".into(),
            }],
            registration: registered.then(|| NewRegistration {
                volume_path: vp.clone(),
                preprocess_hash: "ph".into(),
                transform_path: "/o/t".into(),
                model_input_path: format!("/o/{series}-input.nii.gz"),
                metric: 1.0,
                brain_coverage: 1.0,
            }),
            embedding: model.map(|m| NewEmbedding {
                volume_path: vp.clone(),
                preprocess_hash: "ph".into(),
                model_id: m.into(),
                model_version: "v1".into(),
                path: "/o/c".into(),
                steps: Some(1),
                y_sem: vec![1.0, 2.0],
            }),
            ..Completion::default()
        };
        assert_eq!(s.complete(&j, &c).unwrap(), crate::store::Recording::Recorded);
    }

    #[test]
    fn a_patients_series_with_their_newest_model_input_and_embedding() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_in(dir.path()).unwrap();
        stored(&s, "1.1", "20190314", true, Some("demo"));
        stored(&s, "1.2", "20200312", true, Some("other"));
        stored(&s, "1.3", "20210318", false, None);
        let p = s.find_patients("P7").unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].patient_key, "id:\\P7");
        assert_eq!(s.find_patients("id:\\P7").unwrap(), p);
        assert!(s.find_patients("P8").unwrap().is_empty());
        let rows = s.patient_series(&p[0].patient_key, "demo").unwrap();
        let uids: Vec<&str> = rows.iter().map(|r| r.series_uid.as_str()).collect();
        assert_eq!(uids, ["1.1", "1.2", "1.3"]);
        assert!(rows[0].embedding_id.is_some() && rows[0].model_version.as_deref() == Some("v1"));
        assert_eq!(rows[0].model_input_path.as_deref(), Some("/o/1.1-input.nii.gz"));
        assert_eq!((rows[0].date.as_deref(), rows[0].age), (Some("20190314"), Some(70.0)));
        // Encoded by another model only: registered, but no embedding of "demo".
        assert_eq!((rows[1].embedding_id, rows[1].model_input_path.is_some()), (None, true));
        assert_eq!((rows[2].embedding_id, rows[2].model_input_path.as_deref()), (None, None));
    }
}
