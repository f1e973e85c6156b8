//! The typed configuration (`config/ldae.toml`): one struct per section, unknown keys rejected, every value
//! checked, and every error naming the key path (`stability.quiet_secs: must be > 0`).
//!
//! Relative paths in a file are resolved against the directory of that file ([`Config::load`]), so a command run
//! from anywhere finds the same folders, template and model. Each section has a `Default` equal to the shipped
//! `config/ldae.toml` (paths relative to `config/`: `../var/incoming`, `../weights/demo`), so a missing section
//! means "the defaults". Without `--config`, [`default_config_path`] finds the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A parse or type error; `key` is the dotted key path (`model.device`).
    #[error("{path}: {key}: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub paths: PathsConfig,
    pub intake: IntakeConfig,
    pub stability: StabilityConfig,
    pub convert: ConvertConfig,
    pub preprocess: PreprocessConfig,
    /// Which converted series are brain volumes to register and encode.
    pub select: crate::dicom::select::SelectConfig,
    /// Thresholds a registration must pass to be encoded.
    pub qc: crate::preprocess::qc::QcConfig,
    /// The gap policy: which missing timepoints of a patient are synthesised.
    pub longitudinal: crate::longitudinal::policy::LongitudinalConfig,
    /// How synthetic series are written as DICOM and sent to the PACS.
    pub delivery: crate::daemon::delivery::config::DeliveryConfig,
    pub model: ModelSection,
    pub jobs: JobsConfig,
    pub hooks: HooksConfig,
    /// Bounds on what a file from outside may make ldae allocate.
    pub limits: crate::limits::Limits,
    pub lookup: LookupConfig,
    /// Which database holds the state and the queue.
    pub store: StoreConfig,
}

/// Where things live on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Drop folders watched for incoming DICOM.
    pub incoming: Vec<PathBuf>,
    /// SQLite database and other state.
    pub state: PathBuf,
    /// Unusable files, in `quarantine/<reason>/` with a JSON sidecar.
    pub quarantine: PathBuf,
    /// Processed instances when `intake.after_commit = "archive"`.
    pub archive: PathBuf,
    /// Volumes, model inputs, codes and synthetic scans.
    pub outputs: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            incoming: vec![PathBuf::from("../var/incoming")],
            state: PathBuf::from("../var/state"),
            quarantine: PathBuf::from("../var/quarantine"),
            archive: PathBuf::from("../var/archive"),
            outputs: PathBuf::from("../var/outputs"),
        }
    }
}

/// What to do with an instance file once its series is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterCommit {
    Archive,
    Keep,
    Delete,
}

/// How files are noticed and accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// Poll instead of inotify (network shares: NFS, SMB).
    pub poll: bool,
    /// Full rescan period in seconds (catches what inotify misses).
    pub rescan_secs: u64,
    /// A file is complete once its size and mtime have not changed for this long.
    pub settle_secs: f64,
    /// Pause intake while any configured folder (drop folders, state, quarantine, archive, outputs) lies on a
    /// file system with less free space than this (MiB).
    pub min_free_mib: u64,
    pub after_commit: AfterCommit,
    /// A file whose header parse was in flight when the process died this many times is quarantined
    /// (`crashed_parser`) instead of being read again.
    pub max_parse_crashes: u32,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            poll: false,
            rescan_secs: 30,
            settle_secs: 2.0,
            min_free_mib: 1024,
            after_commit: AfterCommit::Archive,
            max_parse_crashes: 1,
        }
    }
}

/// When a series counts as complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StabilityConfig {
    /// Quiet period after the last new instance, in seconds.
    pub quiet_secs: f64,
}

impl Default for StabilityConfig {
    fn default() -> Self {
        StabilityConfig { quiet_secs: 60.0 }
    }
}

/// DICOM → volume conversion rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConvertConfig {
    /// Relative tolerance on slice spacing before a series counts as non-uniform.
    pub spacing_tolerance: f64,
    /// Fill uniform-spacing gaps (missing slices) by interpolation instead of rejecting; marked in the sidecar.
    pub resample_gaps: bool,
    /// Minimum number of slices for a 3-D volume.
    pub min_slices: usize,
}

impl Default for ConvertConfig {
    fn default() -> Self {
        ConvertConfig { spacing_tolerance: 0.01, resample_gaps: false, min_slices: 3 }
    }
}

