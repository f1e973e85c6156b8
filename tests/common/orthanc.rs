//! A throwaway Orthanc on 127.0.0.1 (free ports, a temp storage folder) for the tests that need a real PACS, and
//! a child process that is killed when the test ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process killed (and reaped) when the test ends, passing or not.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running Orthanc: its HTTP and DICOM ports.
pub struct Orthanc {
    _child: Killed,
    pub http: u16,
    pub dicom: u16,
    dir: tempfile::TempDir,
}

impl Orthanc {
    /// Start Orthanc; `extra` is merged into the minimal configuration (which admits any caller).
    pub fn start(extra: serde_json::Value) -> Orthanc {
        let dir = tempfile::tempdir().expect("tempdir");
        let (http, dicom) = (free_port(), free_port());
        let db = dir.path().join("db");
        let mut cfg = serde_json::json!({
            "Name": "ldae-test", "StorageDirectory": db, "IndexDirectory": db, "Plugins": [],
            "HttpPort": http, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
            "DicomAet": "ORTHANC", "DicomPort": dicom, "DicomCheckCalledAet": false,
            "DicomAlwaysAllowStore": true, "StableAge": 1,
        });
        for (k, v) in extra.as_object().expect("object") {
            cfg[k] = v.clone();
        }
        let cfg_path = dir.path().join("orthanc.json");
        std::fs::write(&cfg_path, cfg.to_string()).expect("config");
        let log = std::fs::File::create(dir.path().join("orthanc.log")).expect("log");
        let child = Command::new("Orthanc")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start Orthanc");
        let o = Orthanc { _child: Killed(child), http, dicom, dir };
        let end = Instant::now() + Duration::from_secs(30);
        while o.get("/system").ok().filter(|v| v["DicomAet"] == "ORTHANC").is_none() {
            assert!(Instant::now() < end, "Orthanc did not come up: {}", o.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        o
    }

    /// Orthanc's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    /// GET a REST resource as JSON (HTTP/1.0: no chunked encoding).
    pub fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP body")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(head.lines().next().unwrap_or("").to_string());
        }
        serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))
    }

    /// The length of a REST list (`/instances`, `/series`).
    pub fn count(&self, what: &str) -> usize {
        self.get(what).expect("REST").as_array().expect("array").len()
    }
}
