//! File-system helpers the daemon shares: moving a file safely (rename, or copy + fsync + remove across file
//! systems), hashing, name checks (temp/hidden names are ignored), sanitising UIDs for paths, free disk space.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Is this a name intake must ignore: hidden (`.x`), or a temporary name a writer will rename later?
pub fn is_ignored_name(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()) else { return true };
    name.starts_with('.')
        || name.starts_with("~$")
        || name.ends_with('~')
        || [".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".swp", ".download"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Size and modification time (ns since the epoch) of a regular file; None for anything else.
pub fn file_stamp(path: &Path) -> Option<(u64, i64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Some((meta.len(), mtime))
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// SHA-256 of bytes, hex.
pub fn sha256_bytes(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A UID or tag value made safe as one path component: only `[0-9A-Za-z._-]`, never `.`/`..`, never empty.
pub fn safe_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
        .collect();
    out.truncate(128);
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = format!("x{}", out.len());
    }
    out
}

/// fsync a directory, so that a rename or removal in it survives a power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// fsync the folders holding `a` and `b` (once if they are the same).
fn sync_parents(a: &Path, b: &Path) -> std::io::Result<()> {
    let (pa, pb) = (a.parent(), b.parent());
    if let Some(p) = pa {
        sync_dir(p)?;
    }
    match pb {
        Some(p) if Some(p) != pa => sync_dir(p),
        _ => Ok(()),
    }
}

/// Remove a file and fsync its folder (a missing file is fine).
pub fn remove_file_durably(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => path.parent().map(sync_dir).unwrap_or(Ok(())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Move `src` to `dst` (creating `dst`'s folder). Same file system: an atomic rename. Otherwise copy to a
/// temporary name, fsync, rename, then remove the source — the file exists at one place at least at every moment.
/// Both folders are fsynced after the rename, so the move itself survives a power loss.
pub fn move_file(src: &Path, dst: &Path) -> std::io::Result<()> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(src, dst) {
        Ok(()) => sync_parents(src, dst),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = tmp_name(dst);
            {
                let mut from = std::fs::File::open(src)?;
                let mut to = std::fs::File::create(&tmp)?;
                std::io::copy(&mut from, &mut to)?;
                to.flush()?;
                to.sync_all()?;
            }
            std::fs::rename(&tmp, dst)?;
            std::fs::remove_file(src)?;
            sync_parents(src, dst)
        }
        Err(e) => Err(e),
    }
}

fn tmp_name(dst: &Path) -> PathBuf {
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dst.with_file_name(format!(".{name}.ldae-tmp"))
}

/// A path that does not exist yet: `path`, else `path` with `_2`, `_3`, ... before the extension.
pub fn unique_path(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    (2..).map(|n| path.with_file_name(format!("{stem}_{n}{ext}"))).find(|p| !p.exists()).unwrap_or_default()
}

/// Free space (MiB) on the file system holding `path` (None if it cannot be asked).
pub fn free_mib(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_names_and_safe_components() {
        assert!(is_ignored_name(Path::new("/in/.hidden.dcm")));
        assert!(is_ignored_name(Path::new("/in/IM1.dcm.part")));
        assert!(is_ignored_name(Path::new("/in/IM1.tmp")));
        assert!(!is_ignored_name(Path::new("/in/IM1")));
        assert!(!is_ignored_name(Path::new("/in/IM1.dcm")));
        assert_eq!(safe_component("1.2.840/../x"), "1.2.840_.._x");
        assert_eq!(safe_component(".."), "x2");
        assert_eq!(safe_component(""), "x0");
    }

    #[test]
    fn move_and_unique() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.dcm");
        std::fs::write(&a, b"abc").unwrap();
        let b = d.path().join("sub/b.dcm");
        move_file(&a, &b).unwrap();
        assert!(!a.exists() && b.exists());
        let u = unique_path(&b);
        assert_eq!(u.file_name().unwrap(), "b_2.dcm");
        assert_eq!(sha256_file(&b).unwrap(), sha256_bytes(b"abc"));
        assert!(free_mib(d.path()).is_some());
    }
}