/// Registration and model-input preparation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// T1 template (MNI space). Default: the shipped MNI ICBM152 2009a.
    pub template: PathBuf,
    /// Brain mask in the template's grid.
    pub template_mask: PathBuf,
    /// Coarsest-to-finest shrink factors of the registration pyramid.
    pub pyramid: Vec<u32>,
    /// Optimiser iterations per pyramid level.
    pub iterations: u32,
    /// The stages, in order (default: register → template mask → resize; the paper's: n4 → brain_extract →
    /// register → resize).
    pub steps: Vec<crate::preprocess::steps::Step>,
    /// The grid the registered scan is resampled onto for the model input (default: the template image's).
    pub grid: Option<crate::preprocess::steps::GridSpec>,
    /// N4 bias-field correction (the `n4` step and `ldae n4`).
    pub n4: crate::preprocess::n4::N4Options,
    /// Brain extraction (the `brain_extract` step).
    pub brain: crate::preprocess::brain::BrainOptions,
    /// Deformable registration (the `syn` step).
    pub syn: crate::preprocess::deformable::SynOptions,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            template: PathBuf::from("../weights/templates/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
            template_mask: PathBuf::from("../weights/templates/mni152_brain_mask_nilearn_res1.nii.gz"),
            pyramid: vec![4, 2, 1],
            iterations: 100,
            steps: crate::preprocess::steps::Step::default_steps(),
            grid: None,
            n4: crate::preprocess::n4::N4Options::default(),
            brain: crate::preprocess::brain::BrainOptions::default(),
            syn: crate::preprocess::deformable::SynOptions::default(),
        }
    }
}

/// Which compute device runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// The model the daemon encodes with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Model directory (config.json + weights). Empty: the daemon converts and registers but does not encode.
    pub dir: PathBuf,
    pub device: DeviceKind,
    /// DDIM steps for inversion and sampling.
    pub steps: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection { dir: PathBuf::from("../weights/demo"), device: DeviceKind::Cpu, steps: 10 }
    }
}

impl ModelSection {
    /// The model id stored with every embedding: the model folder's name (`demo` for weights/demo).
    pub fn id(&self) -> String {
        model_id(&self.dir)
    }
}

/// The model id of a model folder: its name.
pub fn model_id(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

/// The persistent job queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Attempts before a job goes to the dead-letter state.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `backoff_max_secs`.
    pub backoff_secs: f64,
    pub backoff_max_secs: f64,
    /// Worker threads for CPU stages (0 = number of cores).
    pub cpu_workers: usize,
    /// A job whose worker was lost (process died, or hung or paused past its lease) this many times is
    /// dead-lettered instead of run again.
    pub max_crashes: u32,
    /// How long a claim holds without a heartbeat, seconds; each worker process renews its jobs' leases every
    /// `lease_secs / 3`. A job whose worker died on another host is run again after at most this long (one on
    /// this host, sharing `paths.state`, at once).
    pub lease_secs: f64,
    /// The longest each stage may run before it is abandoned (and retried, then dead-lettered).
    pub stage_timeout_secs: StageTimeouts,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_attempts: 5,
            backoff_secs: 5.0,
            backoff_max_secs: 600.0,
            cpu_workers: 0,
            max_crashes: 3,
            lease_secs: 30.0,
            stage_timeout_secs: StageTimeouts::default(),
        }
    }
}

/// Per-stage time limits, seconds. A stage past its limit is abandoned: the job is recorded as failed (retried
/// with backoff, then dead-lettered) and the worker goes on with a fresh thread; see `daemon::jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageTimeouts {
    /// One file's header parse on intake (a timeout quarantines the file: `parser_timeout`).
    pub parse: f64,
    pub convert: f64,
    pub archive: f64,
    pub preprocess: f64,
    pub encode: f64,
    /// One synthetic series' association with the PACS (C-STORE of every pending instance).
    pub deliver: f64,
}

impl Default for StageTimeouts {
    fn default() -> Self {
        StageTimeouts {
            parse: 60.0,
            convert: 900.0,
            archive: 600.0,
            preprocess: 1800.0,
            encode: 3600.0,
            deliver: 900.0,
        }
    }
}

