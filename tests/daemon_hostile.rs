//! The hostile corpus through the daemon: every file that `tests/hostile/make_dicom.py` and
//! `tests/hostile/make_nifti_pth.py` build is dropped into a running `ldae serve` together with a good series.
//! The daemon must keep running, quarantine each hostile file exactly once with a reason, stay within a memory
//! bound, and still convert, register and encode the good series with the demo model.

mod daemon_util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use daemon_util::*;

/// Build one of the corpora into `out` with python3 (standard library only).
fn make_corpus(script: &str, out: &Path) -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile").join(script);
    let st = Command::new("python3").arg(&script).arg(out).status().expect("python3 (install it: scripts/test.sh)");
    assert!(st.success(), "{} failed", script.display());
    let mut v = files_under(out);
    v.sort();
    assert!(!v.is_empty(), "{} built nothing", script.display());
    v
}

/// Peak resident memory of a live process in KiB (`VmHWM`), from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn hostile_files_are_quarantined_once_and_a_good_series_still_encodes() {
    let env = Env::with_model(2.0, 0.2);
    let staging = env.path("staging");
    let mut hostile = make_corpus("make_dicom.py", &staging.join("dicom"));
    hostile.extend(make_corpus("make_nifti_pth.py", &staging.join("nifti_pth")));
    let mut daemon = env.start(0);

    // The hostile files first (as one folder), then the good series.
    std::fs::rename(&staging, env.path("incoming/hostile")).expect("drop the hostile folder");
    let good = env.path("good");
    std::fs::create_dir_all(&good).expect("mkdir");
    for f in axial_files() {
        std::fs::copy(&f, good.join(f.file_name().expect("name"))).expect("copy");
    }
    std::fs::rename(&good, env.path("incoming/good")).expect("drop the good series");

    let uid = "2.25.48328410196769049541763403817621626975";
    let series = |st: &serde_json::Value| st["series"].as_array()?.iter().find(|s| s["series_uid"] == uid).cloned();
    let done = wait_for(240.0, || {
        assert!(daemon.try_wait().expect("try_wait").is_none(), "the daemon died\n{}", env.logs());
        series(&env.status()?).filter(|s| s["state"] == "encoded" || s["state"] == "failed")
    });
    let Some(s) = done else { panic!("good series not encoded in time: {:?}\n{}", env.status(), env.logs()) };
    assert_eq!(s["state"], "encoded", "{s}\n{}", env.logs());
    assert_eq!(s["embeddings"].as_i64(), Some(1), "{s}");

    // Every hostile file is quarantined, once, with a reason.
    let listed = wait_for(60.0, || {
        let (code, out, _) = env.ldae(&["quarantine", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| code == 0)?;
        let rows = v.as_array()?.clone();
        (rows.len() >= hostile.len()).then_some(rows)
    });
    let Some(rows) = listed else {
        let (_, out, _) = env.ldae(&["quarantine", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let names: Vec<String> = v
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["original_path"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let missing: Vec<String> = hostile
            .iter()
            .filter_map(|h| h.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| !names.iter().any(|p| p.ends_with(&format!("/{n}"))))
            .collect();
        panic!(
            "{} of {} hostile files quarantined; not quarantined: {missing:?}\nstatus: {:?}\n{}",
            names.len(),
            hostile.len(),
            env.status(),
            env.logs()
        )
    };
    assert_eq!(rows.len(), hostile.len(), "each hostile file exactly once: {rows:#?}");
    let mut by_reason: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty() && !r["detail"].as_str().unwrap_or_default().is_empty(), "{r}");
        *by_reason.entry(reason.to_string()).or_default() += 1;
    }
    println!("quarantined by reason: {by_reason:?}");
    // Nothing is left in the drop folder but the (now empty) folders.
    assert!(files_under(&env.path("incoming")).is_empty(), "{:?}", files_under(&env.path("incoming")));

    let peak = peak_rss_kib(daemon.id()).expect("VmHWM");
    println!("daemon peak RSS: {} MiB", peak / 1024);
    // Measured 325 MiB with the demo model and one registration (2-core dev box).
    assert!(peak < 512 * 1024, "daemon peak RSS {} MiB", peak / 1024);
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());
}
