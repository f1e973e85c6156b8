//! The store's contract on both backends: the same test bodies run against SQLite (a file in a temporary
//! folder) and a real PostgreSQL (a throwaway server, tests/common/postgres.rs; one fresh database per body).
//! Covered: intake (instances, duplicates, quarantine), series (ready, commit, late arrival), jobs (claim, fail,
//! retry, cancel, crash requeue), results and lookup (embeddings with their vectors), synthetic timepoints,
//! deliveries, recovery records, status; and, on PostgreSQL, concurrent first opens (migrations under the
//! advisory lock), operator opens, and calls made from inside a tokio runtime.

mod common;

use std::path::PathBuf;

use ldae::longitudinal::timeline::SyntheticState;
use ldae::store::*;

type Body = fn(&Store);

const BODIES: &[(&str, Body)] = &[
    ("intake", intake),
    ("series", series),
    ("jobs", jobs),
    ("results_and_lookup", results_and_lookup),
    ("synthetic", synthetic),
    ("delivery", delivery),
    ("recovery", recovery),
    ("patient_scans", patient_scans),
];

fn header(sop: &str, series: &str) -> InstanceFacts {
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

fn arrived(name: &str, sha: &str) -> ArrivedFile {
    ArrivedFile {
        path: PathBuf::from(format!("/in/{name}")),
        drop_folder: PathBuf::from("/in"),
        size: 10,
        mtime_ns: 5,
        sha256: sha.into(),
    }
}

fn job(key: &str, series: i64) -> NewJob {
    NewJob {
        key: key.into(),
        series_ref: Some(series),
        payload: Payload::Convert(SeriesJob { content_key: "k".into() }),
        priority: 0,
    }
}

fn lease() -> Lease {
    Lease { owner: "test-owner".into(), secs: 30.0 }
}

const CONVERT: &[JobKind] = &[JobKind::Convert];

fn intake(s: &Store) {
    let a = arrived("a.dcm", "aa");
    assert!(matches!(s.record_instance(&a, &header("1", "S")).unwrap(), Recorded::Instance { reopened: false, .. }));
    assert!(s.is_known_file(&a.path, 10, 5).unwrap());
    assert!(!s.is_known_file(&a.path, 11, 5).unwrap());
    assert!(matches!(
        s.record_instance(&arrived("b.dcm", "aa"), &header("1", "S")).unwrap(),
        Recorded::Duplicate { identical: true, .. }
    ));
    let other = arrived("c.dcm", "cc");
    let Recorded::Duplicate { instance_id, identical: false, stored_path } =
        s.record_instance(&other, &header("1", "S")).unwrap()
    else {
        panic!("expected a differing duplicate")
    };
    assert_eq!(stored_path, "/in/a.dcm");
    let hook = NewJob {
        key: "hook:q".into(),
        series_ref: None,
        payload: Payload::Hook(HookJob { command: "/bin/true".into(), event: serde_json::json!({}) }),
        priority: 0,
    };
    let qid = s
        .record_quarantine(
            &other,
            &PathBuf::from("/q/x"),
            "duplicate",
            "same SOP",
            Some((instance_id, "1", false)),
            &[hook],
        )
        .unwrap();
    assert!(s.job_by_key("hook:q").unwrap().is_some(), "the hook job is enqueued with the quarantine row");
    let st = s.status(10).unwrap();
    assert_eq!((st.instances, st.duplicates, st.quarantined), (1, 1, 1));
    assert_eq!(st.series.len(), 1);
    assert_eq!((st.series[0].patient_key.as_str(), st.series[0].instances), ("id:\\P1", 1));
    let q = s.unfinished_quarantine(&other.path, 10, 5).unwrap().expect("held");
    assert_eq!((q.id, q.reason.as_str(), q.sha256.as_deref()), (qid, "duplicate", Some("cc")));
    assert_eq!(s.quarantine_list(false).unwrap().len(), 1);
    s.quarantine_close(qid, "purged", None).unwrap();
    assert!(s.quarantine_close(qid, "purged", None).is_err(), "closed twice");
    assert!(s.quarantine_list(false).unwrap().is_empty());
    assert_eq!(s.quarantine_get(qid).unwrap().state, "purged");
    assert!(s.quarantine_get(qid + 100).is_err());
    // Files without a PatientID: one patient per study, never one shared patient.
    for (n, study) in ["1.2.10", "1.2.20"].iter().enumerate() {
        let h = InstanceFacts { study_uid: study.to_string(), patient_id: None, ..header(&format!("9.{n}"), study) };
        s.record_instance(&arrived(&format!("n{n}"), &format!("h{n}")), &h).unwrap();
    }
    assert_eq!(s.patient_keys("study:1.2.10").unwrap(), ["study:1.2.10"]);
    assert_eq!(s.find_patients("P1").unwrap().len(), 1);
}

fn series(s: &Store) {
    s.record_instance(&arrived("a", "aa"), &header("1", "S")).unwrap();
    assert_eq!(s.rearm_pending().unwrap(), 1);
    assert!(s.due_series(3600.0).unwrap().is_empty(), "quiet period not over");
    let due = s.due_series(0.0).unwrap();
    assert_eq!(due, vec![(s.series_id("S").unwrap().unwrap(), "quiet".to_string())]);
    let r = s.mark_ready(due[0].0, "quiet", |r| vec![job(&format!("convert:{}", r.content_key), r.id)]).unwrap();
    let r = r.expect("ready");
    assert_eq!(r.content_key.len(), 64);
    assert!(s.mark_ready(r.id, "quiet", |_| panic!("not called")).unwrap().is_none());
    assert!(!s.enqueue(&job(&format!("convert:{}", r.content_key), r.id)).unwrap(), "same key: no new job");
    assert!(s.request_commit("S").unwrap_err().to_string().contains("already committed"));
    assert!(s.request_commit("nope").unwrap_err().to_string().contains("not in the store"));
    let rec = s.record_instance(&arrived("b", "bb"), &header("2", "S")).unwrap();
    assert!(matches!(rec, Recorded::Instance { reopened: true, .. }));
    s.request_commit("S").unwrap();
    assert_eq!(s.due_series(3600.0).unwrap(), vec![(r.id, "commit".to_string())]);
    let r2 = s.mark_ready(r.id, "commit", |_| vec![]).unwrap().expect("ready again");
    assert_ne!(r.content_key, r2.content_key);
    assert_eq!(r2.instance_count, 2);
    let f = s.series_files(r.id).unwrap();
    assert_eq!((f.state.as_str(), f.files.len(), f.patient_key.as_str()), ("ready", 2, "id:\\P1"));
    assert_eq!(f.content_key.as_deref(), Some(r2.content_key.as_str()));
    s.instance_moved(f.files[0].0, "/archive/a").unwrap();
    assert_eq!(s.series_files(r.id).unwrap().files[0].2, "/archive/a");
    assert!(s.series_files(999).is_err());
}

fn jobs(s: &Store) {
    s.record_instance(&arrived("a", "aa"), &header("1", "S")).unwrap();
    let sid = s.series_id("S").unwrap().unwrap();
    assert!(s.enqueue(&job("j1", sid)).unwrap());
    assert!(!s.enqueue(&job("j1", sid)).unwrap());
    assert!(s.claim(&[], &lease()).unwrap().is_none());
    assert!(s.claim(&[JobKind::Encode], &lease()).unwrap().is_none(), "other kinds only");
    let j = s.claim(&[JobKind::Encode, JobKind::Convert], &lease()).unwrap().expect("claimed");
    assert_eq!((j.attempts, j.series_uid.as_deref(), j.owner.as_deref()), (1, Some("S"), Some("test-owner")));
    assert_eq!(j.payload, Payload::Convert(SeriesJob { content_key: "k".into() }));
    assert!(s.claim(CONVERT, &lease()).unwrap().is_none(), "running jobs are not claimed twice");
    assert_eq!(s.fail(&j, "boom", Some(ldae::store::now() + 100.0)).unwrap(), Recording::Recorded);
    assert!(s.claim(CONVERT, &lease()).unwrap().is_none(), "not due yet");
    assert!(s.next_due_in(CONVERT).unwrap().unwrap() > 50.0);
    assert!(s.next_due_in(&[JobKind::Encode]).unwrap().is_none());
    s.job_retry(j.id).unwrap();
    let j = s.claim(CONVERT, &lease()).unwrap().expect("due after retry");
    assert_eq!(j.attempts, 1, "retry resets the attempt budget");
    assert_eq!(s.fail(&j, "fatal", None).unwrap(), Recording::Recorded);
    let dead = s.jobs_list(Some(JobState::Dead), 10).unwrap();
    assert_eq!((dead.len(), dead[0].last_error.as_deref()), (1, Some("fatal")));
    assert_eq!(s.jobs_list(None, 10).unwrap().len(), 1);
    assert!(s.job_cancel(j.id).unwrap_err().to_string().contains("dead"));
    assert!(s.job_retry(999).unwrap_err().to_string().contains("999"));
    let st = s.status(10).unwrap();
    assert_eq!(st.last_errors.len(), 1);
    assert!(st.jobs.iter().any(|c| c.kind == "convert" && c.state == "dead" && c.count == 1), "{:?}", st.jobs);
    // A lost lease: pending again (the loss counted), its stale owner records nothing; lost twice: dead.
    s.job_retry(j.id).unwrap();
    let t = ldae::store::now();
    let stale = s.claim_at(CONVERT, &lease(), t).unwrap().expect("claimed");
    assert_eq!(s.heartbeat_at("test-owner", 30.0, t + 10.0).unwrap(), 1);
    assert_eq!(s.expire_leases_at(t + 20.0, 2).unwrap(), (0, 0), "the heartbeat extended it");
    assert_eq!(s.expire_leases_at(t + 41.0, 2).unwrap(), (1, 0));
    assert_eq!(s.complete_at(&stale, &Completion::default(), t + 42.0).unwrap(), Recording::LeaseLost);
    let j = s.claim_at(CONVERT, &lease(), t + 43.0).unwrap().expect("claimed again");
    assert_eq!(s.running_owners().unwrap(), ["test-owner"]);
    assert_eq!(s.release_owner_at("test-owner", t + 44.0, 2).unwrap(), (0, 1));
    let j = s.job(j.id).unwrap();
    assert_eq!(j.state, "dead", "{j:?}");
    // Cancelled while running: the completion records nothing.
    assert!(s.enqueue(&job("j2", sid)).unwrap());
    let j2 = s.claim(CONVERT, &lease()).unwrap().expect("claimed");
    s.job_cancel(j2.id).unwrap();
    let c = Completion { next: vec![job("j3", sid)], ..Completion::default() };
    assert_eq!(s.complete(&j2, &c).unwrap(), Recording::LeaseLost);
    assert_eq!(s.job(j2.id).unwrap().state, "cancelled");
    assert!(s.job_by_key("j3").unwrap().is_none());
}

/// Store one volume, registration and embedding of `series` (model `demo`); the embedding's id.
fn encoded(s: &Store, sop: &str, series: &str, date: &str, y_sem: Vec<f32>) -> i64 {
    let h = InstanceFacts {
        study_date: Some(date.into()),
        series_description: Some("T1 MPRAGE".into()),
        patient_age_years: Some(68.5),
        study_uid: format!("{series}.0"),
        ..header(sop, series)
    };
    s.record_instance(&arrived(sop, sop), &h).unwrap();
    let series_ref = s.series_id(series).unwrap().unwrap();
    s.enqueue(&job(&format!("c-{series}"), series_ref)).unwrap();
    let j = s.claim(CONVERT, &lease()).unwrap().expect("claimed");
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
            transform_path: format!("/o/{series}-t.txt"),
            model_input_path: format!("/o/{series}-m.nii.gz"),
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
            y_sem,
        }),
        snapshot: Some((series_ref, "{\"k\":1}".into())),
        series: Some(SeriesUpdate {
            series_ref,
            content_key: "never-this".into(),
            state: "encoded".into(),
            note: None,
            finished: true,
        }),
        ..Completion::default()
    };
    assert_eq!(s.complete(&j, &c).unwrap(), Recording::Recorded);
    s.embeddings_of_series(series, false).unwrap()[0].id
}

