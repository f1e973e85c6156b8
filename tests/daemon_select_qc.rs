//! Series selection, the QC gate, patient keys and the model digest, through the real `ldae serve` with the
//! shipped template and a copy of the demo model, with the shipped defaults for `[select]` and `[qc]`:
//!
//! - the test series (a whole head) is selected, registered and encoded;
//! - the same series cropped to its lower 34 slices (102 mm: it passes `[select]`) registers, but leaves part of
//!   the template brain outside its field of view: the QC gate holds it as `needs_review`, not encoded;
//! - a CT copy and a copy described as a scout are converted and stored as `skipped`, naming the rule;
//! - those two have no PatientID and are two patients (keyed by their studies), not one "(none)"; the same
//!   PatientID from two issuers is two patients;
//! - the demo weights replaced in place (same size, mtime restored) while the daemon runs: the next series is
//!   encoded by the new weights, under a new model version.

mod daemon_util;

use std::path::Path;

use daemon_util::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;

/// Copy of `src` as instance `index` of series `tag`, with `edit` applied (new Study/Series/SOP UIDs).
fn instance(src: &Path, tag: u32, index: usize, edit: &dyn Fn(&mut dicom_object::DefaultDicomObject)) -> Vec<u8> {
    let mut obj = dicom_object::open_file(src).expect("open test DICOM");
    let sop = format!("2.25.8{tag:04}3{index:04}");
    let ui = |t, v: &str| DataElement::new(t, VR::UI, PrimitiveValue::from(v));
    obj.put(ui(tags::STUDY_INSTANCE_UID, &format!("2.25.8{tag:04}1")));
    obj.put(ui(tags::SERIES_INSTANCE_UID, &format!("2.25.8{tag:04}2")));
    obj.put(ui(tags::SOP_INSTANCE_UID, &sop));
    edit(&mut obj);
    obj.meta_mut().media_storage_sop_instance_uid = sop;
    obj.meta_mut().update_information_group_length();
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("write DICOM");
    out
}

fn uid(tag: u32) -> String {
    format!("2.25.8{tag:04}2")
}

fn drop_series(
    env: &Env,
    tag: u32,
    files: &[std::path::PathBuf],
    edit: &dyn Fn(&mut dicom_object::DefaultDicomObject),
) {
    let dir = env.path(&format!("incoming/s{tag}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (i, f) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.dcm")), instance(f, tag, i, edit)).expect("write");
    }
}

fn patient(id: Option<&'static str>, issuer: Option<&'static str>) -> impl Fn(&mut dicom_object::DefaultDicomObject) {
    move |o| {
        if let Some(id) = id {
            o.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(id)));
        } else {
            o.remove_element(tags::PATIENT_ID);
        }
        if let Some(i) = issuer {
            o.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from(i)));
        }
    }
}

fn series<'a>(st: &'a serde_json::Value, uid: &str) -> Option<&'a serde_json::Value> {
    st["series"].as_array()?.iter().find(|s| s["series_uid"] == uid)
}

