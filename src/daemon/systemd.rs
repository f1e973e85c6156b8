//! systemd notifications (Type=notify): READY, STATUS, WATCHDOG, RELOADING, STOPPING. Without `NOTIFY_SOCKET`
//! (not started by systemd) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Startup finished.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line status for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Keep-alive; systemd restarts the service when these stop for `WatchdogSec`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send WATCHDOG=1 (half the configured period), if the watchdog is on.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Reloading the configuration (followed by [`ready`]).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(m) => send(&[NotifyState::Reloading, m]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Draining before exit.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining: finishing running jobs")]);
}