fn results_and_lookup(s: &Store) {
    let y = vec![1.0, -2.5, 3.0e-7, f32::MAX];
    let id = encoded(s, "9.1", "1.2.4", "20190314", y.clone());
    assert_eq!(s.volumes_of("1.2.4").unwrap().len(), 1);
    let rows = s.embeddings("demo", &EmbeddingFilter::default(), true).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.id, id);
    assert_eq!(r.y_sem, y, "the vector's bytes survive the store exactly");
    assert_eq!((r.date.as_deref(), r.age, r.steps), (Some("20190314"), Some(68.5), Some(10)));
    assert_eq!((r.description.as_deref(), r.patient_key.as_str()), (Some("T1 MPRAGE"), "id:\\P1"));
    assert!(s.embeddings("demo", &EmbeddingFilter::default(), false).unwrap()[0].y_sem.is_empty());
    assert!(s.embeddings("other", &EmbeddingFilter::default(), true).unwrap().is_empty());
    let late = EmbeddingFilter { since: Some("20200101".into()), ..Default::default() };
    assert!(s.embeddings("demo", &late, false).unwrap().is_empty());
    assert_eq!(s.embeddings_generation("demo").unwrap(), EmbeddingsGeneration { count: 1, max_id: id });
    assert_eq!(s.embeddings_generation("none").unwrap(), EmbeddingsGeneration { count: 0, max_id: 0 });
    assert_eq!(s.embedding_models().unwrap(), vec![("demo".to_string(), 1)]);
    assert_eq!(s.series_snapshot("1.2.4").unwrap().as_deref(), Some("{\"k\":1}"));
    assert_eq!(s.series_snapshot("nope").unwrap(), None);
    // The series update named other content: not applied.
    assert_eq!(s.status(10).unwrap().series[0].state, "receiving");
    let st = s.status(10).unwrap();
    assert_eq!((st.series[0].volumes, st.series[0].embeddings), (0, 0), "counted by the current content key only");
    let scan = s.encoded_scan(id).unwrap();
    assert_eq!((scan.series_uid.as_str(), scan.transform_path.as_str()), ("1.2.4", "/o/1.2.4-t.txt"));
    assert!(s.encoded_scan(id + 100).is_err());
}

