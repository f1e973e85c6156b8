//! Bad input through the real `ldae convert` binary: every file of tests/data/dicom/bad gives exactly one line
//! naming it and the reason, nothing is written for it, the exit code says something was rejected, and hostile
//! file names or descriptions neither break the one-line report nor escape the output folder.

mod common;

use std::path::Path;
use std::process::Command;

use common::data_dir;

fn ldae() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ldae"));
    // A config path that does not exist: convert falls back to the defaults.
    c.args(["--config", "/nonexistent/ldae.toml", "--log", "warn"]);
    c
}

#[test]
fn bad_corpus_is_reported_one_line_per_file_without_panic() {
    let out = tempfile::tempdir().expect("tempdir");
    let r = ldae().arg("convert").arg(data_dir().join("bad")).arg("-o").arg(out.path()).output().expect("run ldae");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "exit code must say something was rejected; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    let expected = [
        ("empty.dcm", "empty file"),
        ("random_bytes.dcm", "not DICOM"),
        ("truncated_header.dcm", "(0008,1090) claims 18 bytes but only 12 remain"),
        ("truncated_pixels.dcm", "(7FE0,0010) claims 4608 bytes"),
        ("no_pixel_data.dcm", "no Pixel Data"),
        ("sr_like.dcm", "not an image: Basic Text SR"),
        ("rtstruct_like.dcm", "not an image: RT Structure Set"),
        ("DICOMDIR", "DICOMDIR"),
        ("unsupported_ts.dcm", "unsupported transfer syntax 1.2.840.10008.1.2.4.100"),
        ("huge_length.dcm", "claims 4294967280 bytes"),
        // Regression files from tests/hostile/make_dicom.py: each crashed or ballooned the converter once.
        ("frames_4e9.dcm", "NumberOfFrames is 4000000000, over the limit of 16384"),
        ("jpeg_baseline_sof_30000.dcm", "JPEG frame header claims 30000x30000, the DICOM header 48x48"),
        ("jpeg_lossless_sof_30000.dcm", "JPEG frame header claims 30000x30000, the DICOM header 48x48"),
        ("j2k_siz_30000.dcm", "JPEG 2000 SIZ claims 30000x30000, the DICOM header 48x48"),
        ("nested_sq_20000.dcm", "the sequence nesting depth is 17, over the limit of 16"),
        ("deflate_nested_20000.dcm", "the sequence nesting depth is 17, over the limit of 16"),
        ("mosaic_images_4294967295.dcm", "Rows is 65536, over the limit of 16384"),
        ("rle_15_segments.dcm", "RLE fragment has 15 segments, the header needs 2"),
        ("rle_segment_count_huge.dcm", "RLE fragment has 4294967295 segments"),
        ("deflate_bomb_2gib.dcm", "the header before Pixel Data (bytes) is"),
        ("deflate_element_4gib.dcm", "the inflated data set (bytes) is 4294968340"),
        ("no_preamble_element_4gib.dcm", "(0009,1010) claims 4294967280 bytes but only 4620 remain"),
    ];
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("rejected: ")).collect();
    for (file, reason) in expected {
        let hits: Vec<&&str> = lines.iter().filter(|l| l.contains(&format!("/{file}: "))).collect();
        assert_eq!(hits.len(), 1, "{file}: expected exactly one line, got {hits:?}\n{stderr}");
        assert!(hits[0].contains(reason), "{file}: line {:?} lacks {reason:?}", hits[0]);
    }
    assert_eq!(lines.len(), expected.len(), "one line per bad file:\n{stderr}");
    let written: Vec<_> = std::fs::read_dir(out.path()).expect("out").collect();
    assert!(written.is_empty(), "nothing may be written for bad input: {written:?}");
}

#[test]
fn hostile_file_names_and_descriptions_stay_inside_the_output_folder() {
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    // A valid 3-slice series (its description tries to climb out) under hostile names...
    let names = ["-rf ;rm -rf ~ $(reboot).dcm", "line\nbreak\u{1b}[31m.dcm", "名前 ünï.dcm"];
    let src = data_dir().join("hostile_description");
    let mut srcs: Vec<_> = std::fs::read_dir(&src).expect("src").filter_map(|e| e.ok().map(|e| e.path())).collect();
    srcs.sort();
    assert_eq!(srcs.len(), 3);
    for (s, n) in srcs.iter().zip(names) {
        std::fs::copy(s, input.join(n)).expect("copy");
    }
    // ...and a broken file with a newline and an escape sequence in its name.
    std::fs::write(input.join("evil\nname\u{1b}[2J.dcm"), b"not dicom at all").expect("write");
    let out = work.path().join("out");
    let r = ldae().arg("convert").arg(&input).arg("-o").arg(&out).output().expect("run ldae");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    let rejected: Vec<&str> = stderr.lines().filter(|l| l.starts_with("rejected: ")).collect();
    assert_eq!(rejected.len(), 1, "exactly one (single-line) rejection: {stderr:?}");
    assert!(rejected[0].contains("evil?name?[2J.dcm: unreadable: not DICOM"), "{:?}", rejected[0]);
    assert!(!stderr.contains('\u{1b}'), "control characters must not reach the terminal");
    // Everything written is directly inside `out`, with a sanitised name.
    let mut files: Vec<String> = Vec::new();
    for e in walk(work.path()) {
        if !e.starts_with(&input) {
            assert_eq!(e.parent(), Some(out.as_path()), "written outside the output folder: {}", e.display());
            files.push(e.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string());
        }
    }
    files.sort();
    assert_eq!(files, vec!["007_etc_passwd_x.json", "007_etc_passwd_x.nii.gz"], "{files:?}");
}

#[test]
fn a_write_error_stops_with_exit_2_naming_the_output_file() {
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("out");
    // A folder where the volume must go: the rename onto it fails, on the writer thread, mid-conversion.
    std::fs::create_dir_all(out.join("007_etc_passwd_x.nii.gz")).expect("mkdir");
    let r =
        ldae().arg("convert").arg(data_dir().join("hostile_description")).arg("-o").arg(&out).output().expect("run");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "a write error is exit 2: {stderr}");
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    assert!(stderr.contains("writing ") && stderr.contains("007_etc_passwd_x.nii.gz"), "names the file: {stderr}");
    assert!(!out.join("007_etc_passwd_x.json").exists(), "no sidecar without its volume");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}
