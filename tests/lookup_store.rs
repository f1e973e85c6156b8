//! The look-ups on a store the real daemon filled: the seven simulated longitudinal sessions (two patients) are
//! encoded by `ldae serve` with the demo model, then
//! - `ldae similar --format jsonl` equals the cosine top-k numpy computes from `ldae export --format npy`
//!   (tests/data/lookup/numpy_topk.py), for every scan as the query and with `--patient`, `--since/--until` and
//!   `--exclude-patient`: same rows in the same order, scores within 5e-7 (measured: 1.4e-7), and `-n` rows
//!   whenever that many pass;
//! - a codes file and a DICOM folder (encoded on the fly) are queries too; bad queries fail naming the scan;
//! - `ldae probe fit` on the store, with labels made from the manifest (age in years, keyed by patient + date;
//!   and the disease stage `late` = two years or more after the patient's baseline, keyed by series UID: it varies
//!   within each patient, so each patient-grouped fold trains on both classes) prints grouped-CV metrics equal to
//!   scikit-learn's on the same export and the same folds (tests/data/probe/sklearn_check.py);
//! - `ldae probe apply` scores stored series UIDs.
//!
//! One daemon run serves every assertion (encoding the seven sessions takes ≈ 20 s in debug). Needs the
//! longitudinal data (tests/data/shared or ../shared) and python3 with numpy and scikit-learn; without them the
//! test skips loudly, or fails under LDAE_REQUIRE_ALL=1 (common::require).

mod common;
mod daemon_util;

use std::path::{Path, PathBuf};

use daemon_util::*;

const SESSIONS: [&str; 7] = [
    "sub-01/ses-20190314",
    "sub-01/ses-20200312",
    "sub-01/ses-20210318",
    "sub-01/ses-20220310",
    "sub-02/ses-20180905",
    "sub-02/ses-20190508",
    "sub-02/ses-20210310",
];

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read session").flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy");
    }
}

fn ok(env: &Env, args: &[&str]) -> String {
    let (code, out, err) = env.ldae(args);
    assert_eq!(code, 0, "ldae {args:?}: {err}");
    out
}

fn python(args: &[&str]) -> String {
    let out = std::process::Command::new("python3").args(args).output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "python3 {args:?}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn lines(s: &str) -> Vec<serde_json::Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// One look-up case: the `ldae similar` arguments and the reference's description of it.
struct Case {
    query: String,
    n: usize,
    patient: Option<&'static str>,
    since: Option<&'static str>,
    until: Option<&'static str>,
    exclude_patient: bool,
}

impl Case {
    fn args(&self) -> Vec<String> {
        let mut a = vec!["similar".into(), self.query.clone(), "-n".into(), self.n.to_string()];
        a.extend(["--format".into(), "jsonl".into()]);
        for (flag, v) in [("--patient", self.patient), ("--since", self.since), ("--until", self.until)] {
            if let Some(v) = v {
                a.extend([flag.to_string(), v.to_string()]);
            }
        }
        if self.exclude_patient {
            a.push("--exclude-patient".into());
        }
        a
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"query": self.query, "n": self.n, "patient": self.patient,
            "since": self.since.map(|d| d.replace('-', "")), "until": self.until.map(|d| d.replace('-', "")),
            "exclude_patient": self.exclude_patient})
    }
}