impl StageTimeouts {
    /// The limit for a job kind (hooks: their own timeout plus a margin; they kill their child themselves).
    pub fn for_kind(&self, kind: &str, hooks_timeout_secs: f64) -> std::time::Duration {
        let secs = match kind {
            "convert" => self.convert,
            "archive" => self.archive,
            "preprocess" => self.preprocess,
            "encode" => self.encode,
            "deliver" => self.deliver,
            _ => hooks_timeout_secs + 30.0,
        };
        std::time::Duration::from_secs_f64(secs)
    }
}

/// The store: absent `url` means SQLite in `paths.state` (one host); a `postgresql://user@host:port/db` URL means
/// that PostgreSQL database, which several `ldae serve` processes on several hosts can share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: Option<String>,
}

/// Event hooks: executables called with a JSON event on stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    pub commands: Vec<PathBuf>,
    pub timeout_secs: f64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig { commands: Vec::new(), timeout_secs: 30.0 }
    }
}

/// The researcher look-ups (`ldae report`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// Probe files (`ldae probe fit` output) whose scores `ldae report` shows for every timepoint.
    pub probes: Vec<PathBuf>,
}

impl Config {
    /// Parse and validate TOML text; `path` is used in errors.
    pub fn from_toml_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "(syntax)".into(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid { path: path.to_path_buf(), key, message: e.into_inner().message().to_string() }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Read, parse and validate a config file; its relative paths are made absolute against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        let mut cfg = Self::from_toml_str(path, &text)?;
        cfg.resolve_relative_to(&config_dir(path));
        Ok(cfg)
    }

    /// Make every relative path (folders, template, model, hook commands given as paths) absolute against `base`.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = normalize(&base.join(&*p));
            }
        };
        let paths = &mut self.paths;
        paths.incoming.iter_mut().for_each(fix);
        for p in [&mut paths.state, &mut paths.quarantine, &mut paths.archive, &mut paths.outputs] {
            fix(p);
        }
        fix(&mut self.preprocess.template);
        fix(&mut self.preprocess.template_mask);
        fix(&mut self.model.dir);
        self.lookup.probes.iter_mut().for_each(fix);
        // A bare command name (no '/') is looked up on PATH, not in the config's folder.
        self.hooks.commands.iter_mut().filter(|c| c.components().count() > 1).for_each(fix);
    }

    /// The defaults as if they were read from `<cwd>/config/ldae.toml` (when no config file exists at all).
    pub fn defaults_here() -> Config {
        let mut cfg = Config::default();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        cfg.resolve_relative_to(&cwd.join("config"));
        cfg
    }

    /// Check values that types alone cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid { path: path.to_path_buf(), key: key.into(), message: message.into() })
        };
        if self.paths.incoming.is_empty() {
            return bad("paths.incoming", "at least one drop folder is needed");
        }
        if let Some(url) = &self.store.url {
            if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                return bad("store.url", "must be a postgresql://user@host:port/database URL (or absent: SQLite)");
            }
        }
        if !(self.stability.quiet_secs > 0.0 && self.stability.quiet_secs.is_finite()) {
            return bad("stability.quiet_secs", "must be a positive number of seconds");
        }
        if !(self.intake.settle_secs >= 0.0 && self.intake.settle_secs.is_finite()) {
            return bad("intake.settle_secs", "must be ≥ 0");
        }
        if self.intake.rescan_secs == 0 {
            return bad("intake.rescan_secs", "must be > 0");
        }
        if !(self.convert.spacing_tolerance > 0.0 && self.convert.spacing_tolerance < 0.5) {
            return bad("convert.spacing_tolerance", "must be in (0, 0.5)");
        }
        if self.convert.min_slices < 1 {
            return bad("convert.min_slices", "must be ≥ 1");
        }
        if self.preprocess.pyramid.is_empty() || self.preprocess.pyramid.contains(&0) {
            return bad("preprocess.pyramid", "must be a non-empty list of shrink factors ≥ 1");
        }
        if self.preprocess.iterations == 0 {
            return bad("preprocess.iterations", "must be > 0");
        }
        if let Err(m) = crate::preprocess::steps::validate_steps(&self.preprocess.steps) {
            return bad("preprocess.steps", &m);
        }
        if let Some(Err(m)) = self.preprocess.grid.as_ref().map(|g| g.validate()) {
            return bad("preprocess.grid", &m);
        }
        if let Err((k, m)) = self.preprocess.n4.validate() {
            return bad(k, m);
        }
        if let Err((k, m)) = self.preprocess.brain.validate() {
            return bad(k, m);
        }
        if let Err((k, m)) = self.preprocess.syn.validate() {
            return bad(k, m);
        }
        if self.model.steps == 0 || self.model.steps > 1000 {
            return bad("model.steps", "must be in 1..=1000");
        }
        if self.jobs.max_attempts == 0 {
            return bad("jobs.max_attempts", "must be ≥ 1");
        }
        if !(self.jobs.backoff_secs > 0.0 && self.jobs.backoff_max_secs >= self.jobs.backoff_secs) {
            return bad("jobs.backoff_secs", "must be > 0 and ≤ jobs.backoff_max_secs");
        }
        let t = &self.jobs.stage_timeout_secs;
        for (key, v) in [
            ("jobs.stage_timeout_secs.parse", t.parse),
            ("jobs.stage_timeout_secs.convert", t.convert),
            ("jobs.stage_timeout_secs.archive", t.archive),
            ("jobs.stage_timeout_secs.preprocess", t.preprocess),
            ("jobs.stage_timeout_secs.encode", t.encode),
            ("jobs.stage_timeout_secs.deliver", t.deliver),
        ] {
            if !(v > 0.0 && v <= 1e7) {
                return bad(key, "must be a positive number of seconds (≤ 1e7)");
            }
        }
        if self.jobs.max_crashes == 0 {
            return bad("jobs.max_crashes", "must be ≥ 1");
        }
        if !(self.jobs.lease_secs >= 1.0 && self.jobs.lease_secs <= 86_400.0) {
            return bad("jobs.lease_secs", "must be between 1 and 86400 seconds");
        }
        if self.intake.max_parse_crashes == 0 {
            return bad("intake.max_parse_crashes", "must be ≥ 1");
        }
        if self.hooks.timeout_secs.is_nan() || self.hooks.timeout_secs <= 0.0 {
            return bad("hooks.timeout_secs", "must be > 0");
        }
        for (i, p) in self.lookup.probes.iter().enumerate() {
            if p.as_os_str().is_empty() {
                return bad(&format!("lookup.probes[{i}]"), "must be a probe file's path");
            }
            if self.lookup.probes[..i].contains(p) {
                return bad(&format!("lookup.probes[{i}]"), "names the same probe file twice");
            }
        }
        if let Err((key, message)) = self.limits.validate() {
            return bad(key, message);
        }
        if let Err((key, message)) = self.select.validate() {
            return bad(key, message);
        }
        if let Err((key, message)) = self.qc.validate() {
            return bad(key, message);
        }
        if let Err((key, message)) = self.longitudinal.validate() {
            return bad(key, &message);
        }
        if let Err((key, message)) = self.delivery.validate() {
            return bad(key, &message);
        }
        Ok(())
    }
}

