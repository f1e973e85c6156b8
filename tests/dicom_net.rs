//! C-STORE to real peers: Orthanc (Debian `orthanc`, as the PACS; its REST API confirms what it holds) and
//! dcmtk's `storescp` (received files compared with the sent ones), a peer that rejects our calling AE title, a
//! port where nothing listens, a small maximum PDU (fragmentation), and a lying peer (bounded reads).
//! Missing tools go through tests/common `tool`, which fails the test under LDAE_REQUIRE_ALL=1.

mod common;
mod daemon_util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use ldae::dicom::net::{
    read_instance, send_series, send_with_retry, AeTitle, ErrorClass, InstanceInfo, InstanceResult, NetError, PeerAddr,
    RetryPolicy, SendOptions,
};
use ldae::limits::Limits;

use common::orthanc::{free_port, Killed, Orthanc};
use daemon_util::wait_for;

const SERIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dicom/series/explicit_vr_le");
const JPEG_LS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dicom/series/jpeg_ls_lossless");
const RANDOM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dicom/bad/random_bytes.dcm");
const MULTIFRAME: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dicom/series/enhanced_multiframe/ENH0001.dcm");

fn series_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(SERIES).expect("series dir").map(|e| e.expect("entry").path()).collect();
    v.sort();
    v
}

fn infos(files: &[PathBuf]) -> Vec<InstanceInfo> {
    files.iter().map(|f| read_instance(f, &Limits::default()).expect("read header")).collect()
}

fn peer(aet: &str, port: u16) -> PeerAddr {
    format!("{aet}@127.0.0.1:{port}").parse().expect("peer")
}

fn aet(s: &str) -> AeTitle {
    AeTitle::new(s).expect("aet")
}

fn ldae() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ldae"));
    c.env("LDAE_CONFIG", "/nonexistent/ldae.toml").env("LDAE_LOG", "warn");
    c
}

#[test]
fn orthanc_stores_a_series_once_and_a_resend_adds_nothing() {
    if !common::tool("Orthanc", &["--version"]) {
        return;
    }
    let orthanc = Orthanc::start(serde_json::json!({}));
    let to = format!("ORTHANC@127.0.0.1:{}", orthanc.dicom);
    let files = series_files();
    assert_eq!(files.len(), 24);
    let t0 = Instant::now();
    let out = ldae().args(["send", SERIES, MULTIFRAME, "--to", &to, "--json"]).output().expect("run ldae send");
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), orthanc.log());
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json report");
    let series = report["series"].as_array().expect("series");
    assert_eq!(series.len(), 2, "one association per series: {report}");
    assert_eq!(series[0]["stored"], 24);
    assert_eq!(series[1]["stored"], 1);
    for s in series {
        assert_eq!(s["attempts"], 1);
        assert_eq!(s["complete"], true);
        for i in s["instances"].as_array().expect("instances") {
            assert_eq!((i["result"].as_str(), i["status"].as_u64()), (Some("stored"), Some(0)), "{i}");
        }
    }
    // The multi-frame file (241 kB) went through Orthanc's 16 KiB maximum PDU: fragmented.
    assert_eq!(series[1]["peer_max_pdu"], 16384, "{report}");
    eprintln!(
        "measured: ldae send of 24 MR slices + one 40-frame enhanced MR to Orthanc: {:.2} s (process)",
        took.as_secs_f64()
    );

    assert_eq!(orthanc.count("/instances"), 25);
    assert_eq!(orthanc.count("/series"), 2);
    // Tags of two instances, found by SOP Instance UID, match the files.
    let stored: Vec<serde_json::Value> = orthanc
        .get("/instances")
        .expect("instances")
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| orthanc.get(&format!("/instances/{}/tags?simplify", id.as_str().expect("id"))).expect("tags"))
        .collect();
    for f in [&files[0], &files[23]] {
        let obj = dicom_object::open_file(f).expect("open");
        let text =
            |tag| obj.element(tag).expect("tag").to_str().expect("str").trim_end_matches(['\0', ' ']).to_string();
        let uid = text(tags::SOP_INSTANCE_UID);
        let t = stored.iter().find(|t| t["SOPInstanceUID"] == uid.as_str()).expect("instance in Orthanc");
        assert_eq!(t["PatientID"], text(tags::PATIENT_ID).as_str());
        assert_eq!(t["SeriesInstanceUID"], text(tags::SERIES_INSTANCE_UID).as_str());
        assert_eq!(t["Modality"], "MR");
        assert_eq!(t["SOPClassUID"], "1.2.840.10008.5.1.4.1.1.4");
    }

    // The same series again: Orthanc answers success, keeps one copy.
    let out = ldae().args(["send", SERIES, "--to", &to]).output().expect("run ldae send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("stored  ")).count(), 24, "{stdout}");
    assert!(stdout.contains("24/24 stored"), "{stdout}");
    assert_eq!(orthanc.count("/instances"), 25);

    // A compressed series goes out in its own transfer syntax (JPEG-LS), a file that is not DICOM is named on the
    // one error line, and the rest of the command still runs.
    let out = ldae().args(["send", JPEG_LS, RANDOM, "--to", &to, "--json"]).output().expect("run ldae send");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("random_bytes.dcm") && errors[0].contains("not a DICOM file"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let jls = &report["series"][0];
    assert_eq!(jls["stored"], 24, "{report}");
    assert!(jls["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .all(|i| i["transfer_syntax"] == "1.2.840.10008.1.2.4.80"));
    assert_eq!(report["unreadable"].as_array().map(Vec::len), Some(1));
    assert_eq!(orthanc.count("/instances"), 49);
}

/// Start storescp writing into `dir`; waits until it accepts connections.
fn storescp(dir: &Path, port: u16, max_pdu: u32, extra: &[&str]) -> Killed {
    let child = Command::new("storescp")
        .args(extra)
        .args(["-aet", "STORESCP", "--max-pdu", &max_pdu.to_string(), "-od"])
        .arg(dir)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start storescp");
    let up = wait_for(20.0, || TcpStream::connect(("127.0.0.1", port)).ok());
    assert!(up.is_some(), "storescp did not listen on {port}");
    Killed(child)
}

/// SOP Instance UID → Pixel Data bytes of every DICOM file in `paths`.
fn pixels_by_uid(paths: &[PathBuf]) -> std::collections::BTreeMap<String, Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            let obj = dicom_object::open_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let uid = obj.element(tags::SOP_INSTANCE_UID).expect("uid").to_str().expect("str");
            let px = obj.element(tags::PIXEL_DATA).expect("pixels").to_bytes().expect("native pixels").to_vec();
            (uid.trim_end_matches('\0').to_string(), px)
        })
        .collect()
}

