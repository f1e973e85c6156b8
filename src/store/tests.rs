//! Store unit tests on a real SQLite file in a temporary folder.

use std::path::PathBuf;

use super::sql::{params, Exec, SqlError};
use super::*;

pub(super) fn header(sop: &str, series: &str) -> InstanceFacts {
    InstanceFacts {
        sop_uid: sop.into(),
        series_uid: series.into(),
        study_uid: "1.2.3".into(),
        patient_id: Some("P1".into()),
        issuer_of_patient_id: None,
        modality: Some("MR".into()),
        instance_number: Some(1),
        expected_count: None,
        study_date: None,
        series_description: None,
        acquisition_date: None,
        patient_age_years: None,
    }
}

pub(super) fn arrived(name: &str, sha: &str) -> ArrivedFile {
    ArrivedFile {
        path: PathBuf::from(format!("/in/{name}")),
        drop_folder: PathBuf::from("/in"),
        size: 10,
        mtime_ns: 5,
        sha256: sha.into(),
    }
}

pub(super) fn lease() -> Lease {
    Lease { owner: "test-owner".into(), secs: 30.0 }
}

pub(super) fn job(key: &str, series: i64) -> NewJob {
    NewJob {
        key: key.into(),
        series_ref: Some(series),
        payload: Payload::Convert(SeriesJob { content_key: "k".into() }),
        priority: 0,
    }
}

#[test]
fn migrations_apply_once_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    assert_eq!(s.schema_version().unwrap(), SQLITE_MIGRATIONS.len() as i64);
    drop(s);
    let s = Store::open_in(dir.path()).unwrap();
    assert_eq!(s.schema_version().unwrap(), SQLITE_MIGRATIONS.len() as i64);
}

#[test]
fn concurrent_first_opens_migrate_once() {
    // The daemon and `ldae status` may open a fresh database at the same moment: each connection here stands for
    // one process (SQLite locks per connection). All must succeed and agree on the schema.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(&path, b"").unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&path).map(|s| s.schema_version().unwrap())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), SQLITE_MIGRATIONS.len() as i64);
        }
    }
}

#[test]
fn instances_duplicates_and_known_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    let a = arrived("a.dcm", "aa");
    assert!(matches!(s.record_instance(&a, &header("1", "S")).unwrap(), Recorded::Instance { reopened: false, .. }));
    assert!(s.is_known_file(&a.path, 10, 5).unwrap());
    assert!(!s.is_known_file(&a.path, 11, 5).unwrap());
    let same = arrived("b.dcm", "aa");
    assert!(matches!(
        s.record_instance(&same, &header("1", "S")).unwrap(),
        Recorded::Duplicate { identical: true, .. }
    ));
    let other = arrived("c.dcm", "cc");
    let Recorded::Duplicate { instance_id, identical, .. } = s.record_instance(&other, &header("1", "S")).unwrap()
    else {
        panic!("expected a duplicate")
    };
    assert!(!identical);
    let q = s.record_quarantine(
        &other,
        &PathBuf::from("/q/x"),
        "duplicate",
        "same SOP",
        Some((instance_id, "1", false)),
        &[],
    );
    assert!(q.is_ok());
    let st = s.status(10).unwrap();
    assert_eq!((st.instances, st.duplicates, st.quarantined), (1, 1, 1));
    assert!(s.unfinished_quarantine(&other.path, 10, 5).unwrap().is_some());
}

#[test]
fn ready_enqueues_once_and_late_arrival_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    s.record_instance(&arrived("a", "aa"), &header("1", "S")).unwrap();
    let due = s.due_series(0.0).unwrap();
    assert_eq!(due.len(), 1);
    let r = s.mark_ready(due[0].0, "quiet", |r| vec![job(&format!("convert:{}", r.content_key), r.id)]).unwrap();
    let r = r.expect("ready");
    // Marking again does nothing: the series is no longer receiving.
    assert!(s.mark_ready(r.id, "quiet", |_| panic!("not called")).unwrap().is_none());
    assert!(!s.enqueue(&job(&format!("convert:{}", r.content_key), r.id)).unwrap());
    // A late instance reopens the series and changes its content key.
    let rec = s.record_instance(&arrived("b", "bb"), &header("2", "S")).unwrap();
    assert!(matches!(rec, Recorded::Instance { reopened: true, .. }));
    let r2 = s.mark_ready(r.id, "commit", |_| vec![]).unwrap().expect("ready again");
    assert_ne!(r.content_key, r2.content_key);
    assert_eq!(r2.instance_count, 2);
}

