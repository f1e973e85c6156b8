//! The job runner: CPU workers on tokio's blocking pool (convert, archive, preprocess), the model on ONE dedicated
//! OS thread (encode), hooks on their own thread — nothing here ever runs on a tokio worker. Each worker claims
//! the most urgent due job, runs its stage on its own stage thread under `catch_unwind` and the stage's time
//! limit (a panic is a permanent failure; a timeout abandons the thread and counts as a failed attempt), and
//! records the result: done with its outputs and follow-up jobs, a retry after capped exponential backoff, or
//! dead-letter. Claims are leased to this process's owner token ([`super::owner`]); a result whose lease was
//! lost meanwhile is not recorded (logged, its side effects in the store discarded). A worker may be limited to
//! some kinds (`ldae serve --kinds`): a pool with none of its kinds left is not started.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Config, JobsConfig};
use crate::store::{Completion, Job, JobKind, Lease, Recording, Store};

use super::poison::panic_message;
use super::stages::{self, StageError, CPU_KINDS, HOOK_KINDS, MODEL_KINDS};

/// Delay before retry number `attempts` (1 = after the first failure): `backoff_secs · 2^(attempts−1)`, capped.
pub fn backoff(cfg: &JobsConfig, attempts: i64) -> f64 {
    let exp = (attempts.max(1) - 1).min(60) as i32;
    (cfg.backoff_secs * 2f64.powi(exp)).min(cfg.backoff_max_secs)
}

/// Which pool a worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Cpu,
    Model,
    Hook,
}

impl Pool {
    /// Every kind this pool runs.
    pub fn kinds(self) -> &'static [JobKind] {
        match self {
            Pool::Cpu => CPU_KINDS,
            Pool::Model => MODEL_KINDS,
            Pool::Hook => HOOK_KINDS,
        }
    }
}

/// What a stage returns.
type Outcome = Result<Completion, StageError>;

/// Threads abandoned because their stage ran past its limit (still running, or stuck, somewhere).
static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// Run a job's stage on this thread. A panic is caught and becomes a permanent failure that names the job and
/// its series: a stage that panics on some input will panic on it again.
/// After every job the allocator's block cache is given back ([`crate::alloc_cache::trim`]): it serves the
/// repeated tensor sizes inside one job, and an idle daemon should not hold it.
pub fn run_stage(store: &Store, cfg: &Config, pool: Pool, job: &Job) -> Outcome {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match pool {
        Pool::Model if job.kind == JobKind::Fill => super::stage_fill::fill(store, cfg, job),
        Pool::Model => super::stage_encode::run(store, cfg, job),
        Pool::Cpu | Pool::Hook => stages::run_cpu(store, cfg, job),
    }));
    crate::alloc_cache::trim();
    outcome.unwrap_or_else(|p| {
        Err(StageError::Permanent(format!(
            "{} job {} (series {}): the stage panicked: {}",
            job.kind,
            job.id,
            job.series_uid.as_deref().unwrap_or("-"),
            panic_message(&*p)
        )))
    })
}

/// Record a job's outcome: done, retry after backoff, or dead-letter.
pub fn record(store: &Store, cfg: &Config, job: &Job, result: Outcome, started: Instant) {
    let series = job.series_uid.as_deref().unwrap_or("-");
    let recorded = match result {
        Ok(c) => {
            tracing::info!(job = job.id, kind = %job.kind, series, secs = started.elapsed().as_secs_f64(), "job done");
            match store.complete(job, &c) {
                // The connection went under the call (and its transaction with it): once more on a new one —
                // safe, the completion is conditional on the claim still being held.
                Err(e) if e.connection_lost() => {
                    tracing::warn!(job = job.id, error = %e, "database connection lost while recording: retrying");
                    store.complete(job, &c)
                }
                r => r,
            }
        }
        Err(StageError::Retry(e)) if job.attempts < cfg.jobs.max_attempts as i64 => {
            let delay = backoff(&cfg.jobs, job.attempts);
            tracing::warn!(job = job.id, kind = %job.kind, series, attempt = job.attempts, retry_in_secs = delay, error = %e, "job failed, will retry");
            store.fail(job, &e, Some(crate::store::now() + delay))
        }
        Err(StageError::RetryAfter(e, after)) if job.attempts < cfg.jobs.max_attempts as i64 => {
            let delay = after.as_secs_f64();
            tracing::warn!(job = job.id, kind = %job.kind, series, attempt = job.attempts, retry_in_secs = delay, error = %e, "job failed, will retry");
            store.fail(job, &e, Some(crate::store::now() + delay))
        }
        Err(e) => {
            tracing::error!(job = job.id, kind = %job.kind, series, attempt = job.attempts, error = %e, "job dead-lettered");
            store.fail(job, &e.to_string(), None)
        }
    };
    match recorded {
        Ok(Recording::Recorded) => {}
        Ok(Recording::LeaseLost) => tracing::warn!(
            job = job.id,
            kind = %job.kind,
            series,
            owner = job.owner.as_deref().unwrap_or("-"),
            "lease lost (expired, taken over or cancelled) while the job ran: its result is discarded"
        ),
        // The job stays `running` in the store; its lease runs out and it is requeued.
        Err(e) => tracing::error!(job = job.id, error = %e, "could not record the job's outcome"),
    }
}

/// A stage thread: runs the jobs its worker hands it, one at a time, and sends each outcome back.
struct Runner {
    jobs: mpsc::Sender<(Config, Job)>,
    results: mpsc::Receiver<Outcome>,
}

