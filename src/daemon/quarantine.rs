//! Quarantine: unusable files move to `quarantine/<reason>/<content hash>` with a JSON sidecar beside them,
//! recorded in the store first — durably, so the move never outlives its row — and a crash mid-move is finished on
//! the next scan. The original path lives only in the store and the sidecar, never in the quarantine file name.
//! The operator lists, requeues (recorded as `requeuing` before the move back, closed after) or purges them.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::store::{ArrivedFile, NewJob, QuarantineRow, Store};

use super::files::{move_file, safe_component, unique_path};
use super::DaemonError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io { path: path.to_path_buf(), source }
}

/// The sidecar path of a quarantined file.
pub fn sidecar_of(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.json"))
}

/// Where a file goes: `quarantine/<reason>/<first 16 hex of its SHA-256>` (unique): content and reason only —
/// an original file name may carry a patient's name.
pub fn target_for(root: &Path, f: &ArrivedFile, reason: &str) -> PathBuf {
    let prefix = f.sha256.get(..16).filter(|p| p.chars().all(|c| c.is_ascii_hexdigit())).unwrap_or("nohash");
    unique_path(&root.join(safe_component(reason)).join(prefix))
}

/// Quarantine one arrived file: record it (with `duplicate_of` and the hook jobs to enqueue), write the sidecar,
/// make that durable, move the file. Returns the quarantine id and the new path.
pub fn quarantine_file(
    store: &Store,
    cfg: &Config,
    f: &ArrivedFile,
    reason: &str,
    detail: &str,
    duplicate_of: Option<(i64, &str, bool)>,
    hooks: &[NewJob],
) -> Result<(i64, PathBuf), DaemonError> {
    let target = target_for(&cfg.paths.quarantine, f, reason);
    let id = store.record_quarantine(f, &target, reason, detail, duplicate_of, hooks)?;
    store.durable_barrier("quarantine_durable", &id.to_string())?;
    let row = store.quarantine_get(id)?;
    finish_move(&row)?;
    Ok((id, target))
}

/// Write the sidecar and move the file for a recorded quarantine entry (idempotent).
pub fn finish_move(row: &QuarantineRow) -> Result<(), DaemonError> {
    let target = PathBuf::from(&row.path);
    let original = PathBuf::from(&row.original_path);
    let sidecar = serde_json::json!({
        "quarantine_id": row.id,
        "original_path": row.original_path,
        "reason": row.reason,
        "detail": row.detail,
        "size": row.size,
        "sha256": row.sha256,
        "quarantined_at": row.created_at,
        "ldae_version": crate::VERSION,
    });
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let side = sidecar_of(&target);
    let text = serde_json::to_string_pretty(&sidecar).unwrap_or_default();
    crate::nifti::write_atomic(&side, text.as_bytes()).map_err(io(&side))?;
    if original.exists() && !target.exists() {
        // The error names the quarantine target, not the original (its name may identify a patient).
        move_file(&original, &target).map_err(io(&target))?;
    }
    Ok(())
}

/// Move a held file back into the drop folder it came from (its original path, or a free name beside it) and
/// mark the entry requeued. Returns where it went.
///
/// Crash-safe in three steps: the entry is durably marked `requeuing` with its destination, the file moves,
/// the entry is closed. A crash after the move leaves a `requeuing` row that intake (or the next start) closes;
/// it is never mistaken for an unfinished quarantine move, which would send the file back to quarantine.
pub fn requeue(store: &Store, cfg: &Config, id: i64) -> Result<PathBuf, DaemonError> {
    let row = store.quarantine_get(id)?;
    if row.state != "held" {
        return Err(DaemonError::Other(format!("quarantine entry {id} is {}, not held", row.state)));
    }
    let held = PathBuf::from(&row.path);
    if !held.exists() {
        return Err(DaemonError::Other(format!("quarantine entry {id}: {} is missing", held.display())));
    }
    let original = PathBuf::from(&row.original_path);
    let drops: Vec<PathBuf> =
        cfg.paths.incoming.iter().map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())).collect();
    let in_drop = drops.iter().any(|d| original.starts_with(d));
    let dest = if in_drop {
        unique_path(&original)
    } else {
        let drop = drops.first().cloned().unwrap_or_default();
        let name = original.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
        unique_path(&drop.join("requeued").join(safe_component(&name)))
    };
    store.quarantine_begin_requeue(id, &dest)?;
    move_file(&held, &dest).map_err(io(&held))?;
    let _ = std::fs::remove_file(sidecar_of(&held));
    store.quarantine_finish_requeue(id)?;
    Ok(dest)
}

/// On start: finish every requeue a crash interrupted (move the file if it is still held, then close the row).
pub fn recover_requeues(store: &Store) -> Result<usize, DaemonError> {
    let rows = store.requeues_unfinished()?;
    for (id, held, dest) in &rows {
        let (held, dest) = (PathBuf::from(held), PathBuf::from(dest));
        if held.exists() && !dest.as_os_str().is_empty() && !dest.exists() {
            move_file(&held, &dest).map_err(io(&held))?;
            let _ = std::fs::remove_file(sidecar_of(&held));
        }
        store.quarantine_finish_requeue(*id)?;
        tracing::info!(quarantine_id = id, "interrupted requeue finished");
    }
    Ok(rows.len())
}

/// Delete a held file and its sidecar and mark the entry purged.
pub fn purge(store: &Store, id: i64) -> Result<(), DaemonError> {
    let row = store.quarantine_get(id)?;
    if row.state != "held" {
        return Err(DaemonError::Other(format!("quarantine entry {id} is {}, not held", row.state)));
    }
    let held = PathBuf::from(&row.path);
    match std::fs::remove_file(&held) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DaemonError::Io { path: held, source: e }),
    }
    let _ = std::fs::remove_file(sidecar_of(&held));
    store.quarantine_close(id, "purged", None)?;
    Ok(())
}