#[test]
fn storescp_receives_identical_instances_through_small_pdus() {
    if !common::tool("storescp", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _scp = storescp(dir.path(), port, 16384, &[]);
    let files = series_files();
    let opts = SendOptions { max_pdu: 16384, ..SendOptions::default() };
    let to = peer("STORESCP", port);
    let t0 = Instant::now();
    let o = send_series(&to, &aet("LDAE"), &files, &opts).expect("send series");
    eprintln!("measured: 24 MR slices to storescp in {:.3} s", t0.elapsed().as_secs_f64());
    assert!(o.is_complete(), "{o:?}");
    assert_eq!(o.stored(), 24);
    assert_eq!(o.peer_max_pdu, Some(16384));
    // A 241 kB multi-frame object in fragments of at most 16 KiB.
    let m = send_series(&to, &aet("LDAE"), &[PathBuf::from(MULTIFRAME)], &opts).expect("send multiframe");
    assert!(m.is_complete(), "{m:?}");
    let mut sent: Vec<PathBuf> = files.clone();
    sent.push(MULTIFRAME.into());
    let received: Vec<PathBuf> = wait_for(10.0, || {
        let v: Vec<PathBuf> = std::fs::read_dir(dir.path()).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        (v.len() == 25).then_some(v)
    })
    .expect("storescp wrote 25 files");
    let (want, got) = (pixels_by_uid(&sent), pixels_by_uid(&received));
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "same SOP Instance UIDs");
    for (uid, px) in &want {
        assert!(px.len() > 1000);
        assert!(got[uid] == *px, "pixel data of {uid} differs after the round trip");
    }
    // Our own small maximum PDU (4096) still works against a 16 KiB peer: we never send more than we announce.
    let small = SendOptions { max_pdu: 4096, ..SendOptions::default() };
    let s = send_series(&to, &aet("LDAE"), &[PathBuf::from(MULTIFRAME)], &small).expect("send with 4 KiB PDUs");
    assert!(s.is_complete(), "{s:?}");
}

