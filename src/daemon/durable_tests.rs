//! Durability of the daemon's file steps, on a real store, real DICOM files and the real stage and intake code:
//! a cancelled archive job's moves stay recorded, an interrupted requeue is finished (never re-quarantined), and
//! the low-disk check covers every configured folder.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::store::{ArrivedFile, NewJob, Store};

use super::files::{file_stamp, move_file, sha256_file};
use super::intake::{intake_file, Intake};

const AXIAL_UID: &str = "2.25.48328410196769049541763403817621626975";

fn setup(n: usize) -> (tempfile::TempDir, Config, Store, Vec<PathBuf>) {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.paths.incoming = vec![d.path().join("incoming")];
    cfg.paths.state = d.path().join("state");
    cfg.paths.quarantine = d.path().join("quarantine");
    cfg.paths.archive = d.path().join("archive");
    cfg.paths.outputs = d.path().join("outputs");
    let cfg = super::run::resolve_paths(cfg).unwrap();
    let store = Store::open_in(&cfg.paths.state).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/daemon/axial");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&src).unwrap().flatten().map(|e| e.path()).collect();
    names.sort();
    let mut files = Vec::new();
    for (i, f) in names.iter().take(n).enumerate() {
        let dst = cfg.paths.incoming[0].join(format!("IM{i}.dcm"));
        std::fs::copy(f, &dst).unwrap();
        files.push(dst);
    }
    (d, cfg, store, files)
}

fn arrived(cfg: &Config, p: &Path) -> ArrivedFile {
    let (size, mtime_ns) = file_stamp(p).unwrap();
    ArrivedFile {
        path: p.to_path_buf(),
        drop_folder: cfg.paths.incoming[0].clone(),
        size,
        mtime_ns,
        sha256: sha256_file(p).unwrap(),
    }
}

#[test]
fn cancelling_a_running_archive_job_keeps_instance_paths_true() {
    let (_d, cfg, store, files) = setup(3);
    for f in &files {
        let r = intake_file(&store, &cfg, f, &cfg.paths.incoming[0]).unwrap();
        assert!(matches!(r, Intake::Instance { .. }), "{r:?}");
    }
    let id = store.series_id(AXIAL_UID).unwrap().expect("series");
    store
        .mark_ready(id, "commit", |r| {
            vec![NewJob {
                key: format!("archive:{}", r.content_key),
                series_ref: Some(r.id),
                payload: crate::store::Payload::Archive(crate::store::SeriesJob { content_key: r.content_key.clone() }),
                priority: 5,
            }]
        })
        .unwrap()
        .expect("ready");
    let job = store
        .claim(&[crate::store::JobKind::Archive], &crate::store::Lease { owner: "test".into(), secs: 30.0 })
        .unwrap()
        .expect("claimed");
    // The operator cancels it while it runs; the stage still moves the files.
    store.job_cancel(job.id).unwrap();
    let c = super::stages::run_cpu(&store, &cfg, &job).unwrap();
    assert_eq!(store.complete(&job, &c).unwrap(), crate::store::Recording::LeaseLost, "cancelled: not recorded");
    assert_eq!(store.job(job.id).unwrap().state, "cancelled");
    let rows = store.series_files(id).unwrap().files;
    assert_eq!(rows.len(), 3);
    for (_, sop, path, _) in &rows {
        assert!(Path::new(path).is_file(), "instance {sop}: recorded at {path}, which does not exist");
        assert!(path.starts_with(&cfg.paths.archive.display().to_string()), "{path}");
    }
}

#[test]
fn a_requeue_interrupted_after_the_move_back_is_taken_in_not_requarantined() {
    let (_d, cfg, store, files) = setup(2);
    let mut ids = Vec::new();
    for f in &files {
        let (id, held) =
            super::quarantine::quarantine_file(&store, &cfg, &arrived(&cfg, f), "operator_hold", "held", None, &[])
                .unwrap();
        assert!(held.is_file() && !f.exists());
        // Content hash + reason only: the original name stays in the store and the sidecar.
        assert!(!held.to_string_lossy().contains("IM"), "{held:?}");
        ids.push((id, held));
    }
    // File 0: the crash came after "move back" and before "close row".
    let (id0, held0) = &ids[0];
    store.quarantine_begin_requeue(*id0, &files[0]).unwrap();
    move_file(held0, &files[0]).unwrap();
    let r = intake_file(&store, &cfg, &files[0], &cfg.paths.incoming[0]).unwrap();
    assert!(matches!(r, Intake::Instance { .. }), "requeued file must be taken in, got {r:?}");
    assert!(files[0].is_file());
    assert_eq!(store.quarantine_get(*id0).unwrap().state, "requeued");
    // File 1: the crash came before the move: the next start finishes it.
    let (id1, held1) = &ids[1];
    store.quarantine_begin_requeue(*id1, &files[1]).unwrap();
    assert_eq!(super::quarantine::recover_requeues(&store).unwrap(), 1);
    assert!(files[1].is_file() && !held1.exists());
    assert_eq!(store.quarantine_get(*id1).unwrap().state, "requeued");
    let r = intake_file(&store, &cfg, &files[1], &cfg.paths.incoming[0]).unwrap();
    assert!(matches!(r, Intake::Instance { .. }), "{r:?}");
}

#[test]
fn low_disk_looks_at_every_configured_folder() {
    let (_d, mut cfg, _store, _) = setup(0);
    cfg.intake.min_free_mib = u64::MAX;
    let low: Vec<PathBuf> = super::run::low_disk(&cfg).into_iter().map(|(p, _)| p).collect();
    let p = &cfg.paths;
    for want in [&p.incoming[0], &p.state, &p.quarantine, &p.archive, &p.outputs] {
        assert!(low.contains(want), "{want:?} not watched: {low:?}");
    }
    cfg.intake.min_free_mib = 0;
    assert!(super::run::low_disk(&cfg).is_empty());
}
