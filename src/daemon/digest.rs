//! The content digests the daemon keys its stages by (DESIGN principle 4: a job's output is named by the hashes
//! of its inputs): a file's SHA-256, cached so a template or weights file is hashed once per process rather than
//! once per job; a model directory's weights digest; and the volume key.
//!
//! The cache is keyed by path, size, mtime, ctime and inode. mtime alone can be restored after an edit (`touch
//! -r`, `cp -p`, an unpacked archive); ctime cannot be set from user space and a file replaced by a rename has a
//! new inode, so an edited or replaced file is always hashed again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::ConvertConfig;
use crate::model::manifest::{Manifest, MANIFEST};

use super::files::{sha256_bytes, sha256_file};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    dev: u64,
    ino: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        size: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        dev: m.dev(),
        ino: m.ino(),
    })
}

static CACHE: Mutex<Option<HashMap<PathBuf, (Stamp, String)>>> = Mutex::new(None);

/// SHA-256 (hex) of a file's content, from the cache while the file's stamp is unchanged.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let before = stamp(path)?;
    {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, h)) = cache.as_ref().and_then(|c| c.get(path)) {
            if *s == before {
                return Ok(h.clone());
            }
        }
    }
    let h = sha256_file(path)?;
    // Only a file that did not change while it was read is cached.
    if stamp(path)? == before {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.get_or_insert_with(HashMap::new).insert(path.to_path_buf(), (before, h.clone()));
    }
    Ok(h)
}

/// The files of a model directory that make up the model: `config.json` and every `*.safetensors`/`*.pth`.
fn model_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            p.is_file() && (n == "config.json" || n.ends_with(".safetensors") || n.ends_with(".pth"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The manifest of `dir` (written by `ldae weights convert`), when there is a readable one, and its mtime.
fn manifest(dir: &Path) -> Option<(Manifest, i128)> {
    let path = dir.join(MANIFEST);
    let s = stamp(&path).ok()?;
    let m: Manifest = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    Some((m, s.mtime_ns))
}

/// The digest of a model directory's content: SHA-256 over the name and SHA-256 of each model file. A file's
/// SHA-256 comes from `manifest.json` when the manifest lists it with the same size and the file has not been
/// touched since the manifest was written (its ctime is not newer); otherwise the file is hashed (cached). So a
/// verified directory costs no hashing, and weights replaced in place — manifest updated or not — change it.
pub fn model_digest(dir: &Path) -> Result<String, String> {
    let manifest = manifest(dir);
    let mut all = String::new();
    for p in model_files(dir)? {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let s = stamp(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let listed = manifest.as_ref().and_then(|(m, written)| {
            m.files.get(&name).filter(|f| f.bytes == s.size && s.ctime_ns <= *written).map(|f| f.sha256.clone())
        });
        let h = match listed {
            Some(h) => h,
            None => file_digest(&p).map_err(|e| format!("{}: {e}", p.display()))?,
        };
        all.push_str(&format!("{name} {h}\n"));
    }
    if all.is_empty() {
        return Err(format!("{}: no config.json or weights files", dir.display()));
    }
    Ok(sha256_bytes(all.as_bytes()))
}

/// How embeddings name a model: its id (the model folder's name) and version (the first 16 hex digits of its
/// [`model_digest`]). The encode stage writes them; the look-ups (`ldae similar`, `export`, probes) select by them.
pub fn model_identity(dir: &Path, digest: &str) -> (String, String) {
    (crate::config::model_id(dir), digest.chars().take(16).collect())
}

/// The volume key: the series content key (its instances' hashes) + the converter version + the `[convert]`
/// config. Volumes are written under it, so a changed converter or config never reuses an older volume.
pub fn volume_key(series_content_key: &str, convert: &ConvertConfig) -> String {
    let key = serde_json::json!({
        "series": series_content_key,
        "converter": crate::VERSION,
        "convert": convert,
    });
    sha256_bytes(key.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewrite `path` with `bytes` (same length) and put its mtime back: what `cp -p` or an archive does.
    fn rewrite_keeping_mtime(path: &Path, bytes: &[u8]) {
        let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
        // ctime has a coarse clock on some file systems: make sure it can move.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(path, bytes).unwrap();
        std::fs::File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), mtime);
    }

    #[test]
    fn file_digest_follows_content_even_with_size_and_mtime_restored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("template.nii.gz");
        std::fs::write(&p, b"template version one").unwrap();
        let a = file_digest(&p).unwrap();
        assert_eq!(a, sha256_bytes(b"template version one"));
        assert_eq!(file_digest(&p).unwrap(), a, "cached");
        rewrite_keeping_mtime(&p, b"template version two");
        let b = file_digest(&p).unwrap();
        assert_eq!(b, sha256_bytes(b"template version two"));
    }

    #[test]
    fn model_digest_changes_when_weights_are_replaced_in_place() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), b"{}").unwrap();
        let w = d.path().join("decoder.safetensors");
        std::fs::write(&w, b"weights AAAA").unwrap();
        std::fs::write(d.path().join("README.md"), b"not part of the model").unwrap();
        let a = model_digest(d.path()).unwrap();
        std::fs::write(d.path().join("README.md"), b"edited").unwrap();
        assert_eq!(model_digest(d.path()).unwrap(), a, "only config and weights count");
        // A manifest that lists the current files gives the same digest without hashing them.
        let sum = |p: &Path| crate::model::manifest::sha256_file(p).unwrap();
        let files = [("config.json", d.path().join("config.json")), ("decoder.safetensors", w.clone())]
            .into_iter()
            .map(|(n, p)| (n.to_string(), sum(&p)))
            .collect();
        let m = Manifest { tool: "ldae".into(), version: "t".into(), config: serde_json::json!({}), files };
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.path().join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(model_digest(d.path()).unwrap(), a);
        // Replaced in place (same size, mtime restored, manifest left stale): a new digest.
        rewrite_keeping_mtime(&w, b"weights BBBB");
        let b = model_digest(d.path()).unwrap();
        assert_ne!(a, b);
        // The digest is of the content, not of the folder's path.
        let other = tempfile::tempdir().unwrap();
        for n in ["config.json", "decoder.safetensors"] {
            std::fs::copy(d.path().join(n), other.path().join(n)).unwrap();
        }
        assert_eq!(model_digest(other.path()).unwrap(), b);
    }

    #[test]
    fn volume_key_follows_converter_config() {
        let c = ConvertConfig::default();
        let a = volume_key("abc", &c);
        assert_eq!(a, volume_key("abc", &c));
        assert_ne!(a, volume_key("abd", &c));
        assert_ne!(a, volume_key("abc", &ConvertConfig { resample_gaps: !c.resample_gaps, ..c.clone() }));
        assert_ne!(a, volume_key("abc", &ConvertConfig { spacing_tolerance: 0.02, ..c.clone() }));
        assert_ne!(a, volume_key("abc", &ConvertConfig { min_slices: c.min_slices + 1, ..c.clone() }));
    }
}