#[test]
fn select_skips_qc_holds_patients_stay_apart_and_new_weights_encode_anew() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = Env::with_model(1.0, 0.3);
    // A private copy of the demo model, so its weights can be replaced in place.
    let model = env.path("model");
    std::fs::create_dir_all(&model).expect("mkdir");
    for e in std::fs::read_dir(repo.join("weights/demo")).expect("weights/demo").flatten() {
        std::fs::copy(e.path(), model.join(e.file_name())).expect("copy model");
    }
    let cfg = std::fs::read_to_string(&env.config).expect("config");
    let demo = repo.join("weights/demo").display().to_string();
    assert!(cfg.contains(&demo), "{cfg}");
    std::fs::write(&env.config, cfg.replace(&demo, &model.display().to_string())).expect("config");

    let files = axial_files();
    assert_eq!(files.len(), 46);
    drop_series(&env, 1, &files, &patient(Some("P1"), Some("HOSP_A")));
    drop_series(&env, 2, &files[..34], &patient(Some("P2"), None));
    let ct = |o: &mut dicom_object::DefaultDicomObject| {
        patient(None, None)(o);
        o.put(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CT")));
    };
    drop_series(&env, 3, &files, &ct);
    let scout = |o: &mut dicom_object::DefaultDicomObject| {
        patient(None, None)(o);
        o.put(DataElement::new(tags::SERIES_DESCRIPTION, VR::LO, PrimitiveValue::from("AAHead_Scout_64ch")));
    };
    drop_series(&env, 4, &files, &scout);
    let mut daemon = env.start(0);

    let finished = |st: &serde_json::Value, tags: &[u32]| {
        tags.iter().all(|&t| {
            series(st, &uid(t)).is_some_and(|s| {
                ["encoded", "needs_review", "skipped", "failed", "stored_without_codes"]
                    .contains(&s["state"].as_str().unwrap_or(""))
            })
        })
    };
    let st = wait_for(240.0, || env.status().filter(|st| finished(st, &[1, 2, 3, 4])));
    let Some(st) = st else { panic!("series not finished: {:?}\n{}", env.status(), env.logs()) };
    let state = |t: u32| series(&st, &uid(t)).expect("series").clone();
    let (whole, cropped, ct, scout) = (state(1), state(2), state(3), state(4));
    assert_eq!(whole["state"], "encoded", "{whole}\n{}", env.logs());
    assert_eq!((whole["registrations"].as_i64(), whole["embeddings"].as_i64()), (Some(1), Some(1)));
    assert_eq!(cropped["state"], "needs_review", "{cropped}\n{}", env.logs());
    assert!(cropped["note"].as_str().unwrap_or("").contains("qc.min_brain_coverage"), "{cropped}");
    assert_eq!((cropped["registrations"].as_i64(), cropped["embeddings"].as_i64()), (Some(1), Some(0)));
    for (s, rule) in [(&ct, "select.modalities: modality CT"), (&scout, "select.exclude: SeriesDescription")] {
        assert_eq!(s["state"], "skipped", "{s}");
        assert!(s["note"].as_str().unwrap_or("").contains(rule), "{s}");
        assert_eq!((s["volumes"].as_i64(), s["registrations"].as_i64()), (Some(1), Some(0)), "{s}");
    }

    // The QC numbers are stored; the whole head covers the template brain, the cropped one does not.
    let db = rusqlite::Connection::open(env.path("state/ldae.sqlite")).expect("open db");
    let qc = |t: u32| -> (f64, f64) {
        db.query_row(
            "SELECT r.metric, r.brain_coverage FROM registrations r JOIN volumes v ON v.id = r.volume_ref \
             JOIN series s ON s.id = v.series_ref WHERE s.series_uid = ?1",
            [uid(t)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("registration row")
    };
    let (mi_whole, cov_whole) = qc(1);
    let (mi_cropped, cov_cropped) = qc(2);
    println!(
        "whole: MI {mi_whole:.3}, coverage {cov_whole:.3}; cropped: MI {mi_cropped:.3}, coverage {cov_cropped:.3}"
    );
    assert!(cov_whole >= 0.9 && cov_cropped < 0.9, "{cov_whole} {cov_cropped}");
    assert!(mi_whole >= 0.2, "{mi_whole}");

    // Patients: two ID-less series are two study-keyed patients; P1 of HOSP_A is its own patient.
    assert!(ct["patient_id"].is_null() && scout["patient_id"].is_null());
    assert_eq!(ct["patient_key"], format!("study:2.25.8{:04}1", 3));
    assert_ne!(ct["patient_key"], scout["patient_key"]);
    assert_eq!(whole["patient_key"], "id:HOSP_A\\P1");

    // `ldae jobs` and `ldae status` show where each series ended.
    let (code, out, err) = env.ldae(&["jobs", "list", "--json", "--limit", "200"]);
    assert_eq!(code, 0, "{err}");
    let jobs: serde_json::Value = serde_json::from_str(&out).expect("json");
    let shown = |kind: &str, t: u32| {
        jobs.as_array()
            .expect("array")
            .iter()
            .find(|j| j["kind"] == kind && j["series_uid"] == uid(t))
            .map(|j| j["series_state"].clone())
    };
    assert_eq!(shown("preprocess", 2), Some("needs_review".into()), "{jobs}");
    assert_eq!(shown("convert", 3), Some("skipped".into()), "{jobs}");
    let (code, text, _) = env.ldae(&["status", "--series", "100"]);
    assert_eq!(code, 0);
    assert!(text.contains("needs_review 1") && text.contains("skipped 2"), "{text}");
    let (code, text, _) = env.ldae(&["jobs", "list"]);
    assert_eq!(code, 0);
    assert!(text.contains("(needs_review)") && text.contains("(skipped)"), "{text}");

    // Replace a weights file in place: same size, same mtime, other values. Then a new series (same PatientID
    // from another issuer) is encoded by the new weights, under another model version.
    let w = model.join("decoder.safetensors");
    let mtime = std::fs::metadata(&w).expect("meta").modified().expect("mtime");
    let mut bytes = std::fs::read(&w).expect("read weights");
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&0.0123f32.to_le_bytes());
    std::fs::write(&w, &bytes).expect("write weights");
    std::fs::File::options().write(true).open(&w).expect("open").set_modified(mtime).expect("set mtime");
    drop_series(&env, 5, &files, &patient(Some("P1"), Some("HOSP_B")));
    let st = wait_for(180.0, || env.status().filter(|st| finished(st, &[5])));
    let Some(st) = st else { panic!("series 5 not finished: {:?}\n{}", env.status(), env.logs()) };
    let again = series(&st, &uid(5)).expect("series 5");
    assert_eq!(again["state"], "encoded", "{again}\n{}", env.logs());
    assert_eq!(again["patient_key"], "id:HOSP_B\\P1", "same ID, other issuer: another patient");
    let mut q = db.prepare("SELECT DISTINCT model_version FROM embeddings").expect("prepare");
    let versions: Vec<String> = q.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect();
    assert_eq!(versions.len(), 2, "weights replaced in place must give a new model version: {versions:?}");

    // `ldae timeline`: P1 now names two patients (two issuers), so the bare ID is refused with both keys; each key
    // has its one encoded, dated scan and no gap.
    let (code, _, err) = env.ldae(&["timeline", "P1"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("names 2 patients") && err.contains("id:HOSP_A\\P1") && err.contains("id:HOSP_B\\P1"),
        "{err}"
    );
    let (code, out, err) = env.ldae(&["timeline", "id:HOSP_A\\P1", "--json"]);
    assert_eq!(code, 0, "{err}");
    let t: serde_json::Value = serde_json::from_str(&out).expect("timeline json");
    let points = t["points"].as_array().expect("points");
    assert_eq!(points.len(), 1, "{t}");
    assert_eq!(
        (points[0]["kind"].as_str(), points[0]["series_uid"].as_str()),
        (Some("acquired"), Some(uid(1).as_str()))
    );
    assert!(points[0]["date"].is_string(), "{t}");
    assert_eq!(t["plan"]["fills"].as_array().map(Vec::len), Some(0), "{t}");
    let (code, _, err) = env.ldae(&["timeline", "nobody"]);
    assert_ne!(code, 0);
    assert!(err.contains("no patient \"nobody\""), "{err}");
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());
}
