//! `ldae serve`: start-up (paths, lock, store recovery), the main loop (signals, stability ticks, systemd
//! status/watchdog, forwarding watcher events), the intake thread, and the drain on SIGTERM.
//!
//! Roles ([`Role`]): `intake` watches the drop folders, settles and records files, decides stability and
//! enqueues the first jobs — it runs no jobs (hooks included) and holds the state folder's exclusive lock;
//! `worker` runs jobs (of the `--kinds` given, default all) and nothing else, any number of them per state;
//! `all` (the default, one box) is both.
//!
//! Start-up recovery: a worker releases the jobs of dead workers that shared this state folder and requeues
//! expired leases (never another live worker's jobs, see [`super::owner`]); intake gives pending series a fresh
//! quiet period, and its first scan of the drop folders picks up every file not yet recorded. SIGHUP re-reads the config file; intake,
//! stability, jobs and hooks settings take effect at once, `paths.*`, `intake.poll` and `model.*` on restart.

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::store::{JobKind, Store};

use super::files::{free_mib, sha256_bytes};
use super::intake::{intake_file, Intake};
use super::watch::{drop_of, scan, Settler};
use super::{jobs, stability, systemd, watch, DaemonError};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io { path: path.to_path_buf(), source }
}

/// Create every configured folder and make the paths absolute (the store records absolute paths).
pub fn resolve_paths(mut cfg: Config) -> Result<Config, DaemonError> {
    let fix = |p: &mut PathBuf| -> Result<(), DaemonError> {
        std::fs::create_dir_all(&*p).map_err(io(p))?;
        *p = p.canonicalize().map_err(io(p))?;
        Ok(())
    };
    for d in cfg.paths.incoming.iter_mut() {
        fix(d)?;
    }
    fix(&mut cfg.paths.state)?;
    fix(&mut cfg.paths.quarantine)?;
    fix(&mut cfg.paths.archive)?;
    fix(&mut cfg.paths.outputs)?;
    Ok(cfg)
}

/// Folders inside a drop folder that intake must never look at.
fn excluded(cfg: &Config) -> Vec<PathBuf> {
    let p = &cfg.paths;
    vec![p.state.clone(), p.quarantine.clone(), p.archive.clone(), p.outputs.clone()]
}

/// An exclusive lock on `<state>/ldae.lock`, held while the daemon runs (released by the kernel on any exit).
fn lock_state(state: &Path) -> Result<std::fs::File, DaemonError> {
    let path = state.join("ldae.lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(DaemonError::Other(format!("{}: another `ldae serve` uses this state folder", path.display())));
    }
    Ok(f)
}

fn snapshot(cfg: &RwLock<Config>) -> Config {
    cfg.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
}

/// What one `ldae serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Watch, settle, record, decide stability, enqueue; run no jobs.
    Intake,
    /// Run jobs only (no folder watch).
    Worker,
    /// Both (one box).
    #[default]
    All,
}

impl Role {
    fn intake(self) -> bool {
        matches!(self, Role::Intake | Role::All)
    }

    fn worker(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

/// How to run: the role, and the job kinds a worker takes (None: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeOptions {
    pub role: Role,
    pub kinds: Option<Vec<JobKind>>,
}

/// Run the daemon until SIGTERM/SIGINT, then drain (running jobs finish) and return.
pub fn serve(config_path: &Path, opts: &ServeOptions) -> Result<(), DaemonError> {
    if opts.kinds.is_some() && !opts.role.worker() {
        return Err(DaemonError::Other("--kinds needs --role worker or all: intake runs no jobs".into()));
    }
    let cfg = resolve_paths(Config::load(config_path)?)?;
    let cpu = match cfg.jobs.cpu_workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ldae-rt")
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Other(format!("cannot start the runtime: {e}")))?;
    rt.block_on(main_loop(config_path.to_path_buf(), cfg, cpu, opts.clone()))
}