#[test]
fn claim_fail_retry_dead_and_operator_retry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    s.record_instance(&arrived("a", "aa"), &header("1", "S")).unwrap();
    let sid = s.series_id("S").unwrap().unwrap();
    assert!(s.enqueue(&job("j1", sid)).unwrap());
    let j = s.claim(&[JobKind::Convert], &lease()).unwrap().expect("claimed");
    assert_eq!(j.attempts, 1);
    assert!(s.claim(&[JobKind::Convert], &lease()).unwrap().is_none(), "running jobs are not claimed twice");
    assert_eq!(s.fail(&j, "boom", Some(now() + 100.0)).unwrap(), Recording::Recorded);
    assert!(s.claim(&[JobKind::Convert], &lease()).unwrap().is_none(), "not due yet");
    assert!(s.next_due_in(&[JobKind::Convert]).unwrap().unwrap() > 50.0);
    s.job_retry(j.id).unwrap();
    let j = s.claim(&[JobKind::Convert], &lease()).unwrap().expect("due after retry");
    assert_eq!(j.attempts, 1, "retry resets the attempt budget");
    assert_eq!(s.fail(&j, "fatal", None).unwrap(), Recording::Recorded);
    let dead = s.jobs_list(Some(JobState::Dead), 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("fatal"));
    assert!(s.job_cancel(j.id).is_err(), "a dead job cannot be cancelled");
    assert!(s.job_retry(999).unwrap_err().to_string().contains("999"));
    // A crash while running (the lease runs out): pending again.
    s.job_retry(j.id).unwrap();
    let _ = s.claim(&[JobKind::Convert], &lease()).unwrap().expect("claimed");
    let t = now() + 31.0;
    assert_eq!(s.expire_leases_at(t, 2).unwrap(), (1, 0));
    assert!(s.claim_at(&[JobKind::Convert], &lease(), t).unwrap().is_some());
    // Lost during a second run (max_crashes = 2): a crash loop, dead-lettered instead of run again.
    assert_eq!(s.expire_leases_at(t + 31.0, 2).unwrap(), (0, 1));
    let j = s.job(j.id).unwrap();
    assert_eq!(j.state, "dead");
    assert!(j.last_error.as_deref().unwrap_or("").contains("lost its worker 2 time(s)"), "{j:?}");
    assert!(s.claim(&[JobKind::Convert], &lease()).unwrap().is_none());
}

#[test]
fn operator_open_neither_creates_nor_migrates() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Store::open_existing_in(dir.path()).is_err(), "no database: an error, not a new one");
    assert!(!dir.path().join(DB_FILE).exists());
    let old = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    old.execute_batch(SQLITE_MIGRATIONS[0].1).unwrap();
    old.pragma_update(None, "user_version", 1).unwrap();
    let e = Store::open_existing_in(dir.path()).err().expect("older schema refused").to_string();
    assert!(e.contains("older") && e.contains("ldae serve"), "{e}");
    let v: i64 = old.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 1, "an operator command must not migrate");
    old.pragma_update(None, "user_version", SQLITE_MIGRATIONS.len() as i64 + 1).unwrap();
    let e = Store::open_existing_in(dir.path()).err().expect("newer schema refused").to_string();
    assert!(e.contains("newer"), "{e}");
}

