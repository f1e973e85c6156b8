//! A model directory's weights: `config.json` + `autoencoderkl`, `encoder`, `decoder` as published PyTorch zip
//! checkpoints (`.pth`) or as `.safetensors` with the same keys.
//!
//! `.pth` files are read with the restricted unpickler of [`crate::model::pickle`] (nothing is executed) and
//! their storages straight from the zip, one storage at a time (the encoder's two backbone prefixes share
//! storages). Every file is compared with the key set its network asks for ([`crate::model::keyset`]):
//! missing, unexpected or mis-shaped keys are one error that lists them.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::limits::Limits;
use crate::model::config::{ModelConfig, ModelConfigError};
use crate::model::keyset::{expected_keys, KeySet, KeySetError, ENCODER_BACKBONE_TWIN};
use crate::model::pickle::{parse_state_dict_limited, PickleError, StorageDtype, TensorRef};

pub use crate::model::keyset::WeightsFile;

/// Largest `data.pkl` accepted (a state dict's pickle is a few hundred KB).
const MAX_PICKLE: u64 = 64 << 20;

/// Why weights could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{dir}: no {stem}.safetensors or {stem}.pth")]
    Missing { dir: PathBuf, stem: &'static str },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Pickle { path: PathBuf, source: PickleError },
    #[error("{path}: keys do not match the {file:?} network: {}", describe_keys(.missing, .extra, .mismatched))]
    Keys { path: PathBuf, file: WeightsFile, missing: Vec<String>, extra: Vec<String>, mismatched: Vec<String> },
    #[error(transparent)]
    Config(#[from] ModelConfigError),
    #[error("{path}: {source}")]
    Network { path: PathBuf, source: KeySetError },
}

fn describe_keys(missing: &[String], extra: &[String], mismatched: &[String]) -> String {
    let list = |what: &str, v: &[String]| -> Option<String> {
        if v.is_empty() {
            return None;
        }
        let shown: Vec<&str> = v.iter().take(20).map(String::as_str).collect();
        let more = if v.len() > 20 { format!(" … and {} more", v.len() - 20) } else { String::new() };
        Some(format!("{} {what} [{}{more}]", v.len(), shown.join(", ")))
    };
    [list("missing", missing), list("unexpected", extra), list("mis-shaped", mismatched)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

/// The weights file of `file` in `dir`: `<stem>.safetensors` if present, else `<stem>.pth`.
pub fn locate(dir: &Path, file: WeightsFile) -> Result<PathBuf, WeightsError> {
    for ext in ["safetensors", "pth"] {
        let p = dir.join(format!("{}.{ext}", file.stem()));
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(WeightsError::Missing { dir: dir.to_path_buf(), stem: file.stem() })
}

/// The model configuration of `dir`: its `config.json`, or the paper configuration when there is none.
pub fn model_config(dir: &Path) -> Result<ModelConfig, WeightsError> {
    let p = dir.join("config.json");
    if p.exists() {
        Ok(ModelConfig::load(&p)?)
    } else {
        Ok(ModelConfig::paper())
    }
}

/// Every tensor of a `.pth` or `.safetensors` file (told apart by content), on the CPU, in the file's dtype.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let io = |source| WeightsError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 8];
    let n = f.read(&mut magic).map_err(io)?;
    if n >= 4 && magic[..4] == *b"PK\x03\x04" {
        return read_pth(path, f);
    }
    if n >= 2 && magic[..2] == [0x80, 0x02] {
        return Err(format_err(path, "a legacy (pre-1.6, non-zip) torch file; re-save it with a current torch"));
    }
    if n < 8 {
        return Err(format_err(path, "file too short for safetensors or a torch zip"));
    }
    let st = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| format_err(path, &format!("neither a torch zip nor valid safetensors: {e}")))?;
    Ok(st.into_iter().collect())
}

fn format_err(path: &Path, reason: &str) -> WeightsError {
    WeightsError::Format { path: path.to_path_buf(), reason: reason.to_string() }
}

fn read_pth(path: &Path, f: std::fs::File) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let zerr = |e: zip::result::ZipError| format_err(path, &format!("broken torch zip: {e}"));
    let mut zip = zip::ZipArchive::new(f).map_err(zerr)?;
    let pkl_names: Vec<String> = zip
        .file_names()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .collect();
    let [pkl_name] = pkl_names.as_slice() else {
        return Err(format_err(path, &format!("expected one <archive>/data.pkl, found {}", pkl_names.len())));
    };
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut bo) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        bo.read_to_string(&mut s).map_err(|e| format_err(path, &format!("byteorder: {e}")))?;
        if s.trim() != "little" {
            return Err(format_err(path, &format!("byte order {:?} is not supported", s.trim())));
        }
    }
    let pickle = {
        let e = zip.by_name(pkl_name).map_err(zerr)?;
        if e.size() > MAX_PICKLE {
            return Err(format_err(path, &format!("data.pkl is {} bytes, more than a state dict needs", e.size())));
        }
        let mut v = Vec::with_capacity(e.size() as usize);
        e.take(MAX_PICKLE).read_to_end(&mut v).map_err(|e| format_err(path, &format!("data.pkl: {e}")))?;
        v
    };
    let limits = Limits::default();
    let entries = parse_state_dict_limited(&pickle, &limits)
        .map_err(|source| WeightsError::Pickle { path: path.to_path_buf(), source })?;
    // Storage by storage, so shared storages are read once and only one is in memory at a time.
    let mut by_storage: HashMap<String, Vec<(String, TensorRef)>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (k, t) in entries {
        if !by_storage.contains_key(&t.storage) {
            order.push(t.storage.clone());
        }
        by_storage.entry(t.storage.clone()).or_default().push((k, t));
    }
    let mut out = BTreeMap::new();
    for key in order {
        let name = format!("{prefix}data/{key}");
        // The bytes the pickle says this storage has, bounded before reading; a zip entry that inflates to more
        // is read no further, one that holds less is an error below.
        let want = by_storage
            .get(&key)
            .into_iter()
            .flatten()
            .map(|(_, t)| (t.storage_numel as u64).saturating_mul(t.dtype.size() as u64))
            .max()
            .unwrap_or(0);
        let want = Limits::check(&format!("storage {key} (bytes)"), want, limits.max_element_bytes)
            .map_err(|e| format_err(path, &e.to_string()))?;
        let bytes = {
            let e = zip.by_name(&name).map_err(|e| format_err(path, &format!("storage {name}: {e}")))?;
            let mut v = Vec::with_capacity(e.size().min(want) as usize);
            e.take(want).read_to_end(&mut v).map_err(|e| format_err(path, &format!("storage {name}: {e}")))?;
            v
        };
        for (k, t) in by_storage.remove(&key).unwrap_or_default() {
            let tensor = view_tensor(&bytes, &t).map_err(|r| format_err(path, &format!("{k}: {r}")))?;
            if out.insert(k.clone(), tensor).is_some() {
                return Err(format_err(path, &format!("key {k} appears twice")));
            }
        }
    }
    Ok(out)
}

