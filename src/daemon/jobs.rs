//! The job runner: CPU workers on tokio's blocking pool (convert, archive, preprocess), the model on ONE dedicated
//! OS thread (encode), hooks on their own thread — nothing here ever runs on a tokio worker. Each worker claims
//! the most urgent due job, runs its stage (a panic is caught and counts as a failed attempt), and records the
//! result: done with its outputs and follow-up jobs, a retry after capped exponential backoff, or dead-letter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::{Config, JobsConfig};
use crate::store::{Job, Store};

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
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Pool::Cpu => CPU_KINDS,
            Pool::Model => MODEL_KINDS,
            Pool::Hook => HOOK_KINDS,
        }
    }
}

/// Run one claimed job and record its outcome.
pub fn run_one(store: &Store, cfg: &Config, pool: Pool, job: Job) {
    let started = std::time::Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match pool {
        Pool::Model => super::stage_encode::run(store, cfg, &job),
        Pool::Cpu | Pool::Hook => stages::run_cpu(store, cfg, &job),
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(StageError::Retry(format!("stage panicked: {msg}")))
    });
    let series = job.series_uid.as_deref().unwrap_or("-");
    let recorded = match result {
        Ok(c) => {
            tracing::info!(job = job.id, kind = %job.kind, series, secs = started.elapsed().as_secs_f64(), "job done");
            store.complete(&job, &c)
        }
        Err(StageError::Retry(e)) if job.attempts < cfg.jobs.max_attempts as i64 => {
            let delay = backoff(&cfg.jobs, job.attempts);
            tracing::warn!(job = job.id, kind = %job.kind, series, attempt = job.attempts, retry_in_secs = delay, error = %e, "job failed, will retry");
            store.fail(&job, &e, Some(crate::store::now() + delay))
        }
        Err(e) => {
            tracing::error!(job = job.id, kind = %job.kind, series, attempt = job.attempts, error = %e, "job dead-lettered");
            store.fail(&job, &e.to_string(), None)
        }
    };
    if let Err(e) = recorded {
        // The job stays `running` in the store; the next start requeues it.
        tracing::error!(job = job.id, error = %e, "could not record the job's outcome");
    }
}

/// A worker: claim and run jobs of its pool until `stop` (finishing the job in hand: the drain on SIGTERM).
pub fn worker_loop(store: Arc<Store>, cfg: Arc<RwLock<Config>>, stop: Arc<AtomicBool>, pool: Pool) {
    while !stop.load(Ordering::SeqCst) {
        match store.claim(pool.kinds()) {
            Ok(Some(job)) => {
                let snapshot = cfg.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone());
                run_one(&store, &snapshot, pool, job);
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

/// Start `cpu_workers` CPU workers and the hook worker on the blocking pool, and the model thread.
pub fn start(
    rt: &tokio::runtime::Handle,
    store: Arc<Store>,
    cfg: Arc<RwLock<Config>>,
    stop: Arc<AtomicBool>,
    cpu_workers: usize,
) -> Result<Workers, std::io::Error> {
    let mut blocking = Vec::new();
    for pool in std::iter::repeat_n(Pool::Cpu, cpu_workers.max(1)).chain([Pool::Hook]) {
        let (s, c, st) = (store.clone(), cfg.clone(), stop.clone());
        blocking.push(rt.spawn_blocking(move || worker_loop(s, c, st, pool)));
    }
    let model = std::thread::Builder::new()
        .name("ldae-model".into())
        .spawn(move || worker_loop(store, cfg, stop, Pool::Model))?;
    Ok(Workers { blocking, model: Some(model) })
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
        let cfg = JobsConfig { max_attempts: 5, backoff_secs: 2.0, backoff_max_secs: 10.0, cpu_workers: 1 };
        assert_eq!(backoff(&cfg, 1), 2.0);
        assert_eq!(backoff(&cfg, 2), 4.0);
        assert_eq!(backoff(&cfg, 3), 8.0);
        assert_eq!(backoff(&cfg, 4), 10.0);
        assert_eq!(backoff(&cfg, 400), 10.0);
    }
}