/// (patient_key, patient_id, issuer) of every patient, by key.
fn patients(s: &Store) -> Vec<(String, Option<String>, Option<String>)> {
    s.lock()
        .query_map("SELECT patient_key, patient_id, issuer FROM patients ORDER BY patient_key", &[], |r| {
            Ok::<_, SqlError>((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
}

#[test]
fn files_without_patient_id_are_never_merged_into_one_patient() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    for (n, study) in ["1.2.10", "1.2.20"].iter().enumerate() {
        let h = InstanceFacts { study_uid: study.to_string(), patient_id: None, ..header(&format!("9.{n}"), study) };
        s.record_instance(&arrived(&format!("n{n}"), &format!("h{n}")), &h).unwrap();
    }
    // A second series of the first study belongs to the same (study-keyed) patient.
    let h = InstanceFacts { study_uid: "1.2.10".into(), patient_id: Some("  ".into()), ..header("9.9", "1.2.11") };
    s.record_instance(&arrived("n9", "h9"), &h).unwrap();
    assert_eq!(
        patients(&s),
        vec![("study:1.2.10".into(), None, None), ("study:1.2.20".into(), None, None)],
        "one patient per study, marked as study-keyed"
    );
    let st = s.status(10).unwrap();
    assert!(st.series.iter().all(|x| x.patient_id.is_none() && x.patient_key.starts_with("study:")), "{st:?}");
}

#[test]
fn issuer_of_patient_id_is_part_of_the_patient_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    let with = |sop: &str, study: &str, issuer: Option<&str>| InstanceFacts {
        study_uid: study.into(),
        patient_id: Some("12345".into()),
        issuer_of_patient_id: issuer.map(str::to_string),
        ..header(sop, &format!("{study}.1"))
    };
    s.record_instance(&arrived("a", "ha"), &with("7.1", "1.3.1", Some("HOSP_A"))).unwrap();
    s.record_instance(&arrived("b", "hb"), &with("7.2", "1.3.2", Some("HOSP_B"))).unwrap();
    s.record_instance(&arrived("c", "hc"), &with("7.3", "1.3.3", Some("HOSP_A"))).unwrap();
    s.record_instance(&arrived("d", "hd"), &with("7.4", "1.3.4", None)).unwrap();
    assert_eq!(
        patients(&s),
        vec![
            ("id:HOSP_A\\12345".into(), Some("12345".into()), Some("HOSP_A".into())),
            ("id:HOSP_B\\12345".into(), Some("12345".into()), Some("HOSP_B".into())),
            ("id:\\12345".into(), Some("12345".into()), None),
        ]
    );
    let conn = s.lock();
    let same: i64 = conn
        .query_row("SELECT COUNT(DISTINCT patient_ref) FROM studies WHERE study_uid IN ('1.3.1', '1.3.3')", &[])
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(same, 1, "same ID, same issuer: one patient");
}

#[test]
fn migration_splits_the_old_shared_none_patient_per_study() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        // A database as the schema before 0006 left it: two ID-less studies merged into "(none)", one real patient.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let before = SQLITE_MIGRATIONS.iter().position(|(n, _)| n.starts_with("0006")).unwrap();
        for (_, sql) in &SQLITE_MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", before as i64).unwrap();
        conn.execute_batch(
            "INSERT INTO patients (id, patient_id, created_at) VALUES (1, '(none)', 1), (2, 'P7', 1);
             INSERT INTO studies (study_uid, patient_ref, created_at) VALUES ('1.9.1', 1, 1), ('1.9.2', 1, 1),
                 ('1.9.3', 2, 1);
             INSERT INTO series (series_uid, study_ref, drop_folder, state, first_seen_at, last_instance_at,
                 content_key) VALUES ('1.9.3.1', 3, '/in', 'ready', 1, 1, 'k');
             INSERT INTO volumes (series_ref, content_key, file_stem, path, sha256, created_at)
                 VALUES (1, 'k', 'v', '/o/v.nii.gz', 'h', 1);",
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(
        patients(&s),
        vec![
            ("id:\\P7".into(), Some("P7".into()), None),
            ("study:1.9.1".into(), None, None),
            ("study:1.9.2".into(), None, None),
        ]
    );
    let conn = s.lock();
    let distinct: i64 = conn
        .query_row("SELECT COUNT(DISTINCT patient_ref) FROM studies WHERE study_uid IN ('1.9.1', '1.9.2')", &[])
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(distinct, 2);
    let series_key: String = conn.query_row("SELECT series_key FROM volumes", &[]).unwrap().get(0).unwrap();
    assert_eq!(series_key, "k", "old volumes keep their series key");
    let fk: i64 = conn.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", &[]).unwrap().get(0).unwrap();
    assert_eq!(fk, 0);
    let on: i64 = conn.query_row("PRAGMA foreign_keys", &[]).unwrap().get(0).unwrap();
    assert_eq!(on, 1, "foreign keys are on again after migrating");
}

#[test]
fn embeddings_read_back_joined_and_filtered_by_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    let h = InstanceFacts {
        study_date: Some("20190314".into()),
        series_description: Some("T1 MPRAGE".into()),
        patient_age_years: Some(68.5),
        ..header("9.1", "1.2.4")
    };
    s.record_instance(&arrived("a", "aa"), &h).unwrap();
    let series_ref: i64 = s.lock().query_row("SELECT id FROM series", &[]).unwrap().get(0).unwrap();
    s.enqueue(&job("c1", series_ref)).unwrap();
    let j = s.claim(&[JobKind::Convert], &lease()).unwrap().expect("claimed");
    let c = Completion {
        volumes: vec![NewVolume {
            series_ref,
            content_key: "vk".into(),
            series_key: "k".into(),
            file_stem: "v".into(),
            path: "/o/v.nii.gz".into(),
            sidecar: None,
            sha256: "s".into(),
        }],
        registration: Some(NewRegistration {
            volume_path: "/o/v.nii.gz".into(),
            preprocess_hash: "ph".into(),
            transform_path: "/o/t.txt".into(),
            model_input_path: "/o/m.nii.gz".into(),
            metric: -0.5,
            brain_coverage: 1.0,
        }),
        embedding: Some(NewEmbedding {
            volume_path: "/o/v.nii.gz".into(),
            preprocess_hash: "ph".into(),
            model_id: "demo".into(),
            model_version: "abc".into(),
            path: "/o/codes.safetensors".into(),
            steps: Some(10),
            y_sem: vec![1.0, -2.5, 3.0],
        }),
        ..Completion::default()
    };
    assert_eq!(s.complete(&j, &c).unwrap(), Recording::Recorded);
    let rows = s.embeddings("demo", &EmbeddingFilter::default(), true).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.series_uid.as_str(), r.patient_id.as_deref(), r.date.as_deref()),
        ("1.2.4", Some("P1"), Some("20190314"))
    );
    assert_eq!((r.age, r.steps, r.description.as_deref()), (Some(68.5), Some(10), Some("T1 MPRAGE")));
    assert_eq!(r.y_sem, vec![1.0, -2.5, 3.0]);
    assert!(s.embeddings("other", &EmbeddingFilter::default(), true).unwrap().is_empty());
    let late = EmbeddingFilter { since: Some("20200101".into()), ..Default::default() };
    assert!(s.embeddings("demo", &late, false).unwrap().is_empty());
    let other = EmbeddingFilter { exclude_patient_key: Some(r.patient_key.clone()), ..Default::default() };
    assert!(s.embeddings("demo", &other, false).unwrap().is_empty());
    assert_eq!(s.embeddings_generation("demo").unwrap(), EmbeddingsGeneration { count: 1, max_id: r.id });
}