fn new_synthetic(a: i64, b: i64, key: &str) -> NewSynthetic {
    NewSynthetic {
        patient_key: "id:\\P1".into(),
        content_key: key.into(),
        target_date: "2020-03-16".into(),
        alpha: 0.5,
        from_embedding: a,
        to_embedding: b,
        model_id: "demo".into(),
        model_version: "abc".into(),
        steps: 10,
        seed: 7,
        path: format!("/o/{key}.nii.gz"),
        state: SyntheticState::Written,
        dicom: Some(SyntheticDicom {
            study_uid: "2.25.1".into(),
            series_uid: "2.25.2".into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.4".into(),
            dir: "/outbox/x".into(),
        }),
    }
}

fn synthetic(s: &Store) {
    let a = encoded(s, "9.1", "1.2.1", "20190314", vec![1.0]);
    let b = encoded(s, "9.2", "1.2.2", "20210318", vec![2.0]);
    let (id, inserted) = s.insert_synthetic(&new_synthetic(a, b, "fill1")).unwrap();
    assert!(inserted);
    assert_eq!(s.insert_synthetic(&new_synthetic(a, b, "fill1")).unwrap(), (id, false), "once per content key");
    let row = s.synthetic(id).unwrap().expect("stored");
    assert_eq!((row.from_series_uid.as_deref(), row.to_series_uid.as_deref()), (Some("1.2.1"), Some("1.2.2")));
    assert_eq!((row.state, row.seed, row.alpha), (SyntheticState::Written, Some(7), Some(0.5)));
    assert_eq!(row.dicom_series_uid.as_deref(), Some("2.25.2"));
    assert_eq!(s.synthetic_by_key("fill1").unwrap().map(|r| r.id), Some(id));
    assert!(s.synthetic(id + 100).unwrap().is_none());
    s.set_synthetic_state(id, SyntheticState::Superseded, Some("a newer scan")).unwrap();
    let (acq, syn) = s.timeline_inputs("id:\\P1", "demo").unwrap();
    assert_eq!(acq.len(), 2);
    assert_eq!((syn.len(), syn[0].state), (1, SyntheticState::Superseded), "retired, not deleted");
    assert_eq!(s.synthetic_all(10).unwrap().len(), 1);
    assert_eq!(s.synthetic_of_patient("id:\\P1").unwrap()[0].state_note.as_deref(), Some("a newer scan"));
    assert!(s.set_synthetic_state(id + 100, SyntheticState::Failed, None).is_err());
    assert!(s
        .insert_synthetic(&NewSynthetic { patient_key: "id:\\nobody".into(), ..new_synthetic(a, b, "f2") })
        .is_err());
    assert_eq!(s.patient_key_of_series(s.series_id("1.2.1").unwrap().unwrap()).unwrap(), "id:\\P1");
}