fn candle_dtype(d: StorageDtype) -> Result<DType, String> {
    Ok(match d {
        StorageDtype::F32 => DType::F32,
        StorageDtype::F64 => DType::F64,
        StorageDtype::F16 => DType::F16,
        StorageDtype::BF16 => DType::BF16,
        StorageDtype::I64 => DType::I64,
        StorageDtype::I32 => DType::I32,
        StorageDtype::I16 => DType::I16,
        StorageDtype::U8 => DType::U8,
        other => return Err(format!("storage dtype {other:?} is not supported")),
    })
}

/// Copy a (possibly strided) view out of a storage's bytes into a contiguous tensor.
fn view_tensor(bytes: &[u8], t: &TensorRef) -> Result<Tensor, String> {
    let es = t.dtype.size();
    let dtype = candle_dtype(t.dtype)?;
    if bytes.len() < t.storage_numel.saturating_mul(es) {
        return Err(format!(
            "storage {} holds {} bytes, the pickle says {} elements",
            t.storage,
            bytes.len(),
            t.storage_numel
        ));
    }
    // A zero stride can make a view larger than its storage: bound the copy before allocating it.
    let numel = t.size.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
    let numel = match numel.and_then(|n| n.checked_mul(es)) {
        Some(b) if (b as u64) <= Limits::default().max_element_bytes => b / es,
        _ => return Err(format!("a view of {:?} elements is over the limit of limits.max_element_bytes", t.size)),
    };
    let avail = bytes.len() / es;
    let mut canonical = vec![0usize; t.size.len()];
    let mut acc = 1usize;
    for i in (0..t.size.len()).rev() {
        canonical[i] = acc;
        acc = acc.saturating_mul(t.size[i]);
    }
    let contiguous = t.size.iter().zip(&t.stride).zip(&canonical).all(|((&s, &st), &c)| s <= 1 || st == c);
    let data: Vec<u8> = if numel == 0 {
        Vec::new()
    } else if contiguous {
        if t.offset.checked_add(numel).is_none_or(|e| e > avail) {
            return Err("view lies outside its storage".into());
        }
        bytes[t.offset * es..(t.offset + numel) * es].to_vec()
    } else {
        let last =
            t.size.iter().zip(&t.stride).fold(t.offset, |a, (&s, &st)| a.saturating_add((s - 1).saturating_mul(st)));
        if last >= avail {
            return Err("view lies outside its storage".into());
        }
        let mut v = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; t.size.len()];
        for _ in 0..numel {
            let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            v.extend_from_slice(&bytes[at * es..(at + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        v
    };
    Tensor::from_raw_buffer(&data, dtype, &t.size, &Device::Cpu).map_err(|e| e.to_string())
}

/// Compare a file's tensors with the key set its network needs.
pub fn check_keys(
    path: &Path,
    file: WeightsFile,
    tensors: &BTreeMap<String, Tensor>,
    expected: &KeySet,
) -> Result<(), WeightsError> {
    let missing: Vec<String> = expected.keys().filter(|k| !tensors.contains_key(*k)).cloned().collect();
    let extra: Vec<String> = tensors.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
    let mut mismatched = Vec::new();
    for (k, t) in tensors {
        if let Some(want) = expected.get(k) {
            if t.dims() != want.as_slice() {
                mismatched.push(format!("{k} is {:?}, the network needs {want:?}", t.dims()));
            } else if !t.dtype().is_float() {
                mismatched.push(format!("{k} has dtype {:?}, not a float type", t.dtype()));
            }
        }
    }
    if missing.is_empty() && extra.is_empty() && mismatched.is_empty() {
        Ok(())
    } else {
        Err(WeightsError::Keys { path: path.to_path_buf(), file, missing, extra, mismatched })
    }
}

/// Read `file` of model directory `dir` and verify its keys against the network `cfg` describes.
/// Returns the file's path and its tensors (CPU, file dtype).
pub fn load_checked(
    dir: &Path,
    file: WeightsFile,
    cfg: &ModelConfig,
) -> Result<(PathBuf, BTreeMap<String, Tensor>), WeightsError> {
    let path = locate(dir, file)?;
    let tensors = load_file_checked(&path, file, cfg)?;
    Ok((path, tensors))
}

/// Read the weights file at `path` (which holds `file`'s network) and verify its keys; `Ok` with the tensors.
pub fn load_file_checked(
    path: &Path,
    file: WeightsFile,
    cfg: &ModelConfig,
) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let tensors = read_tensors(path)?;
    let expected = key_set(path, file, cfg)?;
    check_keys(path, file, &tensors, &expected)?;
    Ok(tensors)
}

/// The key set `file`'s network asks for (`path` names the file in errors).
pub fn key_set(path: &Path, file: WeightsFile, cfg: &ModelConfig) -> Result<KeySet, WeightsError> {
    expected_keys(cfg, file).map_err(|source| WeightsError::Network { path: path.to_path_buf(), source })
}

/// A `VarBuilder` (f32) over `file` of model directory `dir` on `dev`, after the key check. The encoder's
/// duplicate backbone copy is left out (its twin under `backbone.backbone.*` is what the network reads).
pub fn open_weights(dir: &Path, file: WeightsFile, dev: &Device) -> Result<VarBuilder<'static>, WeightsError> {
    let cfg = model_config(dir)?;
    let (path, tensors) = load_checked(dir, file, &cfg)?;
    let mut map = HashMap::with_capacity(tensors.len());
    for (k, t) in tensors {
        if k.starts_with(ENCODER_BACKBONE_TWIN) {
            continue;
        }
        let t = t.to_device(dev).map_err(|e| format_err(&path, &format!("{k}: to {dev:?}: {e}")))?;
        map.insert(k, t);
    }
    Ok(VarBuilder::from_tensors(map, DType::F32, dev))
}