#[test]
fn similar_export_and_probes_on_a_daemon_filled_store() {
    if !common::python_modules(&["numpy", "sklearn"]) {
        return;
    }
    let Some(manifest) = common::shared_data("testdata/longitudinal/manifest.json") else { return };
    let mut sessions: Vec<PathBuf> = Vec::new();
    for s in SESSIONS {
        let Some(p) = common::shared_data(&format!("testdata/longitudinal/dicom/{s}")) else { return };
        sessions.push(p);
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).expect("manifest")).expect("manifest json");

    // The daemon encodes all seven sessions.
    let env = Env::with_model(1.0, 0.3);
    let started = std::time::Instant::now();
    let mut daemon = env.start(0);
    for (s, src) in SESSIONS.iter().zip(&sessions) {
        copy_dir(src, &env.path(&format!("incoming/{s}")));
    }
    let encoded = |st: &serde_json::Value| {
        st["series"].as_array().is_some_and(|a| a.iter().filter(|s| s["state"] == "encoded").count() == 7)
    };
    let st = wait_for(300.0, || env.status().filter(encoded));
    assert!(st.is_some(), "7 sessions not encoded: {:?}\n{}", env.status(), env.logs());
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());
    eprintln!("daemon encoded 7 sessions in {:.1} s", started.elapsed().as_secs_f64());

    // The export: seven rows, identifiers from the DICOM, the model version on every row.
    let work = env.path("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let stem = work.join("all");
    let out = ok(&env, &["export", "--format", "npy", "-o", stem.to_str().expect("utf-8"), "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&out).expect("export --json");
    assert_eq!(summary["rows"], 7, "{summary}");
    let (npy, csv) = (work.join("all.npy"), work.join("all.csv"));
    let index = std::fs::read_to_string(&csv).expect("index csv");
    let header: Vec<&str> = index.lines().next().expect("header").split(',').collect();
    assert_eq!(&header[..5], ["series_uid", "patient_id", "date", "age", "model"]);
    let rows: Vec<Vec<String>> = index.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows.len(), 7);
    let mut want_uids = Vec::new();
    for sub in manifest["subjects"].as_object().expect("subjects").values() {
        for ses in sub["sessions"].as_array().expect("sessions") {
            let uid = ses["series_instance_uid"].as_str().expect("uid");
            want_uids.push(uid.to_string());
            let r = rows.iter().find(|r| r[0] == uid).unwrap_or_else(|| panic!("{uid} not exported"));
            assert_eq!(r[1], sub["patient_id"].as_str().expect("id"));
            assert_eq!(r[2], ses["date"].as_str().expect("date"));
            assert_eq!(r[3].parse::<f64>().ok(), ses["age_years"].as_f64(), "{r:?}");
            assert!(r[4].starts_with("demo@") && r[4].len() == 5 + 16, "{r:?}");
        }
    }
    assert_eq!(want_uids.len(), 7);
    let uid_of = |sub: &str, date: &str| -> String {
        let p = if sub == "sub-01" { "SIMLDAE01" } else { "SIMLDAE02" };
        rows.iter().find(|r| r[1] == p && r[2] == date).expect("session")[0].clone()
    };

    // similar == numpy, for every query and with each filter.
    let mut cases: Vec<Case> = rows
        .iter()
        .map(|r| Case { query: r[0].clone(), n: 3, patient: None, since: None, until: None, exclude_patient: false })
        .collect();
    let q = uid_of("sub-01", "20190314");
    let c = |n, patient, since, until, exclude_patient| Case {
        query: q.clone(),
        n,
        patient,
        since,
        until,
        exclude_patient,
    };
    cases.push(c(10, None, None, None, false)); // more than there are: the other six
    cases.push(c(2, Some("SIMLDAE02"), None, None, false)); // another patient's two best
    cases.push(c(3, None, None, None, true)); // exactly the other patient's three scans
    cases.push(c(10, None, Some("2020-01-01"), Some("20211231"), false)); // three scans in 2020–2021
    cases.push(c(1, Some("SIMLDAE01"), Some("20210318"), None, false));
    let cases_file = work.join("cases.json");
    std::fs::write(
        &cases_file,
        serde_json::to_string(&cases.iter().map(Case::json).collect::<Vec<_>>()).expect("json"),
    )
    .expect("write cases");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lookup/numpy_topk.py");
    let reference = python(&[
        script,
        npy.to_str().expect("utf-8"),
        csv.to_str().expect("utf-8"),
        cases_file.to_str().expect("utf-8"),
    ]);
    let reference: Vec<Vec<serde_json::Value>> =
        reference.lines().map(|l| serde_json::from_str(l).expect("reference json")).collect();
    assert_eq!(reference.len(), cases.len());
    let mut worst = 0f64;
    for (case, want) in cases.iter().zip(&reference) {
        let args = case.args();
        let got = lines(&ok(&env, &args.iter().map(String::as_str).collect::<Vec<_>>()));
        assert_eq!(got.len(), want.len(), "{args:?}: {got:?} vs numpy {want:?}");
        let want_score = |i: usize| want.get(i).and_then(|w| w["score"].as_f64());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            // The order must match numpy's except between scores tied at f32 precision (a trained model's
            // codes can be nearly collinear: cosines 0.9999989 vs 0.9999988), where ldae's f32 may swap them.
            let s = want_score(i).expect("score");
            // The last rank's tie partner may be just outside the list; its score is still checked below.
            let near = |o: Option<f64>| o.is_some_and(|o| (o - s).abs() < 1e-6);
            let tied = i + 1 == want.len() || near(i.checked_sub(1).and_then(want_score)) || near(want_score(i + 1));
            if !tied {
                assert_eq!(g["series_uid"], w["series_uid"], "{args:?}: {got:?} vs numpy {want:?}");
            }
            let d = (g["score"].as_f64().expect("score") - w["score"].as_f64().expect("score")).abs();
            worst = worst.max(d);
            assert!(d < 5e-7, "{args:?}: score {} vs numpy {}", g["score"], w["score"]);
            assert!(g["model"].as_str().is_some_and(|m| m.starts_with("demo@")), "{g}");
        }
    }
    eprintln!("similar vs numpy: {} cases, largest score difference {worst:.2e}", cases.len());
    let n = |i: usize| reference[reference.len() - 5 + i].len();
    assert_eq!((n(0), n(1), n(2), n(3), n(4)), (6, 2, 3, 3, 1), "filtered counts");
    let cache = env.path("state/lookup");
    let cached: Vec<_> = std::fs::read_dir(&cache).expect("state/lookup").flatten().collect();
    assert_eq!(cached.len(), 1, "one matrix cache beside the database: {cached:?}");

    // A codes file and a DICOM folder as the query: the stored scan itself comes first.
    let codes = rows.iter().find(|r| r[0] == q).map(|r| r[13].clone()).expect("codes path");
    let got = lines(&ok(&env, &["similar", &codes, "-n", "2", "--format", "jsonl"]));
    assert_eq!(got[0]["series_uid"], q.as_str(), "{got:?}");
    assert!((got[0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-6, "{got:?}");
    let folder = sessions[0].to_str().expect("utf-8");
    let got = lines(&ok(&env, &["similar", folder, "-n", "1", "--format", "jsonl"]));
    assert_eq!(got[0]["series_uid"], q.as_str(), "the DICOM folder encoded now finds its stored series: {got:?}");
    assert!((got[0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-5, "{got:?}");

    // Bad queries name what is wrong.
    let (code, _, err) = env.ldae(&["similar", "1.2.3.4.5.6", "--json"]);
    assert_ne!(code, 0);
    assert!(err.contains("1.2.3.4.5.6") && err.contains("no stored series"), "{err}");
    let (code, _, err) = env.ldae(&["similar", &codes, "--exclude-patient"]);
    assert_ne!(code, 0);
    assert!(err.contains("--exclude-patient") && err.contains("stored scan"), "{err}");
    let (code, _, err) = env.ldae(&["similar", &q, "--model", "no-such-model"]);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-model") && err.contains("demo (7)"), "{err}");
    let (code, _, err) = env.ldae(&["similar", &q, "--since", "2020-13-01"]);
    assert_ne!(code, 0);
    assert!(err.contains("2020-13-01"), "{err}");
    let help = ok(&env, &["similar", "--help"]);
    assert!(help.contains("stored series UID") && help.contains("--exclude-patient"), "{help}");

    // Probes on the store against scikit-learn on the export, same folds.
    let mut by_uid = String::from("series_uid,stage\n");
    let mut by_date = String::from("patient_id,date,age\n");
    for sub in manifest["subjects"].as_object().expect("subjects").values() {
        for ses in sub["sessions"].as_array().expect("sessions") {
            let late = ses["years_since_baseline"].as_f64().expect("years") >= 2.0;
            by_uid.push_str(&format!(
                "{},{}\n",
                ses["series_instance_uid"].as_str().expect("uid"),
                if late { "late" } else { "early" }
            ));
            by_date.push_str(&format!(
                "{},{},{}\n",
                sub["patient_id"].as_str().expect("id"),
                ses["date"].as_str().expect("date"),
                ses["age_years"]
            ));
        }
    }
    let (stage, age) = (work.join("stage.csv"), work.join("age.csv"));
    std::fs::write(&stage, by_uid).expect("labels");
    std::fs::write(&age, by_date).expect("labels");
    let checker = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/probe/sklearn_check.py");
    for (labels, target, classes) in [(&stage, "stage", "late,early"), (&age, "age", "-")] {
        let probe = work.join(format!("{target}.safetensors"));
        let mut args = vec!["probe", "fit", "--labels", labels.to_str().expect("utf-8"), "--target", target];
        args.extend(["--lambda", "0.05", "-o", probe.to_str().expect("utf-8"), "--json"]);
        if classes != "-" {
            args.extend(["--classes", classes]);
        }
        let (code, out, err) = env.ldae(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(err.contains("2 patients: 2 folds"), "few patients: one fold each, said so: {err}");
        let rep: serde_json::Value = serde_json::from_str(&out).expect("fit --json");
        assert_eq!(rep["rows"], 7);
        assert_eq!(rep["patients"], 2);
        let report = work.join(format!("{target}.json"));
        std::fs::write(&report, &out).expect("report");
        let p = |x: &PathBuf| x.to_str().expect("utf-8").to_string();
        let cmp = python(&[checker, "--report", &p(&npy), &p(&csv), &p(labels), &p(&report), target, classes, "0.05"]);
        eprintln!("probe {target}: {cmp}");
        let text = ok(&env, &args.iter().filter(|a| **a != "--json").copied().collect::<Vec<_>>());
        assert!(text.contains(" ± ") && text.contains("grouped by patient"), "{text}");
        let scores = lines(&ok(
            &env,
            &["probe", "apply", probe.to_str().expect("utf-8"), &q, &uid_of("sub-02", "20210310"), "--json"],
        ));
        assert_eq!(scores.len(), 2);
        assert_eq!(scores[0]["series_uid"], q.as_str());
        assert!(scores.iter().all(|s| s["score"].as_f64().is_some_and(f64::is_finite)), "{scores:?}");
    }
    let (code, _, err) = env.ldae(&["probe", "apply", work.join("age.safetensors").to_str().expect("utf-8"), "9.9.9"]);
    assert_ne!(code, 0);
    assert!(err.contains("9.9.9"), "{err}");
}