#[test]
fn a_peer_taking_implicit_vr_only_gets_re_encoded_data_and_a_compressed_series_has_no_context() {
    if !common::tool("storescp", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _scp = storescp(dir.path(), port, 16384, &["+xi"]);
    let to = peer("STORESCP", port);
    // Explicit VR LE files, re-encoded in Implicit VR LE (the only syntax accepted): same UIDs, same pixels.
    let files = series_files()[..4].to_vec();
    let o = send_series(&to, &aet("LDAE"), &files, &SendOptions::default()).expect("send");
    assert!(o.is_complete(), "{o:?}");
    assert!(o.instances.iter().all(|i| i.transfer_syntax.as_deref() == Some("1.2.840.10008.1.2")), "{o:?}");
    let received: Vec<PathBuf> = wait_for(10.0, || {
        let v: Vec<PathBuf> = std::fs::read_dir(dir.path()).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        (v.len() == 4).then_some(v)
    })
    .expect("storescp wrote 4 files");
    assert_eq!(pixels_by_uid(&files), pixels_by_uid(&received));
    for r in &received {
        let obj = dicom_object::open_file(r).expect("open received");
        assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2");
    }
    // JPEG-LS data is not transcoded: no accepted context, a terminal error before anything is sent.
    let jls: Vec<PathBuf> =
        std::fs::read_dir(JPEG_LS).expect("dir").map(|e| e.expect("entry").path()).take(2).collect();
    let e = send_series(&to, &aet("LDAE"), &jls, &SendOptions::default()).expect_err("no context");
    assert!(matches!(e, NetError::NoContext { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Terminal);
    // Mixed: the uncompressed instance is stored, the compressed one fails on its own (terminal), same association.
    let mixed = [files[0].clone(), jls[0].clone()];
    let o = send_series(&to, &aet("LDAE"), &mixed, &SendOptions::default()).expect("send mixed");
    assert!(o.instances[0].result.is_stored(), "{o:?}");
    match &o.instances[1].result {
        InstanceResult::Failed { class: ErrorClass::Terminal, sent: false, reason } => {
            assert!(reason.contains("1.2.840.10008.1.2.4.80"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(o.error.is_none() && !o.is_complete());
}

#[test]
fn an_abort_before_the_status_or_a_silent_peer_is_transient_and_nothing_counts_as_stored() {
    if !common::tool("storescp", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let files = series_files();
    let batch = infos(&files[..3]);
    let policy =
        RetryPolicy { max_attempts: 2, initial_delay: Duration::from_millis(20), max_delay: Duration::from_millis(20) };

    // storescp --abort-after: A-ABORT after the C-STORE-RQ, before its response.
    let port = free_port();
    let scp = storescp(dir.path(), port, 16384, &["--abort-after"]);
    let mut waits = Vec::new();
    let o =
        send_with_retry(&peer("STORESCP", port), &aet("LDAE"), &batch, &SendOptions::default(), &policy, &mut |d| {
            waits.push(d)
        });
    drop(scp);
    assert_eq!((o.attempts, waits.len()), (2, 1), "retried once, on schedule: {o:?}");
    assert!(matches!(o.error, Some(NetError::Aborted { .. })), "{:?}", o.error);
    assert_eq!(o.stored(), 0, "an instance without the peer's status is not stored: {o:?}");
    assert!(
        matches!(o.instances[0].result, InstanceResult::Failed { sent: true, class: ErrorClass::Transient, .. }),
        "{o:?}"
    );
    assert!(
        matches!(o.instances[2].result, InstanceResult::Failed { sent: false, class: ErrorClass::Transient, .. }),
        "{o:?}"
    );
    let msg = o.error.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("aborted") && msg.contains(&batch[0].sop_instance_uid), "names the instance: {msg}");

    // storescp --sleep-after 3 (after each store) and our 1 s read limit: a timeout, transient.
    let port = free_port();
    let _scp = storescp(dir.path(), port, 16384, &["--sleep-after", "3"]);
    let opts = SendOptions { io_timeout: Duration::from_secs(1), ..SendOptions::default() };
    let t0 = Instant::now();
    let o = send_series(&peer("STORESCP", port), &aet("LDAE"), &files[..2], &opts).expect("associated");
    assert!(t0.elapsed() < Duration::from_secs(3), "gave up after the read limit");
    assert!(matches!(o.error, Some(NetError::Timeout { .. })), "{:?}", o.error);
    assert_eq!(o.error.as_ref().map(NetError::class), Some(ErrorClass::Transient));
    // storescp answers the first instance, then sleeps: the first counts, the second does not.
    assert!(o.instances[0].result.is_stored(), "{o:?}");
    assert!(
        matches!(o.instances[1].result, InstanceResult::Failed { sent: true, class: ErrorClass::Transient, .. }),
        "{o:?}"
    );
}

#[test]
fn an_unknown_calling_aet_is_rejected_once_and_never_retried() {
    if !common::tool("Orthanc", &["--version"]) {
        return;
    }
    // Orthanc admits any caller while one of the DicomAlwaysAllow* options is on (Echo is, by default), and then
    // only aborts the association at the first C-STORE; with all of them off it rejects the association itself.
    let orthanc = Orthanc::start(serde_json::json!({
        "DicomAlwaysAllowStore": false, "DicomAlwaysAllowEcho": false, "DicomAlwaysAllowFind": false,
        "DicomAlwaysAllowMove": false,
        "DicomModalities": {"ldae": {"AET": "LDAE", "Host": "127.0.0.1", "Port": 11112, "AllowStore": true}},
    }));
    let to = peer("ORTHANC", orthanc.dicom);
    let files = series_files();
    let batch = infos(&files[..3]);
    let policy =
        RetryPolicy { max_attempts: 5, initial_delay: Duration::from_millis(10), max_delay: Duration::from_millis(40) };
    let mut waits = Vec::new();
    let o = send_with_retry(&to, &aet("INTRUDER"), &batch, &SendOptions::default(), &policy, &mut |d| waits.push(d));
    assert_eq!(o.attempts, 1, "{o:?}");
    assert!(waits.is_empty(), "no retry after a rejection: {waits:?}");
    let e = o.error.clone().expect("an error");
    assert_eq!(e.class(), ErrorClass::Terminal, "{e}");
    assert!(matches!(e, NetError::Rejected { permanent: true, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("ORTHANC@127.0.0.1:{}: association rejected", orthanc.dicom)), "{msg}");
    assert!(msg.to_lowercase().contains("calling ae title"), "{msg}");
    assert_eq!(o.stored(), 0);
    assert!(o
        .instances
        .iter()
        .all(|i| matches!(i.result, InstanceResult::Failed { class: ErrorClass::Terminal, sent: false, .. })));
    assert_eq!(orthanc.count("/instances"), 0);

    // The CLI: exit 1, one line naming the peer and the reason.
    let out = ldae()
        .args(["send", SERIES, "--to", &to.to_string(), "--calling-aet", "INTRUDER", "--attempts", "5"])
        .output()
        .expect("run ldae send");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("after 1 association(s)") && errors[0].contains("association rejected"), "{stderr}");

    // The known AET is let in (the rejection was about the AE title).
    let ok = send_series(&to, &aet("LDAE"), &files[..3], &SendOptions::default()).expect("known AET");
    assert!(ok.is_complete(), "{ok:?}");
    assert_eq!(orthanc.count("/instances"), 3);
}

#[test]
fn nothing_listening_is_transient_and_retried_on_schedule() {
    let port = free_port();
    let to = peer("NOBODY", port);
    let files = series_files();
    let e = send_series(&to, &aet("LDAE"), &files[..2], &SendOptions::default()).expect_err("nothing listens");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().starts_with(&format!("NOBODY@127.0.0.1:{port}: cannot connect")), "{e}");
    let policy =
        RetryPolicy { max_attempts: 3, initial_delay: Duration::from_millis(5), max_delay: Duration::from_millis(8) };
    let mut waits = Vec::new();
    let o = send_with_retry(&to, &aet("LDAE"), &infos(&files[..2]), &SendOptions::default(), &policy, &mut |d| {
        waits.push(d)
    });
    assert_eq!(o.attempts, 3);
    assert_eq!(waits, [Duration::from_millis(5), Duration::from_millis(8)]);
    assert!(o.instances.iter().all(|i| i.result.is_retryable()), "{o:?}");
    assert_eq!(o.error.as_ref().map(NetError::class), Some(ErrorClass::Transient));

    let out = ldae()
        .args(["send", SERIES, "--to", &to.to_string(), "--attempts", "1", "--json"])
        .output()
        .expect("run ldae send");
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["series"][0]["error_class"], "transient", "{report}");
    assert_eq!(report["series"][0]["stored"], 0);
}

#[test]
fn a_peer_claiming_a_huge_pdu_is_refused_without_buffering_it() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let liar = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut rq = [0u8; 6];
        s.read_exact(&mut rq).expect("A-ASSOCIATE-RQ header");
        // An A-ASSOCIATE-AC claiming 4 GiB − 16 bytes, then a trickle.
        let mut ac = vec![0x02, 0x00];
        ac.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        ac.extend_from_slice(&[0u8; 64]);
        let _ = s.write_all(&ac);
        std::thread::sleep(Duration::from_millis(500));
    });
    let opts = SendOptions { io_timeout: Duration::from_secs(5), ..SendOptions::default() };
    let t0 = Instant::now();
    let e = send_series(&peer("LIAR", port), &aet("LDAE"), &series_files()[..1], &opts).expect_err("a liar");
    assert!(t0.elapsed() < Duration::from_secs(3), "refused at once, not after a timeout: {e}");
    assert_eq!(e.class(), ErrorClass::Terminal, "{e}");
    assert!(e.to_string().contains("too large"), "{e}");
    let _ = liar.join();
}