async fn main_loop(config_path: PathBuf, cfg: Config, cpu: usize, opts: ServeOptions) -> Result<(), DaemonError> {
    let role = opts.role;
    let _lock = if role.intake() { Some(lock_state(&cfg.paths.state)?) } else { None };
    let store = Arc::new(Store::open_at(&crate::store::Location::of(&cfg))?);
    store.limit_sessions_for_lease(cfg.jobs.lease_secs)?;
    let owner = if role.worker() {
        let owner = Arc::new(super::owner::Owner::register(&cfg.paths.state, cfg.jobs.lease_secs)?);
        let (requeued, crash_looped) = owner.upkeep(&store, &cfg.paths.state, cfg.jobs.max_crashes);
        tracing::info!(owner = owner.token(), lease_secs = cfg.jobs.lease_secs, requeued, crash_looped, "job owner");
        Some(owner)
    } else {
        None
    };
    let (rearmed, requeues_finished, poison) = if role.intake() {
        let rearmed = store.rearm_pending()?;
        (
            rearmed,
            super::quarantine::recover_requeues(&store)?,
            super::poison::recover_interrupted_parses(&store, &cfg)?,
        )
    } else {
        (0, 0, 0)
    };
    let kinds = opts.kinds.clone().unwrap_or_else(|| JobKind::ALL.to_vec());
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    tracing::info!(
        db = %store.location(),
        role = ?role,
        kinds = ?kind_names,
        rearmed,
        requeues_finished,
        poison,
        cpu_workers = cpu,
        "store open"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(RwLock::new(cfg.clone()));
    // The heartbeat outlives the workers' drain: a job finishing after SIGTERM keeps its lease.
    let beat_stop = Arc::new(AtomicBool::new(false));
    let (workers, heartbeat) = match &owner {
        Some(owner) => {
            let rt = tokio::runtime::Handle::current();
            let w = jobs::start(&rt, store.clone(), shared.clone(), stop.clone(), cpu, &kinds, &owner.lease)
                .map_err(|e| DaemonError::Other(format!("cannot start the model thread: {e}")))?;
            let (o, s, st) = (owner.clone(), store.clone(), cfg.paths.state.clone());
            let h = super::owner::start_heartbeat(o, s, st, cfg.jobs.max_crashes, beat_stop.clone())
                .map_err(|e| DaemonError::Other(format!("cannot start the heartbeat thread: {e}")))?;
            (Some(w), Some(h))
        }
        None => (None, None),
    };
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let intake = if role.intake() {
        let (s, c, st, pa) = (store.clone(), shared.clone(), stop.clone(), paused.clone());
        Some(
            std::thread::Builder::new()
                .name("ldae-intake".into())
                .spawn(move || intake_loop(&s, &c, rx, &st, &pa))
                .map_err(|e| DaemonError::Other(format!("cannot start the intake thread: {e}")))?,
        )
    } else {
        None
    };
    let poll_every = Duration::from_secs_f64(cfg.intake.settle_secs.max(1.0));
    // A worker watches nothing: its watcher has no folders.
    let folders: &[PathBuf] = if role.intake() { &cfg.paths.incoming } else { &[] };
    let mut watch = watch::start(folders, cfg.intake.poll, poll_every)?;

    let sig = |k| signal(k).map_err(|e| DaemonError::Other(format!("cannot install signal handlers: {e}")));
    let (mut term, mut int, mut hup) =
        (sig(SignalKind::terminate())?, sig(SignalKind::interrupt())?, sig(SignalKind::hangup())?);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut status_tick = tokio::time::interval(Duration::from_secs(5));
    let wd_period = systemd::watchdog_period();
    let mut wd = tokio::time::interval(wd_period.unwrap_or(Duration::from_secs(3600)));
    let mut last_ok = Instant::now();

    let drops: Vec<String> = folders.iter().map(|d| d.display().to_string()).collect();
    if role.intake() {
        systemd::ready(&format!("watching {}", drops.join(", ")));
    } else {
        systemd::ready(&format!("worker for {}", kind_names.join(", ")));
    }
    tracing::info!(drop_folders = ?drops, poll = cfg.intake.poll, role = ?role, "ldae serve ready");

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = hup.recv() => reload(&config_path, &shared),
            Some(p) = watch.events.recv() => { let _ = tx.send(p); }
            _ = tick.tick(), if role.intake() => {
                let (s, c) = (store.clone(), snapshot(&shared));
                match tokio::task::spawn_blocking(move || stability::tick(&s, &c)).await {
                    Ok(Ok(_)) => last_ok = Instant::now(),
                    Ok(Err(e)) => tracing::error!(error = %e, "stability check failed"),
                    Err(e) => tracing::error!(error = %e, "stability check panicked"),
                }
            }
            _ = status_tick.tick() => {
                let s = store.clone();
                let pa = paused.load(Ordering::SeqCst);
                if let Ok(Ok(line)) = tokio::task::spawn_blocking(move || status_line(&s, pa)).await {
                    systemd::status(&line);
                }
            }
            _ = wd.tick(), if wd_period.is_some() => {
                // Only while the loop and the database answer: a wedged daemon gets restarted by systemd.
                if last_ok.elapsed() < wd_period.unwrap_or_default() * 2 {
                    systemd::watchdog();
                }
            }
        }
    }
    systemd::stopping();
    stop.store(true, Ordering::SeqCst);
    drop(watch);
    drop(tx);
    if let Some(intake) = intake {
        let _ = tokio::task::spawn_blocking(move || intake.join()).await;
    }
    if let Some(workers) = workers {
        workers.join().await;
    }
    beat_stop.store(true, Ordering::SeqCst);
    if let Some(h) = heartbeat {
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    tracing::info!("ldae serve stopped");
    Ok(())
}

