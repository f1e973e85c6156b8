//! When to try a C-STORE delivery again: capped exponential backoff on a deterministic schedule (no jitter, so
//! that a test or an operator can predict every wait), a bounded number of attempts, and never a retry after a
//! terminal failure (a rejected association, a refused instance): a peer that said no will say no again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Is a failure worth another attempt?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The network or the peer may recover (connection refused or reset, timeout, A-ABORT, out of resources).
    Transient,
    /// Sending the same thing to the same peer will fail the same way (association rejected permanently, no
    /// presentation context, malformed responses, an instance the peer refused).
    Terminal,
}

/// Capped exponential backoff: attempt `n` (1-based) that failed transiently is followed by a wait of
/// `min(initial_delay · 2^(n−1), max_delay)`, up to `max_attempts` attempts in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Wait after the first failed attempt.
    #[serde(with = "millis")]
    pub initial_delay: Duration,
    /// Longest wait between two attempts.
    #[serde(with = "millis")]
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, initial_delay: Duration::from_secs(2), max_delay: Duration::from_secs(60) }
    }
}

impl RetryPolicy {
    /// A policy that tries once.
    pub fn once() -> Self {
        RetryPolicy { max_attempts: 1, ..Self::default() }
    }

    /// The wait after failed attempt `attempt` (1-based), before the cap on attempts is considered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        let factor = 1u32 << shift;
        self.initial_delay.checked_mul(factor).unwrap_or(self.max_delay).min(self.max_delay)
    }

    /// After attempt `attempt` failed with `class`: `Some(wait)` to try again, `None` to give up.
    pub fn next(&self, attempt: u32, class: ErrorClass) -> Option<Duration> {
        (class == ErrorClass::Transient && attempt < self.max_attempts).then(|| self.delay(attempt))
    }

    /// Check the values that types alone cannot; `Err` gives the key and the message.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_attempts == 0 {
            return Err(("max_attempts", "must be ≥ 1"));
        }
        if self.initial_delay > self.max_delay {
            return Err(("initial_delay", "must not be longer than max_delay"));
        }
        Ok(())
    }
}

/// Durations as whole milliseconds in configuration files.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy { max_attempts, initial_delay: Duration::from_millis(500), max_delay: Duration::from_secs(5) }
    }

    #[test]
    fn backoff_doubles_then_stays_at_the_cap() {
        let p = policy(10);
        let waits: Vec<u64> = (1..=7).map(|n| p.delay(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(p.delay(0), Duration::from_millis(500));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(5), "no overflow for absurd attempt numbers");
    }

    #[test]
    fn gives_up_after_max_attempts_and_never_retries_terminal_failures() {
        let p = policy(3);
        assert_eq!(p.next(1, ErrorClass::Transient), Some(Duration::from_millis(500)));
        assert_eq!(p.next(2, ErrorClass::Transient), Some(Duration::from_millis(1000)));
        assert_eq!(p.next(3, ErrorClass::Transient), None);
        assert_eq!(p.next(1, ErrorClass::Terminal), None);
        assert_eq!(RetryPolicy::once().next(1, ErrorClass::Transient), None);
    }

    #[test]
    fn validates_and_reads_milliseconds() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert_eq!(policy(0).validate().unwrap_err().0, "max_attempts");
        let p: RetryPolicy = toml::from_str("max_attempts = 4\ninitial_delay = 250\nmax_delay = 1000").expect("toml");
        assert_eq!(
            p,
            RetryPolicy {
                max_attempts: 4,
                initial_delay: Duration::from_millis(250),
                max_delay: Duration::from_secs(1)
            }
        );
        assert!(toml::from_str::<RetryPolicy>("retries = 3").is_err(), "unknown keys are refused");
        let bad = RetryPolicy { initial_delay: Duration::from_secs(9), ..policy(2) };
        assert_eq!(bad.validate().unwrap_err().0, "initial_delay");
    }
}
