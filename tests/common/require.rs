//! Where a test finds its data and tools, and what happens when one is missing.
//!
//! Data from the shared corpus is looked up by its path inside `../shared` (for example
//! `ldae/fixtures/tiny-a`): first in `tests/data/shared/` (the copies committed with the crate, see
//! tests/data/shared/PROVENANCE.md), then in `$LDAE_SHARED`, then in `../shared` beside the crate.
//!
//! A test whose data or tool is missing calls [`require`]: with `LDAE_REQUIRE_ALL=1` (CI) that panics, so the
//! test fails; otherwise it prints one loud `SKIPPED` line straight to the terminal (past cargo's output
//! capture) and the test returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Is `LDAE_REQUIRE_ALL=1` set (every test must run for real)?
pub fn require_all() -> bool {
    std::env::var("LDAE_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Something the running test needs is missing: fail under `LDAE_REQUIRE_ALL=1`, else say loudly that the
/// test is skipped. The caller returns right after.
pub fn require(what: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    if require_all() {
        panic!("{test}: {what} is missing and LDAE_REQUIRE_ALL=1 says every test must run");
    }
    // Written to the process's stderr directly: `eprintln!` would be captured and hidden for a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: {what} is missing (LDAE_REQUIRE_ALL=1 makes this a failure) ***"
    );
}

/// Candidate roots of the shared corpus, in lookup order.
fn roots() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![manifest.join("tests/data/shared")];
    if let Some(p) = std::env::var_os("LDAE_SHARED") {
        v.push(PathBuf::from(p));
    }
    v.push(manifest.join("../shared"));
    v
}

/// The first existing `root/rel` over [`roots`], without reporting anything.
pub fn find_shared(rel: &str) -> Option<PathBuf> {
    roots().into_iter().map(|r| r.join(rel)).find(|p| p.exists())
}

/// Shared-corpus data at `rel` (a path inside ../shared); [`require`] when it is nowhere.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = find_shared(rel);
    if p.is_none() {
        require(&format!("test data `{rel}` (looked in tests/data/shared, $LDAE_SHARED, ../shared)"));
    }
    p
}

/// Does `program args…` start and exit successfully? [`require`] when not.
pub fn tool(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        require(&format!("the tool `{program}` (`{program} {}` did not run successfully)", args.join(" ")));
    }
    ok
}

/// Can `python3` import every module in `modules`? [`require`] when not.
pub fn python_modules(modules: &[&str]) -> bool {
    python_modules_in("python3", modules)
}

/// Can the interpreter `python` import every module in `modules`? [`require`] when not.
pub fn python_modules_in(python: &str, modules: &[&str]) -> bool {
    let code = modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    let ok = Command::new(python)
        .args(["-c", &code])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        require(&format!("{python} with the modules {modules:?}"));
    }
    ok
}
