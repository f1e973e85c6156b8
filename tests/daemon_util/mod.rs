//! Shared helpers for the daemon tests: a temporary installation (config + folders), starting the real `ldae`
//! binary, asking it for `status --json`, and making distinct DICOM series from the test series by rewriting UIDs.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;

pub const BIN: &str = env!("CARGO_BIN_EXE_ldae");

/// The test series shipped in tests/data/daemon/axial, sorted by name (= slice order).
pub fn axial_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/daemon/axial");
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("tests/data/daemon/axial").flatten().map(|e| e.path()).collect();
    v.sort();
    v
}

/// A temporary ldae installation.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// A private copy of the binary (a rebuild of target/debug/ldae during the test cannot swap it).
    pub bin: PathBuf,
    quiet_secs: f64,
    settle_secs: f64,
    extra: String,
    /// The `[preprocess]` and `[model]` sections.
    model: String,
}

impl Env {
    /// Folders under a temp dir; `extra` is appended to the TOML (e.g. a `[hooks]` section).
    pub fn new(quiet_secs: f64, settle_secs: f64, extra: &str) -> Env {
        Env::with_intake(quiet_secs, settle_secs, "min_free_mib = 1", extra)
    }

    /// Like [`Env::new`], with extra `[intake]` keys (`intake` must set `min_free_mib`).
    pub fn with_intake(quiet_secs: f64, settle_secs: f64, intake: &str, extra: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("ldae.toml");
        std::fs::create_dir_all(dir.path().join("incoming")).expect("incoming");
        let bin = dir.path().join("ldae");
        std::fs::copy(BIN, &bin).expect("copy the ldae binary");
        let model = format!(
            "[preprocess]\ntemplate = \"{d}/no-template.nii.gz\"\n[model]\ndir = \"{d}/no-model\"",
            d = dir.path().display()
        );
        let env = Env { dir, config, bin, quiet_secs, settle_secs, extra: extra.to_string(), model };
        env.write_config(intake);
        env
    }

    /// Like [`Env::new`], with the repository's template and demo model (the whole chain runs).
    pub fn with_model(quiet_secs: f64, settle_secs: f64) -> Env {
        Env::with_model_extra(quiet_secs, settle_secs, "")
    }

    /// Like [`Env::with_model`], with `extra` appended to the TOML.
    pub fn with_model_extra(quiet_secs: f64, settle_secs: f64, extra: &str) -> Env {
        let mut env = Env::new(quiet_secs, settle_secs, extra);
        let w = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
        env.model = format!(
            "[preprocess]\ntemplate = \"{}\"\ntemplate_mask = \"{}\"\n[model]\ndir = \"{}\"",
            w.join("templates/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").display(),
            w.join("templates/mni152_brain_mask_nilearn_res1.nii.gz").display(),
            w.join("demo").display()
        );
        env.write_config("min_free_mib = 1");
        env
    }

    /// Replace the extra TOML and rewrite the config (default `[intake]` keys).
    pub fn set_extra(&mut self, extra: &str) {
        self.extra = extra.to_string();
        self.write_config("min_free_mib = 1");
    }