/// Record, convert, register and encode one series of patient P1; returns its embedding id.
fn encoded(s: &Store, sop: &str, series: &str, date: &str) -> i64 {
    let h = InstanceFacts { study_date: Some(date.into()), ..header(sop, series) };
    s.record_instance(&arrived(sop, sop), &h).unwrap();
    let series_ref: i64 =
        s.lock().query_row("SELECT id FROM series WHERE series_uid = ?1", &params![series]).unwrap().get(0).unwrap();
    s.enqueue(&job(&format!("c-{series}"), series_ref)).unwrap();
    let j = s.claim(&[JobKind::Convert], &lease()).unwrap().expect("claimed");
    let vol = format!("/o/{series}.nii.gz");
    let c = Completion {
        volumes: vec![NewVolume {
            series_ref,
            content_key: format!("vk{series}"),
            series_key: format!("k{series}"),
            file_stem: "v".into(),
            path: vol.clone(),
            sidecar: None,
            sha256: "s".into(),
        }],
        registration: Some(NewRegistration {
            volume_path: vol.clone(),
            preprocess_hash: "ph".into(),
            transform_path: "/o/t.txt".into(),
            model_input_path: "/o/m.nii.gz".into(),
            metric: 0.7,
            brain_coverage: 1.0,
        }),
        embedding: Some(NewEmbedding {
            volume_path: vol,
            preprocess_hash: "ph".into(),
            model_id: "demo".into(),
            model_version: "abc".into(),
            path: format!("/o/{series}.safetensors"),
            steps: Some(10),
            y_sem: vec![1.0, 2.0],
        }),
        ..Completion::default()
    };
    assert_eq!(s.complete(&j, &c).unwrap(), Recording::Recorded);
    s.lock().query_row("SELECT MAX(id) FROM embeddings", &[]).unwrap().get(0).unwrap()
}

