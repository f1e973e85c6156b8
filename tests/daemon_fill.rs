//! Gap filling end to end with the real daemon: two sessions of a simulated patient (three years apart) are
//! dropped; the policy fills the yearly visits between them by itself, `ldae fill` adds one on request (twice:
//! the second time nothing new), a date outside the scans is refused with its reason, and the synthetic
//! DICOM carries its marks, passes dciodvfy and lies on the nearer neighbour's grid and Frame of Reference. Then
//! the session between them arrives and the synthetic timepoints it replaces are superseded (kept) and the visit
//! is filled again from the new neighbours. Needs the longitudinal test series (tests/data/shared), dciodvfy and
//! dcmdump; tests/common `shared_data`/`tool` fail the test under LDAE_REQUIRE_ALL=1 when they are missing.

mod common;
mod daemon_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use daemon_util::*;

fn timeline(env: &Env) -> serde_json::Value {
    let (code, out, err) = env.ldae(&["timeline", "SIMLDAE01", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("timeline json")
}

fn dcmdump(file: &Path, tag: &str) -> String {
    let out = Command::new("dcmdump").args(["-Un", "+P", tag]).arg(file).output().expect("dcmdump");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ldae convert` a folder; the one volume's affine.
fn converted_affine(env: &Env, dir: &Path, name: &str) -> ldae::volume::Affine {
    let out = env.path(&format!("convert-{name}"));
    let (code, _, err) = env.ldae(&["convert", dir.to_str().expect("utf-8"), "-o", out.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let nii: Vec<PathBuf> =
        files_under(&out).into_iter().filter(|p| p.to_string_lossy().ends_with(".nii.gz")).collect();
    assert_eq!(nii.len(), 1, "{nii:?}");
    ldae::nifti::read_nifti(&nii[0]).expect("read converted").affine
}

#[test]
fn gaps_are_filled_marked_on_the_neighbours_grid_and_superseded_by_a_new_scan() {
    let Some(root) = common::shared_data("testdata/longitudinal/dicom/sub-01") else { return };
    if !common::tool("dciodvfy", &["-version"]) || !common::tool("dcmdump", &["--version"]) {
        return;
    }
    let (first, middle, last) = (root.join("ses-20190314"), root.join("ses-20210318"), root.join("ses-20220310"));
    if !middle.is_dir() {
        common::require("testdata/longitudinal/dicom/sub-01/ses-20210318");
        return;
    }
    let env = Env::with_model(1.0, 0.3);
    copy_session(&first, &env.path("incoming/a"));
    copy_session(&last, &env.path("incoming/c"));
    let mut daemon = env.start(0);

    // The policy fills the yearly visits 2020-03-14 and 2021-03-14 (2019-03-14 → 2022-03-10 is 35.9 months).
    let two = wait_for(400.0, || {
        let s = synthetic_list(&env);
        (s.len() >= 2).then_some(s)
    });
    let Some(auto) = two else { panic!("no synthetic timepoints: {:?}\n{}", env.status(), env.logs()) };
    let mut dates: Vec<&str> = auto.iter().filter_map(|s| s["target_date"].as_str()).collect();
    dates.sort();
    assert_eq!(dates, ["2020-03-14", "2021-03-14"], "{auto:?}");
    let t = timeline(&env);
    let kinds: Vec<&str> = t["points"].as_array().expect("points").iter().filter_map(|p| p["kind"].as_str()).collect();
    assert_eq!(kinds, ["acquired", "synthetic", "synthetic", "acquired"], "{t}");
    assert_eq!(t["plan"]["fills"].as_array().map(Vec::len), Some(0), "both gaps are filled: {t}");
    let s2020 = auto.iter().find(|s| s["target_date"] == "2020-03-14").expect("2020");
    let alpha = s2020["alpha"].as_f64().expect("alpha");
    // 2019-03-14 → 2020-03-14: 366 days; 2019-03-14 → 2022-03-10: 1092 days.
    assert!((alpha - 366.0 / 1092.0).abs() < 1e-9, "{alpha}");
    assert_eq!(s2020["state"], "written");

    // Its DICOM: one multi-frame SC, marked, valid, on the grid and in the Frame of Reference of the nearer
    // neighbour: 2019-03-14, 366 days before (2022-03-10 is 726 days after).
    let dir = PathBuf::from(s2020["dicom_dir"].as_str().expect("dicom_dir"));
    let files = files_under(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let sc = &files[0];
    let dump = dcmdump(sc, "0008,001c");
    assert!(dump.contains("YES"), "Synthetic Data: {dump}");
    assert!(dcmdump(sc, "0008,103e").contains("SYNTHETIC"), "SeriesDescription");
    assert!(dcmdump(sc, "0008,0016").contains("1.2.840.10008.5.1.4.1.1.7.3"), "SOP class");
    let out = Command::new("dciodvfy").arg(sc).output().expect("dciodvfy");
    let report = String::from_utf8_lossy(&out.stderr);
    // Debian's 2022 dciodvfy does not know Synthetic Data (0008,001C): that one error line is expected.
    let errors: Vec<&str> =
        report.lines().filter(|l| l.starts_with("Error")).filter(|l| !l.contains("0x0008,0x001c")).collect();
    assert!(errors.is_empty(), "dciodvfy errors:\n{report}");
    let near = &first;
    let for_uid =
        |f: &Path| dcmdump(f, "0020,0052").split('[').nth(1).and_then(|s| s.split(']').next()).map(String::from);
    let src = files_under(near).into_iter().next().expect("a source file");
    assert_eq!(for_uid(sc), for_uid(&src), "Frame of Reference of the nearer neighbour");
    let (syn, acq) = (converted_affine(&env, &dir, "syn"), converted_affine(&env, near, "acq"));
    for r in 0..3 {
        for c in 0..4 {
            assert!((syn.0[r][c] - acq.0[r][c]).abs() < 1e-3, "affine {r},{c}: {:?} vs {:?}", syn.0, acq.0);
        }
    }

    // An explicit request: enqueued once, made, and the same request again adds nothing.
    let (code, out, err) =
        env.ldae(&["fill", "SIMLDAE01", "--date", "2020-09-01", "--wait", "--json", "--timeout", "300"]);
    assert_eq!(code, 0, "{err}\n{}", env.logs());
    let first_run: serde_json::Value = serde_json::from_str(&out).expect("fill json");
    assert_eq!(first_run["enqueued"], true, "{first_run}");
    let id = first_run["synthetic"]["id"].as_i64().expect("synthetic id");
    let sc_bytes = |v: &serde_json::Value| {
        let d = PathBuf::from(v["synthetic"]["dicom_dir"].as_str().expect("dicom_dir"));
        files_under(&d).iter().map(|f| std::fs::read(f).expect("read")).collect::<Vec<_>>()
    };
    let before = sc_bytes(&first_run);
    let (code, out, err) = env.ldae(&["fill", "SIMLDAE01", "--date", "2020-09-01", "--wait", "--json"]);
    assert_eq!(code, 0, "{err}");
    let again: serde_json::Value = serde_json::from_str(&out).expect("fill json");
    assert_eq!((again["enqueued"].as_bool(), again["synthetic"]["id"].as_i64()), (Some(false), Some(id)), "{again}");
    assert_eq!(sc_bytes(&again), before);
    assert_eq!(synthetic_list(&env).len(), 3);
    for (date, why) in [("2023-01-01", "does not extrapolate"), ("2019-04-01", "min_gap_days")] {
        let (code, _, err) = env.ldae(&["fill", "SIMLDAE01", "--date", date]);
        assert_ne!(code, 0, "{date}");
        assert!(err.contains(why), "{date}: {err}");
    }

    // The scan of 2021-03-18 arrives: it is at the 2021-03-14 visit and between the sources of the other two.
    copy_session(&middle, &env.path("incoming/b"));
    let settled = wait_for(400.0, || {
        let s = synthetic_list(&env);
        let superseded = s.iter().filter(|x| x["state"] == "superseded").count();
        (superseded == 3 && s.len() == 4 && s.iter().any(|x| x["state"] == "written")).then_some(s)
    });
    let Some(s) = settled else { panic!("not superseded: {:?}\n{}", synthetic_list(&env), env.logs()) };
    let fresh = s.iter().find(|x| x["state"] == "written").expect("the visit filled again");
    assert_eq!(fresh["target_date"], "2020-03-14");
    let t = timeline(&env);
    let scan_2021 = t["points"]
        .as_array()
        .expect("points")
        .iter()
        .find(|p| p["kind"] == "acquired" && p["date"] == "2021-03-18")
        .map(|p| p["series_uid"].clone());
    assert_eq!(Some(fresh["to_series_uid"].clone()), scan_2021, "new later neighbour: 2021-03-18\n{t}");
    assert_eq!(t["points"].as_array().map(Vec::len), Some(7), "3 acquired + 4 synthetic (3 superseded): {t}");
    let notes: Vec<&str> = s.iter().filter_map(|x| x["state_note"].as_str()).collect();
    assert!(
        notes.iter().any(|n| n.contains("at its visit")) && notes.iter().any(|n| n.contains("between its sources")),
        "{notes:?}"
    );
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());
}