fn delivery(s: &Store) {
    let a = encoded(s, "9.1", "1.2.1", "20190314", vec![1.0]);
    let (id, _) = s.insert_synthetic(&new_synthetic(a, a, "fill1")).unwrap();
    s.record_delivery(id, "deliver:x", "PACS@h:104", "2.25.9.1", 0).unwrap();
    s.record_delivery(id, "deliver:x", "PACS@h:104", "2.25.9.1", 0).unwrap();
    s.record_delivery(id, "deliver:x", "PACS@h:104", "2.25.9.2", 0xB000).unwrap();
    let got = s.delivered_instances("deliver:x", "PACS@h:104").unwrap();
    assert_eq!(got.len(), 2);
    assert!(s.delivered_instances("deliver:x", "OTHER@h:104").unwrap().is_empty());
    let rows = s.deliveries_of(id).unwrap();
    assert_eq!(rows.iter().map(|r| r.status).collect::<Vec<_>>(), [0, 0xB000]);
    let deliver = |key: &str| NewJob {
        key: key.into(),
        series_ref: None,
        payload: Payload::Deliver(DeliverRequest { content_key: "fill1".into(), resend: 0 }),
        priority: 0,
    };
    for k in ["deliver:x", "deliver:x:1", "deliver:x:2", "deliver:xy", "deliver:y"] {
        s.enqueue(&deliver(k)).unwrap();
    }
    assert_eq!(s.jobs_with_key_prefix("deliver", "deliver:x").unwrap(), 3);
    s.synthetic_failed(id, "refused").unwrap();
    assert_eq!(s.synthetic(id).unwrap().unwrap().state, SyntheticState::Failed);
}

