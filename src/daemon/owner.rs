//! This process's identity as a job owner, and its lease upkeep.
//!
//! Every `ldae serve` that runs jobs makes an owner token at start (`<host>-<pid>-<random>`, logged) and holds an
//! exclusive `flock` on `<state>/owners/<token>.lock` for as long as it lives; the kernel drops the lock when the
//! process dies, `kill -9` included. The heartbeat thread, every `jobs.lease_secs / 3`:
//! - renews the leases of the jobs this process runs;
//! - requeues jobs whose lease ran out (their worker, on any host, died or hung or was paused past its lease);
//! - releases at once the jobs of owners whose lock file it can lock (a dead process that shared this state
//!   folder: a restarted single daemon picks its crashed jobs up without waiting a lease).
//!
//! A worker on another host with its own state folder has no lock file here: its jobs come back by expiry only.

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::store::{Lease, Store};

use super::DaemonError;

/// The folder of owner lock files inside `paths.state`.
const OWNERS: &str = "owners";

/// This process's owner token and the lock that says it is alive.
pub struct Owner {
    pub lease: Lease,
    path: PathBuf,
    _lock: std::fs::File,
}

fn try_lock(f: &std::fs::File) -> bool {
    // SAFETY: flock on a file descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn host() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h: String = h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
    if h.is_empty() {
        "host".into()
    } else {
        h
    }
}

impl Owner {
    /// Make a fresh token and take its lock file (written under a temporary name, locked, then renamed, so
    /// nobody ever sees it unlocked).
    pub fn register(state: &Path, lease_secs: f64) -> Result<Owner, DaemonError> {
        let dir = state.join(OWNERS);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DaemonError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let token = format!("{}-{}-{:012x}", host(), std::process::id(), rand::rng().random::<u64>() >> 16);
        let tmp = dir.join(format!(".{token}.tmp"));
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        if !try_lock(&file) {
            return Err(DaemonError::Other(format!("{}: cannot lock", tmp.display())));
        }
        let path = dir.join(format!("{token}.lock"));
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(Owner { lease: Lease { owner: token, secs: lease_secs }, path, _lock: file })
    }

    pub fn token(&self) -> &str {
        &self.lease.owner
    }

    /// Release the jobs of every owner in `<state>/owners` whose lock is free (its process is gone), and remove
    /// its lock file. Returns (requeued, dead-lettered).
    pub fn reap_dead(&self, store: &Store, state: &Path, max_crashes: u32) -> (usize, usize) {
        let mut total = (0, 0);
        let Ok(entries) = std::fs::read_dir(state.join(OWNERS)) else { return total };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(token) = name.strip_suffix(".lock") else { continue };
            if token == self.token() || token.starts_with('.') {
                continue;
            }
            let Ok(f) = std::fs::OpenOptions::new().read(true).open(e.path()) else { continue };
            if !try_lock(&f) {
                continue; // alive
            }
            match store.release_owner_at(token, crate::store::now(), max_crashes) {
                Ok((requeued, dead)) => {
                    if requeued + dead > 0 {
                        tracing::warn!(owner = token, requeued, dead, "a worker process died: its jobs are released");
                    }
                    total = (total.0 + requeued, total.1 + dead);
                    let _ = std::fs::remove_file(e.path());
                }
                Err(e) => tracing::error!(owner = token, error = %e, "cannot release a dead worker's jobs"),
            }
        }
        total
    }

    /// One round of lease upkeep: renew ours, reap dead owners, expire lost leases. Returns (requeued, dead).
    pub fn upkeep(&self, store: &Store, state: &Path, max_crashes: u32) -> (usize, usize) {
        if let Err(e) = store.heartbeat(self.token(), self.lease.secs) {
            tracing::error!(error = %e, "heartbeat failed: this worker's leases may run out");
        }
        let reaped = self.reap_dead(store, state, max_crashes);
        let expired = match store.expire_leases(max_crashes) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot expire lost leases");
                (0, 0)
            }
        };
        if expired.0 + expired.1 > 0 {
            tracing::warn!(requeued = expired.0, dead = expired.1, "leases expired: jobs requeued");
        }
        (reaped.0 + expired.0, reaped.1 + expired.1)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The heartbeat thread: [`Owner::upkeep`] every `lease_secs / 3` until `stop`.
pub fn start_heartbeat(
    owner: Arc<Owner>,
    store: Arc<Store>,
    state: PathBuf,
    max_crashes: u32,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let every = Duration::from_secs_f64(owner.lease.secs / 3.0);
    std::thread::Builder::new().name("ldae-heartbeat".into()).spawn(move || {
        let mut last = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= every {
                last = Instant::now();
                owner.upkeep(&store, &state, max_crashes);
            }
        }
    })
}
