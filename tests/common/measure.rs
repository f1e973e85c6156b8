//! Running the real binary on one hostile input and measuring what it cost: exit status, stderr, the child's own
//! peak resident memory (`ru_maxrss` from `wait4`, so `Child::wait` is never used) and wall time. The child runs
//! under an address-space cap, only so that a regression cannot take the test machine down with it, and is
//! killed after `kill_after` (the time bound itself is asserted by the caller).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The bounds the hardening issue sets for refusing one hostile file.
pub const MAX_RSS_KIB: i64 = 256 * 1024;
pub const MAX_SECONDS: f64 = 5.0;
const ADDRESS_SPACE_CAP: libc::rlim_t = 6 << 30;

/// What one run cost.
#[derive(Debug)]
pub struct Measured {
    /// Exit code, or minus the signal that ended it.
    pub code: i32,
    pub stderr: String,
    pub rss_kib: i64,
    pub seconds: f64,
}

/// Run `cmd` to its end (stdout discarded, stderr kept) and measure it.
#[allow(clippy::zombie_processes)] // the child is reaped by wait4 below, which also reports its ru_maxrss
pub fn run_measured(mut cmd: Command, kill_after: Duration) -> Measured {
    let err_path = tempfile::NamedTempFile::new().expect("stderr file");
    let err_file = err_path.reopen().expect("reopen");
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err_file);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let lim = libc::rlimit { rlim_cur: ADDRESS_SPACE_CAP, rlim_max: ADDRESS_SPACE_CAP };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn ldae");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: pid is our own child, not yet reaped (std's Child is never waited on here).
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if !killed && start.elapsed() > kill_after {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = start.elapsed().as_secs_f64();
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -libc::WTERMSIG(status) };
    let stderr = std::fs::read_to_string(err_path.path()).unwrap_or_default();
    Measured { code, stderr, rss_kib: usage.ru_maxrss, seconds }
}