/// SIGHUP: re-read the config; keep the resolved paths (they change on restart only).
fn reload(config_path: &Path, shared: &RwLock<Config>) {
    systemd::reloading();
    match Config::load(config_path) {
        Ok(mut new) => {
            let mut cur = shared.write().unwrap_or_else(|p| p.into_inner());
            if new.intake.poll != cur.intake.poll || new.model != cur.model {
                tracing::warn!("intake.poll and model.* changes take effect on restart");
            }
            new.paths = cur.paths.clone();
            *cur = new;
            tracing::info!(config = %config_path.display(), "configuration reloaded");
        }
        Err(e) => tracing::error!(error = %e, "reload failed; keeping the running configuration"),
    }
    systemd::ready("configuration reloaded");
}

fn status_line(store: &Store, paused: bool) -> Result<String, crate::store::StoreError> {
    let st = store.status(0)?;
    let count = |state: &str| st.jobs.iter().filter(|j| j.state == state).map(|j| j.count).sum::<i64>();
    let receiving = st.series_by_state.iter().find(|(s, _)| s == "receiving").map(|(_, n)| *n).unwrap_or(0);
    Ok(format!(
        "{} receiving series; jobs {} pending, {} running, {} dead; {} quarantined{}",
        receiving,
        count("pending"),
        count("running"),
        count("dead"),
        st.quarantined,
        if paused { "; INTAKE PAUSED (low disk)" } else { "" }
    ))
}

/// Every configured folder whose file system has less than `intake.min_free_mib` free, with its free MiB: the
/// drop folders, state, quarantine, archive and outputs — a full outputs or archive disk stops the pipeline as
/// surely as a full state disk.
pub fn low_disk(cfg: &Config) -> Vec<(PathBuf, u64)> {
    let p = &cfg.paths;
    let all = p.incoming.iter().chain([&p.state, &p.quarantine, &p.archive, &p.outputs]);
    all.filter_map(|d| free_mib(d).filter(|&f| f < cfg.intake.min_free_mib).map(|f| (d.clone(), f))).collect()
}

/// A stable, non-identifying name for a path in logs (the first 12 hex of its SHA-256).
fn path_key(p: &Path) -> String {
    sha256_bytes(p.to_string_lossy().as_bytes())[..12].to_string()
}

/// The intake thread: collect noticed paths, rescan periodically, settle, and take complete files in; pause
/// while any configured folder's disk is below `intake.min_free_mib`.
fn intake_loop(
    store: &Store,
    shared: &RwLock<Config>,
    rx: mpsc::Receiver<PathBuf>,
    stop: &AtomicBool,
    paused: &AtomicBool,
) {
    let mut settler = Settler::default();
    let mut last_scan: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let cfg = snapshot(shared);
        let drops = cfg.paths.incoming.clone();
        let exclude = excluded(&cfg);
        if last_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(cfg.intake.rescan_secs)) {
            for (p, d) in scan(&drops, &exclude) {
                settler.add(p, d);
            }
            last_scan = Some(Instant::now());
        }
        let mut noticed = Vec::new();
        if let Ok(p) = rx.recv_timeout(Duration::from_millis(200)) {
            noticed.push(p);
        }
        noticed.extend(rx.try_iter());
        for p in noticed {
            let Some(d) = drop_of(&p, &drops, &exclude) else { continue };
            if p.is_dir() {
                // A new folder: its files may predate the watch on it.
                for (f, _) in scan(std::slice::from_ref(&p), &exclude) {
                    settler.add(f, d.clone());
                }
            } else {
                settler.add(p, d);
            }
        }
        let short = low_disk(&cfg);
        let low = !short.is_empty();
        if low != paused.swap(low, Ordering::SeqCst) {
            if low {
                let folders: Vec<String> =
                    short.iter().map(|(d, f)| format!("{} ({f} MiB free)", d.display())).collect();
                tracing::error!(min_free_mib = cfg.intake.min_free_mib, folders = ?folders, "low disk space: intake paused");
            } else {
                tracing::info!("disk space back above the watermark: intake resumed");
            }
        }
        if low {
            continue;
        }
        for (p, d) in settler.settled(Duration::from_secs_f64(cfg.intake.settle_secs)) {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            match intake_file(store, &cfg, &p, &d) {
                Ok(Intake::Deferred(why)) => {
                    tracing::warn!(reason = %why, "file deferred");
                    settler.add(p, d);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(file_key = %path_key(&p), error = %e, "intake failed; will retry");
                    settler.add(p, d);
                }
            }
        }
    }
}
