//! Poison-pill defences: no single input may take the daemon down, wedge it, or put it into a crash loop.
//!
//! - The header parse of every new file (and, for compressed transfer syntaxes, the check that every frame's
//!   codestream header agrees with the DICOM header, `pixels::check_codestreams`, so that a file with lying
//!   frames is quarantined as a file rather than failing its series at conversion) runs on its own thread under `catch_unwind` and a time limit
//!   (`jobs.stage_timeout_secs.parse`): a panic quarantines the file as `crashed_parser`, a hang as
//!   `parser_timeout` (the stuck thread is abandoned — a blocking computation cannot be stopped from outside in
//!   safe Rust — and its result, should it ever come, is dropped).
//! - What a panic cannot cover (abort on allocation failure, stack overflow, a signal) is covered by the store:
//!   the parse is recorded as in flight before it starts ([`Store::parse_begin`]) and ended after; on start
//!   [`recover_interrupted_parses`] quarantines a file that was in flight during `intake.max_parse_crashes`
//!   deaths, with reason `crashed_parser`, instead of reading it again. (A `kill -9` that happens to land during
//!   a parse counts too: the file can be requeued with `ldae quarantine requeue`; SIGTERM drains and never counts.)
//! - Jobs get the same treatment in `jobs.rs` (stage thread, `catch_unwind`, per-stage timeout) and in
//!   the leases (`store/leases.rs`: a job whose worker was lost `jobs.max_crashes` times is dead-lettered).

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::config::Config;
use crate::dicom::{read_header_with, DicomError, InstanceHeader};
use crate::limits::Limits;
use crate::store::{ArrivedFile, Store};

use super::files::file_stamp;
use super::hooks::hook_jobs;
use super::quarantine::quarantine_file;
use super::DaemonError;

/// The quarantine reason for a file that crashed the parser.
pub const CRASHED_PARSER: &str = "crashed_parser";
/// The quarantine reason for a file whose parse did not end in time.
pub const PARSER_TIMEOUT: &str = "parser_timeout";

/// The text of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// How a guarded header parse ended.
#[derive(Debug)]
pub enum Parsed {
    Header(Box<InstanceHeader>),
    Error(DicomError),
    Panicked(String),
    TimedOut(Duration),
}

/// Parse one file's header (and check its codestreams) on a fresh thread with `catch_unwind`, waiting at most
/// `limit`.
pub fn guarded_read_header(path: &Path, limits: &Limits, limit: Duration) -> Parsed {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    let limits = limits.clone();
    let spawned = std::thread::Builder::new().name("ldae-parse".into()).spawn(move || {
        let r = std::panic::catch_unwind(|| {
            let h: InstanceHeader = read_header_with(&p, &limits)?;
            crate::dicom::pixels::check_codestreams(&h, &limits)?;
            Ok(h)
        });
        let _ = tx.send(r);
    });
    if let Err(e) = spawned {
        return Parsed::Error(DicomError::Io { path: path.to_path_buf(), source: e });
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(Ok(h))) => Parsed::Header(Box::new(h)),
        Ok(Ok(Err(e))) => Parsed::Error(e),
        Ok(Err(p)) => Parsed::Panicked(panic_message(&*p)),
        Err(mpsc::RecvTimeoutError::Timeout) => Parsed::TimedOut(limit),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Parsed::Panicked("the parser thread ended without a result".into())
        }
    }
}

/// On start, before intake: every file whose parse was in flight when the process died. At
/// `intake.max_parse_crashes` deaths it is quarantined as `crashed_parser`; below, it is parsed again (its count
/// kept). A file gone or changed since is forgotten. Returns how many were quarantined.
pub fn recover_interrupted_parses(store: &Store, cfg: &Config) -> Result<usize, DaemonError> {
    let mut quarantined = 0;
    for row in store.parses_interrupted()? {
        let f: &ArrivedFile = &row.file;
        let same = file_stamp(&f.path) == Some((f.size, f.mtime_ns));
        let sha = f.sha256.get(..12).unwrap_or("-").to_string();
        if !same || store.is_known_file(&f.path, f.size, f.mtime_ns)? {
            store.parse_end(&f.path)?;
            continue;
        }
        if row.crashes < i64::from(cfg.intake.max_parse_crashes) {
            tracing::warn!(sha, crashes = row.crashes, "the process died while parsing a file: parsing it again");
            continue;
        }
        let detail =
            format!("crashed the parser: the process died while reading this file's header ({} time(s))", row.crashes);
        let hooks = hook_jobs(
            &cfg.hooks,
            "file_quarantined",
            &format!("{}:{}", f.sha256, crate::store::now()),
            None,
            serde_json::json!({ "path": f.path, "reason": CRASHED_PARSER, "detail": detail }),
        );
        let (id, _) = quarantine_file(store, cfg, f, CRASHED_PARSER, &detail, None, &hooks)?;
        store.parse_end(&f.path)?;
        tracing::error!(quarantine_id = id, sha, reason = CRASHED_PARSER, "file quarantined: it crashed the parser");
        quarantined += 1;
    }
    Ok(quarantined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_that_errs_panics_or_hangs_is_reported_not_propagated() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.dcm");
        std::fs::write(&p, b"not dicom at all").unwrap();
        assert!(matches!(guarded_read_header(&p, &Limits::default(), Duration::from_secs(10)), Parsed::Error(_)));
        let e = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*e), "boom 7");
    }
}
