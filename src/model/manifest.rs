//! Converting a model directory's `.pth` files to safetensors, and the `manifest.json` that records what a
//! verified directory holds: the sha256 and size of every weights file and of `config.json`, the configuration
//! itself, and the tool version that wrote it. [`check_dir`] re-verifies keys, shapes and checksums.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::weights::{load_file_checked, locate, model_config, WeightsError, WeightsFile};

/// Name of the manifest in a model directory.
pub const MANIFEST: &str = "manifest.json";

/// One file's checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSum {
    pub sha256: String,
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub tool: String,
    pub version: String,
    /// The model configuration the files were verified against.
    pub config: serde_json::Value,
    /// File name (in the model directory) → checksum.
    pub files: BTreeMap<String, FileSum>,
}

/// Why a directory failed verification (each problem one entry).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Weights(#[from] Box<WeightsError>),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{} problem(s): {}", .problems.len(), .problems.join("; "))]
    Check { dir: PathBuf, problems: Vec<String> },
}

impl From<WeightsError> for ManifestError {
    fn from(e: WeightsError) -> Self {
        ManifestError::Weights(Box::new(e))
    }
}

/// sha256 (hex) and size of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<FileSum, ManifestError> {
    let io = |source| ManifestError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileSum { sha256: hex::encode(h.finalize()), bytes })
}

/// What `convert_dir` did for one file.
#[derive(Debug, Clone)]
pub struct Converted {
    pub file: WeightsFile,
    /// The file read.
    pub source: PathBuf,
    /// The safetensors written (None when the source already was safetensors).
    pub written: Option<PathBuf>,
    pub tensors: usize,
}

/// For each of the three files: read it (`.pth` preferred as the source of truth, else `.safetensors`), verify
/// its keys, write `<stem>.safetensors` when the source was a `.pth`; then write `manifest.json`.
pub fn convert_dir(dir: &Path) -> Result<Vec<Converted>, ManifestError> {
    let cfg = model_config(dir)?;
    let mut done = Vec::new();
    for file in WeightsFile::ALL {
        let pth = dir.join(format!("{}.pth", file.stem()));
        let source = if pth.is_file() { pth } else { locate(dir, file)? };
        let tensors = load_file_checked(&source, file, &cfg)?;
        let written = if source.extension().is_some_and(|e| e == "pth") {
            let out = dir.join(format!("{}.safetensors", file.stem()));
            let tmp = dir.join(format!(".{}.safetensors.partial", file.stem()));
            let map: HashMap<String, candle_core::Tensor> =
                tensors.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
            candle_core::safetensors::save(&map, &tmp).map_err(|e| ManifestError::Invalid {
                path: tmp.clone(),
                reason: format!("writing safetensors: {e}"),
            })?;
            std::fs::rename(&tmp, &out).map_err(|source| ManifestError::Io { path: out.clone(), source })?;
            Some(out)
        } else {
            None
        };
        done.push(Converted { file, source, written, tensors: tensors.len() });
    }
    let mut files = BTreeMap::new();
    let mut names: Vec<String> = vec!["config.json".into()];
    for file in WeightsFile::ALL {
        names.push(format!("{}.pth", file.stem()));
        names.push(format!("{}.safetensors", file.stem()));
    }
    for name in names {
        let p = dir.join(&name);
        if p.is_file() {
            files.insert(name, sha256_file(&p)?);
        }
    }
    let config = serde_json::to_value(&cfg)
        .map_err(|e| ManifestError::Invalid { path: dir.join("config.json"), reason: e.to_string() })?;
    let m = Manifest { tool: "ldae".into(), version: crate::VERSION.into(), config, files };
    let text = serde_json::to_string_pretty(&m)
        .map_err(|e| ManifestError::Invalid { path: dir.join(MANIFEST), reason: e.to_string() })?;
    let path = dir.join(MANIFEST);
    crate::nifti::write_atomic(&path, text.as_bytes())
        .map_err(|e| ManifestError::Invalid { path: path.clone(), reason: format!("writing: {e}") })?;
    Ok(done)
}

/// One line per verified item (for the CLI to print).
pub fn check_dir(dir: &Path) -> Result<Vec<String>, ManifestError> {
    let cfg = model_config(dir)?;
    let mut report = Vec::new();
    let mut problems = Vec::new();
    for file in WeightsFile::ALL {
        match locate(dir, file).and_then(|p| {
            let t = load_file_checked(&p, file, &cfg)?;
            Ok((p, t.len()))
        }) {
            Ok((p, n)) => report.push(format!("{}: {n} tensors, keys and shapes match the network", p.display())),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mpath = dir.join(MANIFEST);
    if mpath.is_file() {
        let text =
            std::fs::read_to_string(&mpath).map_err(|source| ManifestError::Io { path: mpath.clone(), source })?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| ManifestError::Invalid { path: mpath.clone(), reason: format!("not a manifest: {e}") })?;
        let now = serde_json::to_value(&cfg).unwrap_or_default();
        if m.config != now {
            problems.push(format!("{}: config.json differs from the configuration in the manifest", mpath.display()));
        }
        for (name, want) in &m.files {
            if name.contains(['/', '\\']) || name.contains("..") {
                problems.push(format!("{}: bad file name {name:?}", mpath.display()));
                continue;
            }
            let p = dir.join(name);
            if !p.is_file() {
                report.push(format!("{name}: listed in the manifest, absent (not checked)"));
                continue;
            }
            let got = sha256_file(&p)?;
            if got != *want {
                problems.push(format!(
                    "{}: sha256 {} differs from the manifest's {}",
                    p.display(),
                    got.sha256,
                    want.sha256
                ));
            } else {
                report.push(format!("{name}: sha256 ok"));
            }
        }
    } else {
        report.push(format!("{}: none (run `ldae weights convert` to write one)", mpath.display()));
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(ManifestError::Check { dir: dir.to_path_buf(), problems })
    }
}