fn recovery(s: &Store) {
    let f = arrived("p.dcm", "pp");
    s.parse_begin(&f).unwrap();
    s.parse_begin(&f).unwrap();
    let g = arrived("o.dcm", "oo");
    s.parse_begin(&g).unwrap();
    let left = s.parses_interrupted().unwrap();
    assert_eq!(
        left.iter().map(|p| (p.file.path.clone(), p.crashes)).collect::<Vec<_>>(),
        [(g.path.clone(), 1), (f.path.clone(), 1)]
    );
    assert_eq!(s.parses_interrupted().unwrap()[0].crashes, 2, "a death keeps counting");
    s.parse_end(&f.path).unwrap();
    s.parse_end(&g.path).unwrap();
    assert!(s.parses_interrupted().unwrap().is_empty());
    s.durable_barrier("before_delete", "S").unwrap();
    let qid = s.record_quarantine(&f, &PathBuf::from("/q/p"), "unreadable", "bad", None, &[]).unwrap();
    s.quarantine_begin_requeue(qid, &PathBuf::from("/in/p.dcm")).unwrap();
    assert!(s.quarantine_begin_requeue(qid, &PathBuf::from("/in/p.dcm")).is_err(), "not held any more");
    assert_eq!(s.requeues_unfinished().unwrap(), vec![(qid, "/q/p".to_string(), "/in/p.dcm".to_string())]);
    assert_eq!(s.requeue_landed(&PathBuf::from("/in/elsewhere")).unwrap(), None);
    assert_eq!(s.requeue_landed(&f.path).unwrap(), Some(qid));
    assert!(s.requeues_unfinished().unwrap().is_empty());
    assert_eq!(s.quarantine_get(qid).unwrap().path, "/in/p.dcm");
    s.audit("test_event", "S", &serde_json::json!({"x": 1})).unwrap();
}

