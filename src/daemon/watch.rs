//! Noticing files: inotify through `notify` (or its polling watcher for NFS/SMB shares), plus a periodic full
//! rescan, which also catches what inotify misses (files in folders created before their watch was set). Noticed
//! files wait in the [`Settler`] until complete: size and mtime unchanged for `intake.settle_secs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::Watcher;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::files::{file_stamp, is_ignored_name};
use super::DaemonError;

/// A running watcher and the paths it reports.
pub struct Watch {
    _watcher: Box<dyn Watcher + Send>,
    pub events: UnboundedReceiver<PathBuf>,
}

/// Watch every drop folder (recursively). `poll`: stat-polling every `poll_every` instead of inotify.
pub fn start(drops: &[PathBuf], poll: bool, poll_every: Duration) -> Result<Watch, DaemonError> {
    let (tx, events) = unbounded_channel();
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            use notify::EventKind::*;
            if matches!(ev.kind, Create(_) | Modify(_) | Access(notify::event::AccessKind::Close(_)) | Any) {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "watcher error (the periodic rescan covers it)"),
    };
    let err = |e: notify::Error| DaemonError::Other(format!("cannot watch the drop folders: {e}"));
    let mut watcher: Box<dyn Watcher + Send> = if poll {
        Box::new(
            notify::PollWatcher::new(handler, notify::Config::default().with_poll_interval(poll_every)).map_err(err)?,
        )
    } else {
        Box::new(notify::recommended_watcher(handler).map_err(err)?)
    };
    for d in drops {
        watcher
            .watch(d, notify::RecursiveMode::Recursive)
            .map_err(|e| DaemonError::Other(format!("{}: cannot watch: {e}", d.display())))?;
    }
    Ok(Watch { _watcher: watcher, events })
}

/// Every candidate file under the drop folders: (file, its drop folder). Hidden folders and ignored names are
/// skipped, and so is anything under `exclude` (state, quarantine, archive, outputs nested in a drop folder).
pub fn scan(drops: &[PathBuf], exclude: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for d in drops {
        let walker = walkdir::WalkDir::new(d).follow_links(false).into_iter().filter_entry(|e| {
            e.depth() == 0
                || !(e.file_name().to_string_lossy().starts_with('.') || exclude.iter().any(|x| e.path() == x))
        });
        for e in walker.flatten() {
            if e.file_type().is_file() && !is_ignored_name(e.path()) {
                out.push((e.path().to_path_buf(), d.clone()));
            }
        }
    }
    out
}

/// Which drop folder a path belongs to, if any (and whether intake should look at it at all).
pub fn drop_of(path: &Path, drops: &[PathBuf], exclude: &[PathBuf]) -> Option<PathBuf> {
    if is_ignored_name(path) || exclude.iter().any(|x| path.starts_with(x)) {
        return None;
    }
    let d = drops.iter().find(|d| path.starts_with(d))?;
    let rel = path.strip_prefix(d).ok()?;
    if rel.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.')) {
        return None;
    }
    Some(d.clone())
}

struct Pending {
    drop: PathBuf,
    stamp: (u64, i64),
    since: Instant,
    checks: u32,
}

/// Files noticed but not yet complete.
#[derive(Default)]
pub struct Settler {
    pending: HashMap<PathBuf, Pending>,
}

impl Settler {
    /// Start tracking a file (no-op if tracked or not a regular file).
    pub fn add(&mut self, path: PathBuf, drop: PathBuf) {
        if self.pending.contains_key(&path) {
            return;
        }
        if let Some(stamp) = file_stamp(&path) {
            self.pending.insert(path, Pending { drop, stamp, since: Instant::now(), checks: 0 });
        }
    }

    /// Number of files waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Re-stat every tracked file; return (and stop tracking) those whose size and mtime have not changed for
    /// `settle` — observed by us, or (from the second look on) by the mtime's age. Vanished files are dropped.
    pub fn settled(&mut self, settle: Duration) -> Vec<(PathBuf, PathBuf)> {
        let now = SystemTime::now();
        let mut done = Vec::new();
        self.pending.retain(|path, p| match file_stamp(path) {
            None => false,
            Some(stamp) if stamp != p.stamp => {
                p.stamp = stamp;
                p.since = Instant::now();
                p.checks = 0;
                true
            }
            Some(stamp) => {
                p.checks += 1;
                let mtime = std::time::UNIX_EPOCH + Duration::from_nanos(stamp.1.max(0) as u64);
                let age = now.duration_since(mtime).unwrap_or(Duration::ZERO);
                if p.since.elapsed() >= settle || (p.checks >= 2 && age >= settle) {
                    done.push((path.clone(), p.drop.clone()));
                    false
                } else {
                    true
                }
            }
        });
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settler_waits_for_quiet_files_and_scan_skips_hidden() {
        let d = tempfile::tempdir().unwrap();
        let drop = d.path().to_path_buf();
        std::fs::create_dir_all(drop.join(".hidden")).unwrap();
        std::fs::create_dir_all(drop.join("a/b")).unwrap();
        std::fs::write(drop.join(".hidden/x.dcm"), b"x").unwrap();
        std::fs::write(drop.join("a/b/y.dcm"), b"y").unwrap();
        std::fs::write(drop.join("a/z.part"), b"z").unwrap();
        let found = scan(std::slice::from_ref(&drop), &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.ends_with("a/b/y.dcm"));
        assert!(drop_of(&drop.join(".hidden/x.dcm"), std::slice::from_ref(&drop), &[]).is_none());
        let mut s = Settler::default();
        s.add(found[0].0.clone(), drop.clone());
        assert!(s.settled(Duration::from_secs(60)).is_empty(), "fresh file is not settled");
        std::fs::write(drop.join("a/b/y.dcm"), b"yy").unwrap();
        assert!(s.settled(Duration::ZERO).is_empty(), "a change restarts the clock");
        assert_eq!(s.settled(Duration::ZERO).len(), 1);
        assert!(s.is_empty());
    }
}
