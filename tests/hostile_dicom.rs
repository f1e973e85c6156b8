//! The hostile DICOM corpus (tests/hostile/make_dicom.py: lying lengths, counts and dimensions, deep nesting,
//! deflate bombs, codestreams claiming 30000×30000, truncations) through the real `ldae convert` binary, one
//! process per file: each must be refused with exit code 1 and exactly one `rejected: ` line naming the file,
//! never a panic, within 256 MiB of resident memory (the child's peak RSS from `wait4`) and 5 s.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The bounds the issue sets for rejecting one hostile file.
const MAX_RSS_KIB: i64 = 256 * 1024;
const MAX_SECONDS: f64 = 5.0;
/// An address-space cap on the child, only so that a regression cannot take the test machine down with it.
const ADDRESS_SPACE_CAP: libc::rlim_t = 6 << 30;

struct Outcome {
    code: Option<i32>,
    stderr: String,
    rss_kib: i64,
    seconds: f64,
}

/// Run `ldae convert FILE -o OUT` and reap it with `wait4`, for its own peak RSS (so `Child::wait` is not used).
#[allow(clippy::zombie_processes)]
fn convert_one(file: &Path, out: &Path) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ldae"));
    cmd.args(["--config", "/nonexistent/ldae.toml", "--log", "warn", "convert"])
        .arg(file)
        .arg("-o")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let lim = libc::rlimit { rlim_cur: ADDRESS_SPACE_CAP, rlim_max: ADDRESS_SPACE_CAP };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn ldae");
    let pid = child.id() as libc::pid_t;
    // A hang must not hang the test: kill the child after 4× the time bound (the bound itself is asserted).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs_f64(MAX_SECONDS * 4.0)).is_err() {
            // SAFETY: kill(2) on the child pid; it fires only while wait4 below has not returned for 20 s.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for this child only.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let seconds = start.elapsed().as_secs_f64();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    assert_eq!(r, pid, "wait4 failed for {}", file.display());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Outcome { code, stderr, rss_kib: ru.ru_maxrss, seconds }
}

fn make_corpus(dir: &Path) -> Option<Vec<PathBuf>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/make_dicom.py");
    let out = match Command::new("python3").arg(&script).arg(dir).output() {
        Ok(o) => o,
        Err(e) => {
            assert!(std::env::var_os("LDAE_REQUIRE_ALL").is_none(), "python3 is required: {e}");
            eprintln!("SKIPPED: python3 not found ({e})");
            return None;
        }
    };
    assert!(out.status.success(), "make_dicom.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("corpus dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    Some(files)
}

#[test]
fn every_hostile_dicom_file_is_rejected_alone_within_memory_and_time() {
    let work = tempfile::tempdir().expect("tempdir");
    let corpus = work.path().join("corpus");
    let Some(files) = make_corpus(&corpus) else { return };
    // The kinds the issue names must all be there (the generator is the corpus's only definition).
    for kind in [
        "frames_4e9.dcm",
        "jpeg_baseline_sof_30000.dcm",
        "jpeg_extended12_sof_30000.dcm",
        "jpeg_lossless_sof_30000.dcm",
        "jpeg_ls_sof_30000.dcm",
        "j2k_siz_30000.dcm",
        "nested_sq_20000.dcm",
        "deflate_bomb_2gib.dcm",
        "no_preamble_element_4gib.dcm",
        "raw_implicit_element_4gib.dcm",
        "mosaic_images_4294967295.dcm",
        "rle_lying_offsets.dcm",
        "encap_100000_fragments.dcm",
    ] {
        assert!(corpus.join(kind).is_file(), "generator did not make {kind}");
    }
    assert!(files.len() >= 100, "expected the whole corpus, got {} files", files.len());
    let mut failures = Vec::new();
    let (mut worst_rss, mut worst_time) = (0i64, 0f64);
    for f in &files {
        let out = work.path().join("out");
        let o = convert_one(f, &out);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let lines: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("rejected: ")).collect();
        let mut why = Vec::new();
        if o.code != Some(1) {
            why.push(format!("exit code {:?}", o.code));
        }
        if lines.len() != 1 || !lines[0].starts_with(&format!("rejected: {}: ", f.display())) {
            why.push(format!("expected one rejection naming the file, got {lines:?}"));
        }
        if o.stderr.contains("panicked") {
            why.push("panicked".into());
        }
        if o.rss_kib > MAX_RSS_KIB {
            why.push(format!("peak RSS {} MiB", o.rss_kib / 1024));
        }
        if o.seconds > MAX_SECONDS {
            why.push(format!("took {:.2} s", o.seconds));
        }
        if !why.is_empty() {
            let tail: String = o.stderr.chars().take(400).collect();
            failures.push(format!("{name}: {} (stderr: {tail})", why.join("; ")));
        }
        if out.exists() && std::fs::read_dir(&out).map(|mut d| d.next().is_some()).unwrap_or(false) {
            failures.push(format!("{name}: something was written for a hostile file"));
        }
        let _ = std::fs::remove_dir_all(&out);
        worst_rss = worst_rss.max(o.rss_kib);
        worst_time = worst_time.max(o.seconds);
    }
    eprintln!("{} hostile files; worst peak RSS {} MiB, worst time {worst_time:.2} s", files.len(), worst_rss / 1024);
    assert!(
        failures.is_empty(),
        "{} of {} hostile files misbehaved:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