fn patient_scans(s: &Store) {
    encoded(s, "9.1", "1.2.1", "20190314", vec![1.0]);
    s.record_instance(&arrived("x", "xx"), &InstanceFacts { study_uid: "1.9".into(), ..header("9.3", "1.2.3") })
        .unwrap();
    let p = s.find_patients("P1").unwrap();
    assert_eq!(p.len(), 1);
    let rows = s.patient_series(&p[0].patient_key, "demo").unwrap();
    assert_eq!(rows.len(), 1, "only series with a volume");
    assert_eq!(rows[0].model_input_path.as_deref(), Some("/o/1.2.1-m.nii.gz"));
    assert!(rows[0].embedding_id.is_some());
    assert!(s.patient_series(&p[0].patient_key, "other").unwrap()[0].embedding_id.is_none());
}

#[test]
fn contract_on_sqlite() {
    for (name, body) in BODIES {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_in(dir.path()).unwrap();
        assert_eq!(s.backend(), Backend::Sqlite);
        eprintln!("sqlite: {name}");
        body(&s);
    }
}

#[test]
fn contract_on_postgresql() {
    let Some(pg) = common::postgres::Postgres::start() else { return };
    for (name, body) in BODIES {
        let url = pg.fresh_database();
        let s = Store::open_postgres(&url).unwrap();
        assert_eq!(s.backend(), Backend::Postgres);
        assert_eq!(s.schema_version().unwrap(), PG_MIGRATIONS.len() as i64);
        eprintln!("postgresql: {name}");
        body(&s);
    }

    // Several processes opening a fresh database at once: the advisory lock lets one migrate.
    let url = pg.fresh_database();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Store::open_postgres(&url).map(|s| s.schema_version().unwrap())
            })
        })
        .collect();
    for h in opens {
        assert_eq!(h.join().unwrap().unwrap(), PG_MIGRATIONS.len() as i64);
    }

    // An operator command never creates the schema, and refuses one newer than it knows.
    let empty = pg.fresh_database();
    let e = Store::open_existing_postgres(&empty).err().expect("no schema: refused").to_string();
    assert!(e.contains("no ldae schema"), "{e}");
    assert!(Store::open_existing_postgres(&url).is_ok());
    {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute("UPDATE schema_version SET version = version + 1").unwrap();
    }
    let e = Store::open_existing_postgres(&url).err().expect("newer schema refused").to_string();
    assert!(e.contains("newer"), "{e}");
    assert!(Store::open_postgres(&url).err().expect("serve refuses it too").to_string().contains("newer"));

    // Called from async code, as the daemon does: the sync client must not panic inside a tokio runtime.
    let url = pg.fresh_database();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let n = rt.block_on(async move {
        let s = Store::open_postgres(&url).unwrap();
        s.record_instance(&arrived("a", "aa"), &header("1", "S")).unwrap();
        let s = std::sync::Arc::new(s);
        let t = tokio::spawn({
            let s = s.clone();
            async move { s.status(10).unwrap().instances }
        });
        t.await.unwrap()
    });
    assert_eq!(n, 1);

    // A wrong URL is one clear error naming the server, without the password.
    let e = Store::open_postgres(&format!("postgresql://ldae:secret@127.0.0.1:{}/missing_db", pg.port))
        .err()
        .expect("no such database")
        .to_string();
    assert!(e.contains("missing_db") && !e.contains("secret"), "{e}");
}