#[test]
fn synthetic_timepoints_are_recorded_once_per_content_key_and_retired_not_deleted() {
    use crate::longitudinal::timeline::SyntheticState;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    let a = encoded(&s, "9.1", "1.2.1", "20190314");
    let b = encoded(&s, "9.2", "1.2.2", "20210318");
    let keys = s.patient_keys("P1").unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(s.patient_keys(&keys[0]).unwrap(), keys);
    assert!(s.patient_keys("nobody").unwrap().is_empty());
    let new = NewSynthetic {
        patient_key: keys[0].clone(),
        content_key: "fill-1".into(),
        target_date: "2020-03-14".into(),
        alpha: 0.498,
        from_embedding: a,
        to_embedding: b,
        model_id: "demo".into(),
        model_version: "abc".into(),
        steps: 10,
        seed: 7,
        path: "/o/synthetic.nii.gz".into(),
        state: SyntheticState::Written,
        dicom: None,
    };
    let (id, inserted) = s.insert_synthetic(&new).unwrap();
    assert!(inserted);
    assert_eq!(s.insert_synthetic(&new).unwrap(), (id, false), "a rerun finds the row");
    let rows = s.synthetic_of_patient(&keys[0]).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.from_series_uid.as_deref(), r.to_series_uid.as_deref()), (Some("1.2.1"), Some("1.2.2")));
    assert_eq!((r.state, r.target_date.as_deref(), r.seed), (SyntheticState::Written, Some("2020-03-14"), Some(7)));
    s.set_synthetic_state(id, SyntheticState::Superseded, Some("scan of 2020-04-01 at its visit")).unwrap();
    let r = s.synthetic(id).unwrap().expect("still there");
    assert_eq!(r.state, SyntheticState::Superseded);
    assert_eq!(r.state_note.as_deref(), Some("scan of 2020-04-01 at its visit"));
    assert!(s.set_synthetic_state(id + 1, SyntheticState::Failed, None).is_err());
    let unknown = NewSynthetic { patient_key: "id:\\nobody".into(), content_key: "fill-2".into(), ..new };
    assert!(matches!(s.insert_synthetic(&unknown), Err(StoreError::NotFound(_))));
    assert_eq!(s.synthetic_all(10).unwrap().len(), 1);
}

#[test]
fn deliveries_are_recorded_once_per_key_peer_and_instance() {
    use crate::longitudinal::timeline::SyntheticState;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    let a = encoded(&s, "9.1", "1.2.1", "20190314");
    let b = encoded(&s, "9.2", "1.2.2", "20210318");
    let key = s.patient_keys("P1").unwrap().remove(0);
    let new = NewSynthetic {
        patient_key: key,
        content_key: "fill:1".into(),
        target_date: "2020-03-14".into(),
        alpha: 0.5,
        from_embedding: a,
        to_embedding: b,
        model_id: "demo".into(),
        model_version: "abc".into(),
        steps: 10,
        seed: 0,
        path: "/o/synthetic.nii.gz".into(),
        state: SyntheticState::Written,
        dicom: None,
    };
    let (id, _) = s.insert_synthetic(&new).unwrap();
    let peer = "ORTHANC@127.0.0.1:4242";
    s.record_delivery(id, "deliver:fill:1", peer, "2.25.1", 0).unwrap();
    s.record_delivery(id, "deliver:fill:1", peer, "2.25.1", 0).unwrap();
    s.record_delivery(id, "deliver:fill:1", peer, "2.25.2", 0xB000).unwrap();
    s.record_delivery(id, "deliver:fill:1:resend-1", peer, "2.25.1", 0).unwrap();
    let done = s.delivered_instances("deliver:fill:1", peer).unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(s.delivered_instances("deliver:fill:1", "OTHER@h:1").unwrap().is_empty());
    let rows = s.deliveries_of(id).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].status, 0xB000);
    s.synthetic_failed(id, "association rejected").unwrap();
    let r = s.synthetic(id).unwrap().unwrap();
    assert_eq!((r.state, r.state_note.as_deref()), (SyntheticState::Failed, Some("association rejected")));
    for k in ["deliver:fill:1", "deliver:fill:1:resend-1", "deliver:fill:10"] {
        let job = NewJob {
            key: k.into(),
            series_ref: None,
            payload: Payload::Deliver(DeliverRequest { content_key: k.into(), resend: 0 }),
            priority: 1,
        };
        s.enqueue(&job).unwrap();
    }
    // The key and its `:`-suffixed resends; `fill:10` is another timepoint.
    assert_eq!(s.jobs_with_key_prefix("deliver", "deliver:fill:1").unwrap(), 2);
    assert_eq!(s.jobs_with_key_prefix("deliver", "deliver:fill:10").unwrap(), 1);
    assert_eq!(s.jobs_with_key_prefix("hook", "deliver:fill:1").unwrap(), 0);
}
