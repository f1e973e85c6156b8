//! The learning-rate schedule of a training run: `[optim] schedule` (constant, or a cosine decay to
//! `min_lr_ratio · lr` at the run's last step) after `warmup_steps` of linear warm-up. A function of the
//! step alone, so a resumed run continues on the same curve.

use serde::{Deserialize, Serialize};

/// The shape of the learning rate over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `lr` at every step (after the warm-up).
    #[default]
    Constant,
    /// Half a cosine from `lr` down to `min_lr_ratio · lr` at the last step.
    Cosine,
}

/// The learning rate of optimiser step `step` (1-based) of `total`.
pub fn lr_at(schedule: Schedule, lr: f64, warmup: u64, min_ratio: f64, step: u64, total: u64) -> f64 {
    if warmup > 0 && step <= warmup {
        return lr * step as f64 / warmup as f64;
    }
    match schedule {
        Schedule::Constant => lr,
        Schedule::Cosine => {
            let span = total.saturating_sub(warmup).max(1) as f64;
            let done = (step.saturating_sub(warmup) as f64 / span).clamp(0.0, 1.0);
            let floor = lr * min_ratio;
            floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_rises_linearly_then_cosine_falls_to_the_floor() {
        let at = |s| lr_at(Schedule::Cosine, 1e-3, 10, 0.1, s, 110);
        assert!((at(1) - 1e-4).abs() < 1e-12);
        assert!((at(10) - 1e-3).abs() < 1e-12);
        assert!((at(60) - 5.5e-4).abs() < 1e-12, "half way: {}", at(60));
        assert!((at(110) - 1e-4).abs() < 1e-12);
        assert!((at(500) - 1e-4).abs() < 1e-12, "past the end stays at the floor");
        let mut last = f64::INFINITY;
        for s in 10..=110 {
            assert!(at(s) <= last);
            last = at(s);
        }
    }

    #[test]
    fn constant_is_constant_after_warmup() {
        assert_eq!(lr_at(Schedule::Constant, 2e-4, 0, 0.1, 1, 100), 2e-4);
        assert_eq!(lr_at(Schedule::Constant, 2e-4, 0, 0.1, 100, 100), 2e-4);
        assert!((lr_at(Schedule::Constant, 2e-4, 4, 0.1, 2, 100) - 1e-4).abs() < 1e-15);
    }
}