fn spawn_runner(store: &Arc<Store>, pool: Pool) -> std::io::Result<Runner> {
    let (jobs, job_rx) = mpsc::channel::<(Config, Job)>();
    let (result_tx, results) = mpsc::channel();
    let store = store.clone();
    let name = match pool {
        Pool::Cpu => "ldae-stage",
        Pool::Model => "ldae-model-stage",
        Pool::Hook => "ldae-hook-stage",
    };
    std::thread::Builder::new().name(name.into()).spawn(move || {
        for (cfg, job) in job_rx {
            if result_tx.send(run_stage(&store, &cfg, pool, &job)).is_err() {
                break; // abandoned by its worker (timeout): the result is dropped
            }
        }
    })?;
    Ok(Runner { jobs, results })
}

/// Run one claimed job on the worker's stage thread, waiting at most the stage's time limit
/// (`jobs.stage_timeout_secs`). Past it the job is recorded as failed (retried with backoff, then
/// dead-lettered) and the stage thread is abandoned: a blocking computation cannot be stopped from outside, so
/// it runs on (or stays stuck) unobserved, its result is dropped, and the worker continues on a fresh thread
/// (the model thread reloads the model there). Abandoned threads are counted in the log.
fn run_supervised(store: &Arc<Store>, cfg: &Config, pool: Pool, job: Job, runner: &mut Option<Runner>) {
    let started = Instant::now();
    if runner.is_none() {
        match spawn_runner(store, pool) {
            Ok(r) => *runner = Some(r),
            Err(e) => {
                record(store, cfg, &job, Err(StageError::Retry(format!("cannot start a stage thread: {e}"))), started);
                return;
            }
        }
    }
    let Some(r) = runner.as_ref() else { return };
    let limit = cfg.jobs.stage_timeout_secs.for_kind(job.kind.as_str(), cfg.hooks.timeout_secs);
    let outcome = match r.jobs.send((cfg.clone(), job.clone())) {
        Err(_) => Err(StageError::Retry("the stage thread is gone".into())),
        Ok(()) => match r.results.recv_timeout(limit) {
            Ok(o) => o,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let n = ABANDONED.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::error!(job = job.id, kind = %job.kind, limit_secs = limit.as_secs_f64(), abandoned_threads = n, "stage timed out: its thread is abandoned");
                *runner = None;
                Err(StageError::Retry(format!(
                    "{} timed out after {} s (jobs.stage_timeout_secs.{}); abandoned",
                    job.kind,
                    limit.as_secs_f64(),
                    job.kind
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                *runner = None;
                Err(StageError::Retry("the stage thread ended without a result".into()))
            }
        },
    };
    record(store, cfg, &job, outcome, started);
}

/// A worker: claim and run jobs of `kinds` (of its pool) until `stop` (finishing the job in hand: the drain on
/// SIGTERM).
pub fn worker_loop(
    store: Arc<Store>,
    cfg: Arc<RwLock<Config>>,
    stop: Arc<AtomicBool>,
    pool: Pool,
    kinds: Vec<JobKind>,
    lease: Lease,
) {
    let mut runner = None;
    while !stop.load(Ordering::SeqCst) {
        match store.claim(&kinds, &lease) {
            Ok(Some(job)) => {
                let snapshot = cfg.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone());
                run_supervised(&store, &snapshot, pool, job, &mut runner);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(150)),
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a job");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The running workers.
pub struct Workers {
    blocking: Vec<tokio::task::JoinHandle<()>>,
    model: Option<std::thread::JoinHandle<()>>,
}

/// The kinds of `pool` that `allowed` lets this process run.
pub fn pool_kinds(pool: Pool, allowed: &[JobKind]) -> Vec<JobKind> {
    pool.kinds().iter().copied().filter(|k| allowed.contains(k)).collect()
}

/// Start `cpu_workers` CPU workers and the hook worker on the blocking pool, and the model thread — each only
/// if some of its kinds are in `allowed` — claiming for `lease`.
pub fn start(
    rt: &tokio::runtime::Handle,
    store: Arc<Store>,
    cfg: Arc<RwLock<Config>>,
    stop: Arc<AtomicBool>,
    cpu_workers: usize,
    allowed: &[JobKind],
    lease: &Lease,
) -> Result<Workers, std::io::Error> {
    let mut blocking = Vec::new();
    for pool in std::iter::repeat_n(Pool::Cpu, cpu_workers.max(1)).chain([Pool::Hook]) {
        let kinds = pool_kinds(pool, allowed);
        if kinds.is_empty() {
            continue;
        }
        let (s, c, st, l) = (store.clone(), cfg.clone(), stop.clone(), lease.clone());
        blocking.push(rt.spawn_blocking(move || worker_loop(s, c, st, pool, kinds, l)));
    }
    let kinds = pool_kinds(Pool::Model, allowed);
    let model = if kinds.is_empty() {
        None
    } else {
        let lease = lease.clone();
        Some(
            std::thread::Builder::new()
                .name("ldae-model".into())
                .spawn(move || worker_loop(store, cfg, stop, Pool::Model, kinds, lease))?,
        )
    };
    Ok(Workers { blocking, model })
}

impl Workers {
    /// Wait for every worker to finish its current job (call after setting `stop`).
    pub async fn join(mut self) {
        for h in self.blocking.drain(..) {
            let _ = h.await;
        }
        if let Some(m) = self.model.take() {
            let _ = tokio::task::spawn_blocking(move || m.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = JobsConfig {
            max_attempts: 5,
            backoff_secs: 2.0,
            backoff_max_secs: 10.0,
            cpu_workers: 1,
            ..Default::default()
        };
        assert_eq!(backoff(&cfg, 1), 2.0);
        assert_eq!(backoff(&cfg, 2), 4.0);
        assert_eq!(backoff(&cfg, 3), 8.0);
        assert_eq!(backoff(&cfg, 4), 10.0);
        assert_eq!(backoff(&cfg, 400), 10.0);
    }
}
