//! Loading PyTorch zip checkpoints (`torch.save` layout) and refusing bad ones.
//!
//! The `.pth` files are built here byte by byte following torch's documented format (zip of `archive/data.pkl`,
//! `archive/data/<key>`, `archive/version`, `archive/byteorder`; a protocol-2 pickle of an OrderedDict of
//! `_rebuild_tensor_v2` calls with persistent-id storages), and one by Python's `pickle` + `zipfile` without torch
//! (tests/data/model/make_pth.py).
//!
//! A missing tool or data file goes through `common::require` (`tool`, `shared_data`, `python_modules`), which
//! fails the test under `LDAE_REQUIRE_ALL=1` (CI) and only skips, loudly, without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ldae::model::config::ModelConfig;
use ldae::model::semantic::SemanticEncoder;
use ldae::model::weights::{open_weights, read_tensors, WeightsFile};

mod pth_support;
use pth_support::{state_dict_pickle, write_encoder_pth, write_pth, Entry, REBUILD};

mod common;

fn small_pth(dir: &Path, rebuild: &str) -> PathBuf {
    let storages = BTreeMap::from([("0", (0..6).map(|i| i as f32).collect::<Vec<_>>()), ("1", vec![7.0, 8.0])]);
    let numel = storages.iter().map(|(k, v)| (*k, v.len())).collect();
    let entries = [
        Entry { key: "w", storage: "0", offset: 0, size: vec![2, 3], stride: vec![3, 1] },
        Entry { key: "wt", storage: "0", offset: 0, size: vec![3, 2], stride: vec![1, 3] },
        Entry { key: "tail", storage: "0", offset: 4, size: vec![2], stride: vec![1] },
        Entry { key: "b", storage: "1", offset: 0, size: vec![2], stride: vec![1] },
    ];
    let path = dir.join("small.pth");
    write_pth(&path, &state_dict_pickle(&entries, &numel, rebuild), &storages);
    path
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F32)?.to_vec1()).expect("values")
}

#[test]
fn rust_built_pth_views_and_shared_storage() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = read_tensors(&small_pth(tmp.path(), REBUILD)).expect("read");
    assert_eq!(t.len(), 4);
    assert_eq!(t["w"].dims(), &[2, 3]);
    assert_eq!(values(&t["w"]), vec![0., 1., 2., 3., 4., 5.]);
    assert_eq!(values(&t["wt"]), vec![0., 3., 1., 4., 2., 5.], "transposed view of the shared storage");
    assert_eq!(values(&t["tail"]), vec![4., 5.], "offset view");
    assert_eq!(values(&t["b"]), vec![7., 8.]);
}

#[test]
fn python_pickle_built_pth_loads() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/model/make_pth.py");
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("py.pth");
    // make_pth.py uses only the standard library (pickle, zipfile, struct).
    if !common::python_modules(&["pickle", "zipfile", "struct"]) {
        return;
    }
    let status = std::process::Command::new("python3").arg(&script).arg(&out).status().expect("run python3");
    assert!(status.success(), "make_pth.py failed");
    let t = read_tensors(&out).expect("read python-made pth");
    assert_eq!(values(&t["w"]), vec![0., 1., 2., 3., 4., 5.]);
    assert_eq!(values(&t["wt"]), vec![0., 3., 1., 4., 2., 5.]);
    assert_eq!(values(&t["tail"]), vec![4., 5.]);
    assert_eq!(t["h"].dtype(), candle_core::DType::F64);
    assert_eq!(values(&t["h"]), vec![1.5, -2.0]);
}

#[test]
fn hostile_global_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = small_pth(tmp.path(), "os\nsystem\n");
    let e = read_tensors(&p).unwrap_err().to_string();
    assert!(e.contains("small.pth") && e.contains("refusing global os.system"), "{e}");
}

#[test]
fn truncated_and_random_files_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = std::fs::read(small_pth(tmp.path(), REBUILD)).expect("read");
    let cut = tmp.path().join("cut.pth");
    std::fs::write(&cut, &good[..good.len() / 2]).expect("write");
    let e = read_tensors(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.pth"), "{e}");
    let rnd = tmp.path().join("random.pth");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&rnd, bytes).expect("write");
    let e = read_tensors(&rnd).unwrap_err().to_string();
    assert!(e.contains("random.pth"), "{e}");
    // A pickle cut short inside a valid zip.
    let storages = BTreeMap::from([("0", vec![1.0f32; 4])]);
    let numel = BTreeMap::from([("0", 4usize)]);
    let entries = [Entry { key: "a", storage: "0", offset: 0, size: vec![4], stride: vec![1] }];
    let pk = state_dict_pickle(&entries, &numel, REBUILD);
    let short = tmp.path().join("short.pth");
    write_pth(&short, &pk[..pk.len() - 10], &storages);
    let e = read_tensors(&short).unwrap_err().to_string();
    assert!(e.contains("short.pth") && e.contains("pickle"), "{e}");
    // A view claiming more elements than the storage has.
    let big = [Entry { key: "a", storage: "0", offset: 2, size: vec![4], stride: vec![1] }];
    let over = tmp.path().join("over.pth");
    write_pth(&over, &state_dict_pickle(&big, &numel, REBUILD), &storages);
    let e = read_tensors(&over).unwrap_err().to_string();
    assert!(e.contains("over.pth") && e.contains("storage"), "{e}");
}

/// The tiny-a encoder written as the published `encoder.pth` layout (both prefixes sharing storages) loads
/// through `open_weights` and gives the fixture's y_sem; a dropped and an added key are one error listing both.
#[test]
fn published_encoder_layout_loads_and_keys_are_checked() {
    let Some(fx) = common::shared_data("ldae/fixtures/tiny-a") else { return };
    let dev = Device::Cpu;
    let st = candle_core::safetensors::load(fx.join("encoder.safetensors"), &dev).expect("fixture");
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::copy(fx.join("config.json"), tmp.path().join("config.json")).expect("config");
    write_encoder_pth(&tmp.path().join("encoder.pth"), &st, None, None);
    let cfg = ModelConfig::load(&tmp.path().join("config.json")).expect("cfg");
    let enc =
        SemanticEncoder::new(open_weights(tmp.path(), WeightsFile::Encoder, &dev).expect("open"), &cfg).expect("enc");
    let inputs = candle_core::safetensors::load(fx.join("inputs.safetensors"), &dev).expect("inputs");
    let want = candle_core::safetensors::load(fx.join("semantic.safetensors"), &dev).expect("semantic");
    let y = enc.forward(&inputs["enc_input_a"]).expect("forward");
    let err: f32 = (y - &want["y_sem_a"]).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar()).expect("err");
    assert!(err < 1e-5, "y_sem from encoder.pth differs by {err}");

    // Drop one key, add one → one error naming both.
    let bad = tempfile::tempdir().expect("tmp");
    std::fs::copy(fx.join("config.json"), bad.path().join("config.json")).expect("config");
    write_encoder_pth(&bad.path().join("encoder.pth"), &st, Some("query_projection.bias"), Some("surprise.weight"));
    let e = open_weights(bad.path(), WeightsFile::Encoder, &dev).err().expect("must fail").to_string();
    assert!(e.contains("encoder.pth") && e.contains("query_projection.bias") && e.contains("surprise.weight"), "{e}");
}