/// The directory a config file's relative paths are resolved against: its own, made absolute.
fn config_dir(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match std::env::current_dir() {
        Ok(cwd) if dir.is_relative() => normalize(&cwd.join(dir)),
        _ => normalize(dir),
    }
}

/// `a/b/../c` → `a/c`, `a/./b` → `a/b` (lexically; the config's own folder layout, not symlinks).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where the configuration is when `--config` / `LDAE_CONFIG` is not given: the first that exists of
/// `./config/ldae.toml`, `<binary's folder>/ldae.toml`, `/etc/ldae/ldae.toml`, and the `config/ldae.toml` of
/// the checkout the binary was built from; `config/ldae.toml` when none does.
pub fn default_config_path() -> PathBuf {
    let mut candidates = vec![PathBuf::from("config/ldae.toml")];
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        candidates.push(dir.join("ldae.toml"));
    }
    candidates.push(PathBuf::from("/etc/ldae/ldae.toml"));
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ldae.toml"));
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("config/ldae.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_valid_and_equals_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ldae.toml");
        let cfg = Config::load(&p).expect("shipped config loads");
        let mut defaults = Config::default();
        defaults.resolve_relative_to(p.parent().expect("config dir"));
        assert_eq!(cfg, defaults);
        // Resolved against config/: the checkout's var/ and weights/.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(cfg.model.dir, normalize(&root.join("weights/demo")));
        assert_eq!(cfg.paths.incoming, vec![normalize(&root.join("var/incoming"))]);
        assert!(cfg.preprocess.template.is_file(), "{:?}", cfg.preprocess.template);
    }

    #[test]
    fn published_config_runs_the_papers_order_on_the_2009c_grid() {
        use crate::preprocess::steps::{GridSpec, NamedGrid, Step};
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/published.toml");
        let cfg = Config::load(&p).expect("published config loads");
        assert_eq!(cfg.preprocess.steps, vec![Step::N4, Step::BrainExtract, Step::Register, Step::Syn, Step::Resize]);
        assert_eq!(cfg.preprocess.steps, Step::published_steps());
        assert_eq!(cfg.preprocess.syn, crate::preprocess::deformable::SynOptions::default());
        assert_eq!(cfg.preprocess.grid, Some(GridSpec::Named(NamedGrid::Icbm152_2009c)));
        let g = cfg.preprocess.grid.as_ref().map(|g| g.grid()).expect("grid");
        assert_eq!(g.shape, [193, 229, 193]);
        // Everything outside [preprocess] is the shipped default.
        let shipped = Config::load(&p.with_file_name("ldae.toml")).expect("shipped config loads");
        assert_eq!(Config { preprocess: shipped.preprocess.clone(), ..cfg.clone() }, shipped);
        let bad = "[preprocess]\nsteps = [\"resize\", \"register\"]\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, bad).expect("write");
        let e = Config::load(&f).expect_err("bad steps are refused").to_string();
        assert!(e.contains("preprocess.steps"), "{e}");
        for (toml, key) in [
            ("[preprocess.syn]\nradius = 0\n", "preprocess.syn.radius"),
            ("[preprocess.syn]\nlevels_mm = []\n", "preprocess.syn.levels_mm"),
            ("[preprocess.syn]\nstep = -1.0\n", "preprocess.syn.step"),
        ] {
            std::fs::write(&f, toml).expect("write");
            let e = Config::load(&f).expect_err("bad syn settings are refused").to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        std::fs::write(&f, "[preprocess.syn]\nlevels_mm = [4.0, 3.0]\n").expect("write");
        let c = Config::load(&f).expect("a partial [preprocess.syn] loads");
        assert_eq!(c.preprocess.syn.levels_mm, vec![4.0, 3.0]);
        assert_eq!(c.preprocess.syn.radius, crate::preprocess::deformable::SynOptions::default().radius);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e = Config::from_toml_str(Path::new("c.toml"), "[stability]\nquiet_sec = 3\n").unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("quiet_sec"), "{e}");
    }

    #[test]
    fn lookup_probes_resolve_against_the_config_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[lookup]\nprobes = [\"probes/ad.safetensors\", \"/abs/age.safetensors\"]\n").unwrap();
        let cfg = Config::load(&p).unwrap();
        assert_eq!(
            cfg.lookup.probes,
            vec![normalize(&dir.path().join("probes/ad.safetensors")), PathBuf::from("/abs/age.safetensors")]
        );
        let twice = "[lookup]\nprobes = [\"a.safetensors\", \"a.safetensors\"]\n";
        let e = Config::from_toml_str(Path::new("c.toml"), twice).unwrap_err().to_string();
        assert!(e.contains("lookup.probes[1]") && e.contains("twice"), "{e}");
        let e = Config::from_toml_str(Path::new("c.toml"), "[lookup]\nprobes = [\"\"]\n").unwrap_err().to_string();
        assert!(e.contains("lookup.probes[0]"), "{e}");
        let e = Config::from_toml_str(Path::new("c.toml"), "[lookup]\nprobe = []\n").unwrap_err().to_string();
        assert!(e.contains("lookup") && e.contains("probe"), "{e}");
    }

    #[test]
    fn bad_value_names_its_path() {
        let e = Config::from_toml_str(Path::new("c.toml"), "[model]\ndevice = \"tpu\"\n").unwrap_err().to_string();
        assert!(e.contains("model.device"), "{e}");
        let e = Config::from_toml_str(Path::new("c.toml"), "[stability]\nquiet_secs = -1\n").unwrap_err().to_string();
        assert!(e.contains("stability.quiet_secs"), "{e}");
        for bad in ["0.5", "-3", "nan", "1e9"] {
            let e = Config::from_toml_str(Path::new("c.toml"), &format!("[jobs]\nlease_secs = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("jobs.lease_secs"), "{bad}: {e}");
        }
        let ok = Config::from_toml_str(Path::new("c.toml"), "[jobs]\nlease_secs = 2\n").expect("2 s is a lease");
        assert_eq!(ok.jobs.lease_secs, 2.0);
    }
}