    /// (Re)write the config file with these `[intake]` keys.
    pub fn write_config(&self, intake: &str) {
        let text = format!(
            "[paths]\nincoming = [\"{d}/incoming\"]\nstate = \"{d}/state\"\nquarantine = \"{d}/quarantine\"\n\
             archive = \"{d}/archive\"\noutputs = \"{d}/outputs\"\n\
             [intake]\nsettle_secs = {settle}\nrescan_secs = 2\n{intake}\n\
             [stability]\nquiet_secs = {quiet}\n\
             {model}\n\
             [jobs]\nbackoff_secs = 0.5\nbackoff_max_secs = 2.0\nmax_attempts = 3\ncpu_workers = 2\n\
             max_crashes = 10\n{extra}",
            d = self.dir.path().display(),
            settle = self.settle_secs,
            quiet = self.quiet_secs,
            extra = self.extra,
            model = self.model,
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Start `ldae serve`; its log goes to `serve-<n>.log`.
    pub fn start(&self, n: usize) -> Child {
        self.start_with(n, &[])
    }

    /// Start `ldae serve` with extra environment variables.
    pub fn start_with(&self, n: usize, envs: &[(&str, &str)]) -> Child {
        self.start_args(n, envs, &[])
    }

    /// Start `ldae serve <serve_args>` (e.g. `--role worker`) with extra environment variables.
    pub fn start_args(&self, n: usize, envs: &[(&str, &str)], serve_args: &[&str]) -> Child {
        let log = std::fs::File::create(self.path(&format!("serve-{n}.log"))).expect("log file");
        let mut tries = 0;
        loop {
            let spawned = Command::new(&self.bin)
                .args(["--config", self.config.to_str().expect("utf-8"), "--log", "info", "serve"])
                .args(serve_args)
                .envs(envs.iter().copied())
                .stdout(Stdio::null())
                .stderr(log.try_clone().expect("log fd"))
                .spawn();
            match spawned {
                Ok(c) => return c,
                // ETXTBSY: another thread's fork briefly held the fresh copy open for writing.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("start {}: {e}", self.bin.display()),
            }
        }
    }

    /// Run `ldae <args>` with this config; (exit code, stdout, stderr).
    pub fn ldae(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.bin)
            .args(["--config", self.config.to_str().expect("utf-8")])
            .args(args)
            .output()
            .expect("run ldae");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ldae status --json`, or None before the database exists.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, out, _) = self.ldae(&["status", "--json", "--series", "1000"]);
        if code != 0 {
            return None;
        }
        serde_json::from_str(&out).ok()
    }

    /// All logs so far (for failure messages): each log's last 40 lines, every warning and error in it, and
    /// the quarantine list (a failure is often a file quarantined long before the tail).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 0..200 {
            if let Ok(t) = std::fs::read_to_string(self.path(&format!("serve-{n}.log"))) {
                s.push_str(&format!(
                    "--- serve-{n}.log\n{}\n",
                    t.lines().rev().take(40).collect::<Vec<_>>().join("\n")
                ));
                let warnings: Vec<&str> = t.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
                s.push_str(&format!("--- serve-{n}.log warnings and errors\n{}\n", warnings.join("\n")));
            }
        }
        let (_, out, err) = self.ldae(&["quarantine", "list"]);
        s.push_str(&format!("--- ldae quarantine list\n{out}{err}\n"));
        s
    }
}

/// Poll `f` until it returns Some or `secs` pass.
pub fn wait_for<T>(secs: f64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Send a signal to a child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// SIGTERM, then wait (at most `secs`) for a clean exit; returns the exit code.
pub fn terminate(child: &mut Child, secs: f64) -> Option<i32> {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_for(secs, || child.try_wait().ok().flatten()).map(|s| s.code().unwrap_or(-1))
}

/// Files (recursively) under a folder.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Write `bytes` to `dst` the way a slow sender does: in `chunks` pieces with `pause` between, through one open
/// file (so size and mtime keep changing until the end).
pub fn write_slowly(dst: &Path, bytes: &[u8], chunks: usize, pause: Duration) {
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    let mut f = std::fs::File::create(dst).expect("create");
    let step = bytes.len().div_ceil(chunks.max(1));
    for (i, c) in bytes.chunks(step).enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        f.write_all(c).expect("write");
        f.flush().expect("flush");
    }
}

/// A copy of the DICOM file `src` as instance `index` of a new series `tag` (new Study/Series/SOP UIDs), as bytes.
pub fn rewrite_uids(src: &Path, tag: u32, index: usize) -> Vec<u8> {
    let mut obj = dicom_object::open_file(src).expect("open test DICOM");
    let study = format!("2.25.9{tag:04}1");
    let series = format!("2.25.9{tag:04}2");
    let sop = format!("2.25.9{tag:04}3{index:04}");
    let ui = |t, v: &str| DataElement::new(t, VR::UI, PrimitiveValue::from(v));
    obj.put(ui(tags::STUDY_INSTANCE_UID, &study));
    obj.put(ui(tags::SERIES_INSTANCE_UID, &series));
    obj.put(ui(tags::SOP_INSTANCE_UID, &sop));
    obj.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(format!("CRASH{}", tag % 5))));
    obj.meta_mut().media_storage_sop_instance_uid = sop.clone();
    obj.meta_mut().update_information_group_length();
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("write DICOM");
    out
}

/// A legal but slow-to-parse DICOM file: instance 0 of series `tag` (as [`rewrite_uids`]) carrying `elements`
/// extra private elements before Pixel Data, which a header parse must read one by one (1 M take about a second).
pub fn slow_to_parse(src: &Path, tag: u32, elements: usize) -> Vec<u8> {
    use dicom_core::Tag;
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(tmp.path(), rewrite_uids(src, tag, 9999)).expect("write");
    let mut obj = dicom_object::open_file(tmp.path()).expect("reopen");
    let mut n = 0;
    'outer: for group in (0x0009u16..0x7fe0).step_by(2) {
        obj.put(DataElement::new(Tag(group, 0x0010), VR::LO, PrimitiveValue::from("LDAE TEST")));
        for elem in 0x1000u16..0x2000 {
            if n >= elements {
                break 'outer;
            }
            obj.put(DataElement::new(Tag(group, elem), VR::SS, PrimitiveValue::from(n as i16)));
            n += 1;
        }
    }
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("write DICOM");
    out
}

/// Rows of a query on the daemon's database (opened read-only beside it), or 0 before it exists.
pub fn db_count(env: &Env, sql: &str) -> i64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(env.path("state/ldae.sqlite"), flags)
        .and_then(|db| db.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(0)
}

/// The series UID `rewrite_uids` gives series `tag`.
pub fn series_uid(tag: u32) -> String {
    format!("2.25.9{tag:04}2")
}

/// Copy the files of one DICOM session folder into `dst` (created).
pub fn copy_session(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("session").flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy");
    }
}

/// `ldae synthetic list --json` (empty until the daemon has created and migrated its database).
pub fn synthetic_list(env: &Env) -> Vec<serde_json::Value> {
    let (code, out, err) = env.ldae(&["synthetic", "list", "--json"]);
    if code != 0 {
        assert!(err.contains("schema version 0") || err.contains("no database yet"), "{err}");
        return vec![];
    }
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("synthetic json")
}
