//! plugins/orthanc-export.lua with a real Orthanc: instances stored into Orthanc over its REST API are exported
//! into ldae's drop folder when the series becomes stable, and the daemon takes them in and converts the series.
//! Needs Orthanc (Debian package `orthanc`); tests/common `tool` fails the test under LDAE_REQUIRE_ALL=1.

mod common;
mod daemon_util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use daemon_util::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// POST bytes to Orthanc's REST API; returns the HTTP status line.
fn post(port: u16, path: &str, body: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/dicom\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp.lines().next().unwrap_or("").to_string())
}

/// A copy of `src` whose Study and Series Instance UIDs are `..` and `../..` (a valid SOP Instance UID).
fn hostile_uids(src: &std::path::Path) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let mut obj = dicom_object::open_file(src).expect("open test DICOM");
    let ui = |t, v: &str| DataElement::new(t, VR::UI, PrimitiveValue::from(v));
    obj.put(ui(tags::STUDY_INSTANCE_UID, ".."));
    obj.put(ui(tags::SERIES_INSTANCE_UID, "../.."));
    obj.put(ui(tags::SOP_INSTANCE_UID, "2.25.666"));
    obj.meta_mut().media_storage_sop_instance_uid = "2.25.666".into();
    obj.meta_mut().update_information_group_length();
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("write DICOM");
    out
}

#[test]
fn orthanc_lua_script_exports_stable_series_into_the_drop_folder() {
    if !common::tool("Orthanc", &["--version"]) {
        return;
    }
    let env = Env::new(1.0, 0.3, "");
    let (http, dicom) = (free_port(), free_port());
    let db = env.path("orthanc-db");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/orthanc-export.lua");
    let cfg = serde_json::json!({
        "Name": "ldae-test", "StorageDirectory": db, "IndexDirectory": db, "HttpPort": http, "DicomPort": dicom,
        "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "StableAge": 1, "LuaScripts": [script],
        "Plugins": [],
    });
    std::fs::write(env.path("orthanc.json"), cfg.to_string()).expect("orthanc config");
    let log = std::fs::File::create(env.path("orthanc.log")).expect("log");
    let mut orthanc = Command::new("Orthanc")
        .arg(env.path("orthanc.json"))
        .env("LDAE_DROP", env.path("incoming"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start Orthanc");
    let mut daemon = env.start(0);
    let up = wait_for(30.0, || post(http, "/tools/now", b"").ok());
    assert!(
        up.is_some(),
        "Orthanc did not start: {}",
        std::fs::read_to_string(env.path("orthanc.log")).unwrap_or_default()
    );
    for (i, f) in axial_files().iter().take(8).enumerate() {
        let status = post(http, "/instances", &rewrite_uids(f, 51, i)).expect("POST /instances");
        assert!(status.contains("200"), "{status}");
    }
    // A hostile sender: UIDs that are path tricks. The export must keep every file inside the drop folder.
    let hostile = hostile_uids(&axial_files()[10]);
    let status = post(http, "/instances", &hostile).expect("POST /instances");
    assert!(status.contains("200"), "Orthanc refused the hostile instance: {status}");
    let uid = series_uid(51);
    let done = wait_for(60.0, || {
        let st = env.status()?;
        let s = st["series"].as_array()?.iter().find(|s| s["series_uid"] == uid)?.clone();
        (s["state"] == "skipped" && s["instances"] == 8 && s["volumes"] == 1).then_some(())
    });
    let orthanc_log = std::fs::read_to_string(env.path("orthanc.log")).unwrap_or_default();
    let _ = orthanc.kill();
    let _ = orthanc.wait();
    assert!(done.is_some(), "{:?}\n{}\n{orthanc_log}", env.status(), env.logs());
    assert!(orthanc_log.contains("ldae export: series"), "{orthanc_log}");
    let exported = wait_for(30.0, || {
        let log = std::fs::read_to_string(env.path("orthanc.log")).unwrap_or_default();
        (log.matches("ldae export: series").count() >= 2).then_some(())
    });
    assert!(exported.is_some(), "hostile series not exported\n{orthanc_log}");
    let incoming = env.path("incoming");
    let archive = env.path("archive");
    let outside: Vec<_> = files_under(env.dir.path().parent().expect("parent"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".dcm") && p.starts_with(env.dir.path()))
        .filter(|p| !p.starts_with(&incoming) && !p.starts_with(&archive))
        .collect();
    assert!(outside.is_empty(), "the export escaped the drop folder: {outside:?}");
    let escaped_up = env.dir.path().parent().expect("parent").join("escape.dcm");
    assert!(!escaped_up.exists());
    let inside: Vec<_> =
        files_under(&incoming).into_iter().filter(|p| p.to_string_lossy().contains("2.25.666")).collect();
    assert_eq!(inside.len(), 1, "the hostile instance lands inside the drop folder, once: {inside:?}");
    assert_eq!(files_under(&env.path("archive")).len(), 8);
    assert_eq!(terminate(&mut daemon, 20.0), Some(0));
}
