//! Semantic encoder parity against the reference implementation's fixtures (shared/ldae/fixtures/tiny-a and
//! tiny-b): every stored intermediate and y_sem of both inputs, max abs error ≤ 1e-4 of the tensor's max |value|.

use candle_core::{DType, Device, Tensor};
use ldae::model::config::ModelConfig;
use ldae::model::semantic::SemanticEncoder;
use ldae::model::weights::{open_weights, WeightsFile};

mod common;

fn rel_err(ours: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(ours.dims(), want.dims(), "shape");
    let scale: f32 = want.abs().and_then(|t| t.flatten_all()?.max(0)?.to_scalar()).expect("scale");
    let err: f32 = (ours - want).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar()).expect("err");
    err / scale.max(1e-12)
}

fn check_fixture(name: &str) {
    let Some(dir) = common::shared_data(&format!("ldae/fixtures/{name}")) else { return };
    let cfg = ModelConfig::load(&dir.join("config.json")).expect("config");
    let dev = Device::Cpu;
    let vb = open_weights(&dir, WeightsFile::Encoder, &dev).expect("encoder weights");
    let enc = SemanticEncoder::new(vb, &cfg).expect("encoder");
    let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &dev).expect("inputs");
    let want = candle_core::safetensors::load(dir.join("semantic.safetensors"), &dev).expect("semantic");
    let trace = enc.forward_trace(&inputs["enc_input_a"]).expect("forward a");
    let mut worst = 0f32;
    for (k, t) in trace.named() {
        let w = &want[&format!("{k}_a")];
        let e = rel_err(t, w);
        eprintln!("{name} {k}: rel err {e:.2e}");
        assert!(e <= 1e-4, "{name} {k}: relative error {e}");
        worst = worst.max(e);
    }
    let y_b = enc.forward(&inputs["enc_input_b"]).expect("forward b");
    let e = rel_err(&y_b, &want["y_sem_b"]);
    eprintln!("{name} y_sem_b: rel err {e:.2e}");
    assert!(e <= 1e-4, "{name} y_sem_b: relative error {e}");
    assert_eq!(y_b.dtype(), DType::F32);
    eprintln!("{name}: worst relative error {:.2e}", worst.max(e));
}

#[test]
fn semantic_parity_tiny_a() {
    check_fixture("tiny-a");
}

#[test]
fn semantic_parity_tiny_b() {
    check_fixture("tiny-b");
}

/// Batched input gives each sample's own y_sem (slices are batch-major).
#[test]
fn batch_of_two_equals_two_singles() {
    let Some(dir) = common::shared_data("ldae/fixtures/tiny-a") else { return };
    let cfg = ModelConfig::load(&dir.join("config.json")).expect("config");
    let dev = Device::Cpu;
    let enc = SemanticEncoder::new(open_weights(&dir, WeightsFile::Encoder, &dev).expect("w"), &cfg).expect("enc");
    let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &dev).expect("inputs");
    let both = Tensor::cat(&[&inputs["enc_input_a"], &inputs["enc_input_b"]], 0).expect("cat");
    let y = enc.forward(&both).expect("batch");
    let want = candle_core::safetensors::load(dir.join("semantic.safetensors"), &dev).expect("semantic");
    assert!(rel_err(&y.narrow(0, 0, 1).expect("a"), &want["y_sem_a"]) <= 1e-4);
    assert!(rel_err(&y.narrow(0, 1, 1).expect("b"), &want["y_sem_b"]) <= 1e-4);
}
