//! A throwaway PostgreSQL server for tests: `initdb` into a temporary folder (trust auth, no fsync, C locale so
//! text sorts byte-wise as in SQLite), started on 127.0.0.1 on a free port with its socket in that folder, and
//! stopped (`pg_ctl -m immediate stop`) when the handle drops. `initdb` refuses to run as root: as root the
//! folder is handed to the `postgres` user and the server runs as that user (`runuser -u postgres --`).
//!
//! [`Postgres::start`] returns None after [`require`](super::require) when no PostgreSQL is installed (so under
//! `LDAE_REQUIRE_ALL=1` the test fails).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running server; stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres_user: bool,
    pub port: u16,
    databases: AtomicUsize,
}

/// The folder holding `initdb` and `pg_ctl`: Debian's /usr/lib/postgresql/<version>/bin (newest), else PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(PathBuf::from).find(|d| d.join("initdb").is_file())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Postgres {
    /// Start a fresh server, or None (after `require`) when PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            super::require("PostgreSQL (initdb and pg_ctl: Debian package postgresql)");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("ldae-pg-").tempdir().expect("temp dir");
        let as_postgres_user = is_root();
        if as_postgres_user {
            let ok = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown of {} to the postgres user failed", dir.path().display());
        }
        let pg = Postgres { dir, bin, as_postgres_user, port: free_port(), databases: AtomicUsize::new(0) };
        let data = pg.dir.path().join("data");
        let out = pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "ldae".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "--no-locale".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=60",
            pg.port,
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("server.log");
        let out = pg.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-w".as_ref(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "start".as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{}: {e}", program.display()))
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://ldae@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("t{}", self.databases.fetch_add(1, Ordering::SeqCst));
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).expect("connect as admin");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        self.url(&name)
    }

    /// The server's folder (its log is `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .run("pg_ctl", &["-D".as_ref(), data.as_os_str(), "-m".as_ref(), "immediate".as_ref(), "stop".as_ref()]);
    }
}
