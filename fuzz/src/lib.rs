//! Helpers shared by the fuzz targets: the readers under test take a path, so each input is written to one
//! scratch file per process (in /dev/shm when it exists, so the fuzzer does not wear a disk) and read back.

use std::path::PathBuf;

/// Write `data` to this process's scratch file named `name` (the extension matters to some readers) and return
/// its path. The same file is overwritten on every run.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("ldae-fuzz-{}", std::process::id()));
    if !dir.is_dir() {
        // A failure here is the harness's, not the parser's: make it loud.
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("harness: cannot create {}: {e}", dir.display()));
    }
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("harness: cannot write {}: {e}", path.display()));
    path
}
