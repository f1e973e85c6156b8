//! The daemon end to end with the real binary on real files: a series copied in slowly (file by file, some in
//! chunks, into a folder created after start) is taken in, becomes ready after its quiet period, is converted,
//! archived and reported by `ldae status --json`; malformed files end in quarantine with a reason and a sidecar;
//! hooks receive the events; the operator commands work while it runs; SIGTERM stops it cleanly.

mod daemon_util;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use daemon_util::*;

fn series_of<'a>(st: &'a serde_json::Value, uid: &str) -> Option<&'a serde_json::Value> {
    st["series"].as_array()?.iter().find(|s| s["series_uid"] == uid)
}

#[test]
fn series_dropped_slowly_is_converted_archived_and_reported() {
    let hook_out = tempfile::tempdir().expect("tempdir");
    let hook = hook_out.path().join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\ncat >> {}/events.jsonl\n", hook_out.path().display())).expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let env = Env::new(2.0, 0.6, &format!("[hooks]\ncommands = [\"{}\"]\ntimeout_secs = 5.0\n", hook.display()));
    let mut daemon = env.start(0);
    let files = axial_files();
    assert_eq!(files.len(), 46);
    let drop = env.path("incoming/modality-1/study");
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f).expect("read test file");
        let dst = drop.join(f.file_name().expect("name"));
        if i % 7 == 0 {
            write_slowly(&dst, &bytes, 3, Duration::from_millis(150));
        } else {
            std::fs::write(&dst, &bytes).expect("copy");
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    // Bad input: random bytes, a truncated DICOM, an empty file; and a temp name that must be left alone.
    std::fs::write(env.path("incoming/random.dcm"), (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>())
        .expect("write");
    let real = std::fs::read(&files[0]).expect("read");
    std::fs::write(env.path("incoming/truncated.dcm"), &real[..300]).expect("write");
    std::fs::write(env.path("incoming/empty.dcm"), b"").expect("write");
    std::fs::write(env.path("incoming/.partial-upload.dcm.part"), &real).expect("write");

    let uid = "2.25.48328410196769049541763403817621626975";
    let done = wait_for(60.0, || {
        let st = env.status()?;
        let s = series_of(&st, uid)?;
        (s["state"] == "stored_without_codes" && st["quarantined"] == 3).then_some(st)
    });
    let Some(st) = done else { panic!("series not finished in time; status {:?}\n{}", env.status(), env.logs()) };
    let s = series_of(&st, uid).expect("series");
    assert_eq!(s["instances"], 46, "{s}");
    assert_eq!(s["volumes"], 1, "{s}");
    assert_eq!(st["instances"], 46);
    assert_eq!(st["duplicates"], 0);
    assert!(s["note"].as_str().unwrap_or("").contains("without codes"), "{s}");

    // The volume: a real NIfTI with the series' grid.
    let outputs: Vec<_> =
        files_under(&env.path("outputs")).into_iter().filter(|p| p.to_string_lossy().ends_with(".nii.gz")).collect();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let vol = ldae::nifti::read_nifti(&outputs[0]).expect("read output volume");
    let mut shape = vol.shape();
    shape.sort();
    assert_eq!(shape, [46, 48, 60]);

    // Files: instances archived, bad ones quarantined with sidecars, the temp name untouched.
    let archived = wait_for(10.0, || {
        let a = files_under(&env.path("archive"));
        (a.len() == 46).then_some(a)
    })
    .unwrap_or_else(|| panic!("archive incomplete\n{}", env.logs()));
    assert!(archived.iter().all(|p| p.extension().is_some_and(|e| e == "dcm")));
    let left = files_under(&env.path("incoming"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(".partial-upload.dcm.part"));
    let (code, out, err) = env.ldae(&["quarantine", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let q: serde_json::Value = serde_json::from_str(&out).expect("json");
    let q = q.as_array().expect("array");
    assert_eq!(q.len(), 3, "{q:?}");
    for entry in q {
        assert_eq!(entry["reason"], "unreadable", "{entry}");
        let p = std::path::PathBuf::from(entry["path"].as_str().expect("path"));
        assert!(p.exists(), "{p:?}");
        assert!(p.starts_with(env.path("quarantine/unreadable")), "{p:?}");
        let side: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{}.json", p.display())).expect("sidecar"))
                .expect("sidecar json");
        assert_eq!(side["reason"], "unreadable");
        assert!(side["original_path"].as_str().expect("original").contains("incoming/"), "{side}");
        // Content hash + reason only: the original file name is kept in the store and the sidecar, not the path.
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        assert!(name.len() == 16 && name.chars().all(|c| c.is_ascii_hexdigit()), "{p:?}");
        assert_eq!(Some(&name[..]), entry["sha256"].as_str().map(|s| &s[..16]), "{entry}");
    }
    let details: Vec<&str> = q.iter().filter_map(|e| e["detail"].as_str()).collect();
    assert!(details.iter().any(|d| d.contains("empty")), "{details:?}");

    // Operator commands while it runs: jobs list, a bad retry, purge one quarantined file.
    let (code, out, _) = env.ldae(&["jobs", "list", "--json"]);
    assert_eq!(code, 0);
    let jobs: serde_json::Value = serde_json::from_str(&out).expect("json");
    let kinds: Vec<(&str, &str)> = jobs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|j| Some((j["kind"].as_str()?, j["state"].as_str()?)))
        .collect();
    assert!(kinds.contains(&("convert", "done")) && kinds.contains(&("archive", "done")), "{kinds:?}");
    let (code, _, err) = env.ldae(&["jobs", "retry", "99999"]);
    assert_ne!(code, 0);
    assert!(err.contains("99999") && err.contains("does not exist"), "{err}");
    let first = q[0]["id"].as_i64().expect("id").to_string();
    let (code, _, err) = env.ldae(&["quarantine", "purge", &first, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!std::path::Path::new(q[0]["path"].as_str().expect("path")).exists());
    let (code, _, err) = env.ldae(&["quarantine", "purge", &first]);
    assert_ne!(code, 0, "purging twice is an error");
    assert!(err.contains("not held"), "{err}");

    // Requeue: the file goes back to where it came from, is taken in again and (still bad) quarantined anew.
    let second = q[1]["id"].as_i64().expect("id").to_string();
    let (code, out, err) = env.ldae(&["quarantine", "requeue", &second, "--json"]);
    assert_eq!(code, 0, "{err}");
    let back: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(back["path"], q[1]["original_path"]);
    let again = wait_for(20.0, || {
        let (_, out, _) = env.ldae(&["quarantine", "list", "--json", "--all"]);
        let all: serde_json::Value = serde_json::from_str(&out).ok()?;
        let all = all.as_array()?.clone();
        let requeued = all.iter().any(|e| e["id"] == q[1]["id"] && e["state"] == "requeued");
        let held_again = all.iter().any(|e| e["original_path"] == q[1]["original_path"] && e["state"] == "held");
        (requeued && held_again && all.len() == 4).then_some(())
    });
    assert!(again.is_some(), "requeued file not quarantined again\n{}", env.logs());

    // Hooks: series_ready and file_quarantined arrived as JSON lines on stdin.
    let events = wait_for(15.0, || {
        let t = std::fs::read_to_string(hook_out.path().join("events.jsonl")).ok()?;
        let ev: Vec<serde_json::Value> = t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (ev.iter().filter(|e| e["event"] == "file_quarantined").count() == 4
            && ev.iter().any(|e| e["event"] == "series_ready" && e["series_uid"] == uid))
        .then_some(ev)
    });
    assert!(events.is_some(), "hook events missing\n{}", env.logs());

    assert_eq!(terminate(&mut daemon, 20.0), Some(0), "SIGTERM must drain and exit 0\n{}", env.logs());
    // No original file name in the logs: files are named by quarantine id, hash prefix and UIDs.
    let log = std::fs::read_to_string(env.path("serve-0.log")).expect("log");
    for name in ["random.dcm", "truncated.dcm", "empty.dcm", "IM0001", "IM0046", "modality-1"] {
        assert!(!log.contains(name), "the log names the file {name}:\n{log}");
    }
}

#[test]
fn commit_forces_a_quiet_series_and_restart_keeps_it_pending() {
    // A quiet period far longer than the test: only `ldae commit` can make the series ready.
    let env = Env::new(600.0, 0.3, "");
    let mut daemon = env.start(0);
    let files = axial_files();
    let tag = 7;
    std::fs::create_dir_all(env.path("incoming/s")).expect("mkdir");
    for (i, f) in files.iter().take(8).enumerate() {
        std::fs::write(env.path(&format!("incoming/s/{i}.dcm")), rewrite_uids(f, tag, i)).expect("write");
    }
    let uid = series_uid(tag);
    let got = wait_for(30.0, || {
        let st = env.status()?;
        let s = series_of(&st, &uid)?;
        (s["instances"] == 8).then_some(())
    });
    assert!(got.is_some(), "instances not recorded\n{}", env.logs());
    // Restart: the series is still pending (its state lives in SQLite), and nothing is recorded twice.
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
    let mut daemon = env.start(1);
    std::thread::sleep(Duration::from_secs(2));
    let st = env.status().expect("status");
    assert_eq!(series_of(&st, &uid).expect("series")["state"], "receiving");
    assert_eq!(st["instances"], 8);
    let (code, _, err) = env.ldae(&["commit", "2.25.404"]);
    assert_ne!(code, 0);
    assert!(err.contains("2.25.404") && err.contains("not in the store"), "{err}");
    let (code, _, err) = env.ldae(&["commit", &uid]);
    assert_eq!(code, 0, "{err}");
    let done = wait_for(30.0, || {
        let st = env.status()?;
        let s = series_of(&st, &uid)?;
        // An 8-slice slab is converted and stored, and [select] (min_slices) keeps it from registration.
        (s["state"] == "skipped" && s["volumes"] == 1).then_some(s.clone())
    });
    let Some(s) = done else { panic!("commit did not finish the series: {:?}\n{}", env.status(), env.logs()) };
    assert!(s["note"].as_str().unwrap_or("").contains("select.min_slices: 8 slices"), "{s}");
    let (code, _, err) = env.ldae(&["commit", &uid]);
    assert_ne!(code, 0, "committing a finished series is an error");
    assert!(err.contains("already committed"), "{err}");
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
}

#[test]
fn a_series_the_converter_refuses_is_dead_lettered_with_its_reason_and_can_be_retried() {
    let env = Env::new(1.0, 0.3, "");
    let mut daemon = env.start(0);
    // Two slices: fewer than convert.min_slices (3). The converter refuses it; that will not change on retry.
    std::fs::create_dir_all(env.path("incoming/short")).expect("mkdir");
    for (i, f) in axial_files().iter().take(2).enumerate() {
        std::fs::write(env.path(&format!("incoming/short/{i}.dcm")), rewrite_uids(f, 41, i)).expect("write");
    }
    let uid = series_uid(41);
    let failed = wait_for(30.0, || {
        let st = env.status()?;
        let s = series_of(&st, &uid)?.clone();
        (s["state"] == "failed").then_some((st, s))
    });
    let Some((st, s)) = failed else { panic!("series not failed: {:?}\n{}", env.status(), env.logs()) };
    assert!(s["note"].as_str().unwrap_or("").contains("too few slices"), "{s}");
    let err = &st["last_errors"][0];
    assert_eq!(err["kind"], "convert");
    assert_eq!(err["state"], "dead");
    assert_eq!(err["attempts"], 1, "a permanent error is not retried automatically");
    let (code, out, _) = env.ldae(&["jobs", "list", "--state", "dead", "--json"]);
    assert_eq!(code, 0);
    let dead: serde_json::Value = serde_json::from_str(&out).expect("json");
    let id = dead[0]["id"].as_i64().expect("dead job id");
    let (code, _, err) = env.ldae(&["jobs", "retry", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let again = wait_for(20.0, || {
        let st = env.status()?;
        let j = st["last_errors"].as_array()?.iter().find(|j| j["id"] == id)?.clone();
        (j["state"] == "dead" && series_of(&st, &uid)?["state"] == "failed").then_some(())
    });
    assert!(again.is_some(), "retried job did not run again: {:?}", env.status());
    let (code, _, err) = env.ldae(&["jobs", "cancel", &id.to_string()]);
    assert_ne!(code, 0, "a dead job cannot be cancelled");
    assert!(err.contains("dead"), "{err}");
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
}