/// A process stopped inside a transaction (SIGSTOP, a hung host) holds its row locks. The other workers must
/// not wait on them without bound (their own leases would run out behind the wait): a lock wait fails after the
/// session's lock limit, the stopped session is ended by the server after its idle-in-transaction limit (its
/// transaction rolled back, its locks gone), and the stopped process, once it runs again, is told its
/// transaction was lost and reconnects on its next statement.
#[test]
fn a_session_stopped_inside_a_transaction_is_ended_and_the_next_statement_reconnects() {
    use ldae::store::sql::postgres::{PgConn, SessionLimits};
    use ldae::store::sql::{Conn, Exec};
    let Some(pg) = common::postgres::Postgres::start() else { return };
    let url = pg.fresh_database();
    let limits = SessionLimits::for_lease(2.0);
    assert_eq!(limits, SessionLimits { lock_ms: 500, idle_in_transaction_ms: 2000 });
    let connect = || {
        let mut c = Conn::Postgres(Box::new(PgConn::connect(&url).unwrap().into()));
        c.set_limits(limits).unwrap();
        c
    };
    let (mut stopped, other) = (connect(), connect());
    other
        .batch("CREATE TABLE leases (id INTEGER PRIMARY KEY, owner TEXT); INSERT INTO leases VALUES (1, 'a')")
        .unwrap();

    let tx = stopped.begin().unwrap();
    assert_eq!(tx.execute("UPDATE leases SET owner = 'stopped' WHERE id = 1", &[]).unwrap(), 1);
    // … and the process stops here, holding the row lock.
    let t = std::time::Instant::now();
    let e = other.execute("UPDATE leases SET owner = 'other' WHERE id = 1", &[]).expect_err("the row is locked");
    let waited = t.elapsed().as_secs_f64();
    assert!(e.to_string().contains("lock timeout"), "{e}");
    assert!((0.45..1.5).contains(&waited), "a lock wait ends after the 0.5 s limit: {waited:.2} s");
    assert!(!e.connection_lost(), "a lock timeout leaves the waiting session alive");

    std::thread::sleep(std::time::Duration::from_secs_f64(2.6));
    // The server ended the stopped session: the lock is gone, the other worker's update goes through …
    assert_eq!(other.execute("UPDATE leases SET owner = 'other' WHERE id = 1", &[]).unwrap(), 1);
    // … and the stopped process, running again, learns that its transaction is lost.
    let e = tx.execute("UPDATE leases SET owner = 'stopped-again' WHERE id = 1", &[]).expect_err("session ended");
    assert!(e.connection_lost(), "{e}");
    drop(tx);
    // Its next statement outside a transaction reconnects (with the same limits) and sees the other's write.
    let owner: Option<String> = stopped.query_value("SELECT owner FROM leases WHERE id = 1", &[]).unwrap();
    assert_eq!(owner.as_deref(), Some("other"));
    let lock: Option<String> = stopped.query_value("SHOW lock_timeout", &[]).unwrap();
    assert_eq!(lock.as_deref(), Some("500ms"), "the limits survive the reconnect");
}
