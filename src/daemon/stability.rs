//! Series stability: a receiving series becomes ready after `stability.quiet_secs` without a new instance, at
//! once when its expected instance count is reached, or on `ldae commit`. The clock lives in the store
//! (`last_instance_at`), so pending series survive a restart (their quiet period is re-armed on start).

use crate::config::Config;
use crate::store::{Store, StoreError};

use super::stages::first_jobs;

/// Mark every due series ready (with its first jobs). Returns how many became ready.
pub fn tick(store: &Store, cfg: &Config) -> Result<usize, StoreError> {
    let mut n = 0;
    for (id, trigger) in store.due_series(cfg.stability.quiet_secs)? {
        if let Some(r) = store.mark_ready(id, &trigger, |r| first_jobs(cfg, r))? {
            tracing::info!(series = %r.series_uid, instances = r.instance_count, trigger = %r.trigger, "series ready");
            n += 1;
        }
    }
    Ok(n)
}
