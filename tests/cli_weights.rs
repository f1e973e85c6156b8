//! `ldae weights convert` / `check` run as the real binary on a model directory in the published layout
//! (tiny-a's configuration and weights, the encoder as a torch zip with shared backbone storages).

use std::path::Path;
use std::process::Command;

mod pth_support;
use pth_support::write_encoder_pth;

mod common;

fn ldae(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ldae")).args(args).output().expect("run ldae");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// tiny-a as a model directory: config.json, autoencoderkl/decoder as safetensors, encoder as .pth.
fn model_dir(fx: &Path, dir: &Path, drop: Option<&str>) {
    for f in ["config.json", "autoencoderkl.safetensors", "decoder.safetensors"] {
        std::fs::copy(fx.join(f), dir.join(f)).expect("copy");
    }
    let st = candle_core::safetensors::load(fx.join("encoder.safetensors"), &candle_core::Device::Cpu).expect("fx");
    write_encoder_pth(&dir.join("encoder.pth"), &st, drop, None);
}

#[test]
fn convert_then_check_then_detect_tampering() {
    let Some(fx) = common::shared_data("ldae/fixtures/tiny-a") else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    model_dir(&fx, dir, None);
    let d = dir.to_str().expect("utf8");

    let (ok, out, err) = ldae(&["weights", "convert", d]);
    assert!(ok, "convert failed: {err}");
    assert!(out.contains("encoder.pth →"), "{out}");
    let st = dir.join("encoder.safetensors");
    // The converted file holds both prefixes, values equal to the fixture's.
    let conv = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).expect("converted");
    let orig = candle_core::safetensors::load(fx.join("encoder.safetensors"), &candle_core::Device::Cpu).expect("fx");
    assert_eq!(conv.len(), orig.len());
    for (k, t) in &orig {
        let d: f32 = (t - &conv[k]).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar()).expect("diff");
        assert_eq!(d, 0.0, "{k}");
    }
    // The manifest's checksums are the files' sha256.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("json");
    let want = ldae::model::manifest::sha256_file(&st).expect("sha");
    assert_eq!(m["files"]["encoder.safetensors"]["sha256"], want.sha256.as_str());
    assert!(m["files"]["encoder.pth"]["sha256"].is_string());
    assert_eq!(m["config"]["enc_args"]["emb_chans"], 64);
    assert_eq!(m["tool"], "ldae");

    let (ok, out, err) = ldae(&["weights", "check", d]);
    assert!(ok, "check failed: {err}");
    assert!(out.contains("encoder.safetensors: sha256 ok") && out.contains("keys and shapes match"), "{out}");

    // Flip one byte of tensor data: still valid safetensors, checksum differs.
    let mut bytes = std::fs::read(&st).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&st, bytes).expect("write");
    let (ok, _, err) = ldae(&["weights", "check", d]);
    assert!(!ok);
    assert!(err.contains("encoder.safetensors") && err.contains("sha256"), "{err}");
}

#[test]
fn missing_key_and_empty_dir_are_clear_errors() {
    let Some(fx) = common::shared_data("ldae/fixtures/tiny-a") else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    model_dir(&fx, tmp.path(), Some("cross_attention.in_proj_bias"));
    let (ok, _, err) = ldae(&["weights", "convert", tmp.path().to_str().expect("utf8")]);
    assert!(!ok);
    assert!(
        err.contains("encoder.pth") && err.contains("missing") && err.contains("cross_attention.in_proj_bias"),
        "{err}"
    );
    assert!(!tmp.path().join("manifest.json").exists(), "no manifest for a failed conversion");

    let empty = tempfile::tempdir().expect("tmp");
    let (ok, _, err) = ldae(&["weights", "check", empty.path().to_str().expect("utf8")]);
    assert!(!ok);
    assert!(err.contains("autoencoderkl.safetensors or autoencoderkl.pth"), "{err}");
}
