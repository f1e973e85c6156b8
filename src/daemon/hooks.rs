//! Event hooks: every executable in `hooks.commands` is called once per event with the event as one JSON object
//! on stdin (`{"event": "series_ready", "at": …, …}`). Each call is a job of kind `hook` (persistent, retried
//! with backoff, dead-lettered), run on its own worker thread with `hooks.timeout_secs`, so a slow or failing
//! hook is logged and retried but never holds up the pipeline.
//!
//! Events: `series_ready`, `series_encoded`, `synthetic_written`, `synthetic_delivered`, `file_quarantined`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::HooksConfig;
use crate::store::{HookJob, NewJob, Payload};

use super::files::sha256_bytes;

/// The hook jobs for one event: one per configured command. `occurrence` makes the key unique per event
/// occurrence (e.g. the series content key), so the same occurrence never calls a hook twice.
pub fn hook_jobs(
    cfg: &HooksConfig,
    event: &str,
    occurrence: &str,
    series_ref: Option<i64>,
    mut body: serde_json::Value,
) -> Vec<NewJob> {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("event".into(), event.into());
        obj.insert("at".into(), crate::store::now().into());
        obj.insert("ldae_version".into(), crate::VERSION.into());
    }
    cfg.commands
        .iter()
        .map(|cmd| {
            let c = cmd.to_string_lossy();
            NewJob {
                key: format!("hook:{event}:{occurrence}:{}", &sha256_bytes(c.as_bytes())[..16]),
                series_ref,
                payload: Payload::Hook(HookJob { command: c.into_owned(), event: body.clone() }),
                priority: -10,
            }
        })
        .collect()
}

/// Run one hook: spawn it, write the event to stdin, wait at most `timeout` (then kill it). Ok only on exit 0.
pub fn run_hook(command: &Path, event: &serde_json::Value, timeout: Duration) -> Result<(), String> {
    let mut child = Command::new(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("hook {}: cannot start: {e}", command.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that exits without reading stdin gives EPIPE here: not an error by itself, its status decides.
        let _ = stdin.write_all(event.to_string().as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let err: String = err.trim().replace('\n', " ").chars().take(300).collect();
                return Err(format!("hook {}: exited with {status}: {err}", command.display()));
            }
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "hook {}: timed out after {:.1} s (killed)",
                    command.display(),
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("hook {}: {e}", command.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn hook_gets_the_event_fails_and_times_out() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("got.json");
        let ok = script(d.path(), "ok.sh", &format!("cat > {}", out.display()));
        let cfg = HooksConfig { commands: vec![ok.clone()], timeout_secs: 5.0 };
        let jobs = hook_jobs(&cfg, "series_ready", "k1", None, serde_json::json!({ "series_uid": "1.2" }));
        assert_eq!(jobs.len(), 1);
        let crate::store::Payload::Hook(h) = &jobs[0].payload else { panic!("a hook payload") };
        let ev = &h.event;
        run_hook(&ok, ev, Duration::from_secs(5)).unwrap();
        let got: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(got["event"], "series_ready");
        assert_eq!(got["series_uid"], "1.2");
        let bad = script(d.path(), "bad.sh", "echo nope >&2; exit 3");
        let e = run_hook(&bad, ev, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("nope") && e.contains('3'), "{e}");
        let slow = script(d.path(), "slow.sh", "sleep 5");
        let e = run_hook(&slow, ev, Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        let e = run_hook(&d.path().join("missing"), ev, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
    }
}
