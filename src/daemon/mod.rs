//! The daemon: watch, intake, stability, persistent jobs, stages, quarantine, hooks, systemd notifications.
