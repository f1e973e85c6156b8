//! File-format speed: read and write of the shipped 1 mm MNI template (`.nii.gz` and `.nii`), and loading of a
//! paper-size `encoder.pth` in the published layout (every `backbone.backbone.*` also under
//! `slice_distributed.module.backbone.*`, sharing its storage), built with the tests' writer.
//! The `.pth` is also loaded through `candle_core::pickle::read_all`, the reader ldae does not use (see
//! src/model/pickle.rs). Prints the median of `LDAE_BENCH_REPS` (default 5) runs per case.
//!
//! Run: `cargo bench --bench io` (release) or `cargo bench --profile dev --bench io` (the tests' profile).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use ldae::model::config::ModelConfig;
use ldae::model::keyset::{expected_keys, WeightsFile, ENCODER_BACKBONE_TWIN};
use ldae::model::weights::load_file_checked;
use ldae::nifti::{read_nifti, write_nifti};

#[path = "../tests/pth_support/mod.rs"]
mod pth_support;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() {
    let reps: usize = std::env::var("LDAE_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let template = root.join("weights/templates/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz");
    let tmp = tempfile::tempdir().expect("tmp");
    let vol = read_nifti(&template).expect("template");
    let gz = tmp.path().join("t.nii.gz");
    let raw = tmp.path().join("t.nii");
    write_nifti(&raw, &vol).expect("write");
    let ms = time(reps, || drop(read_nifti(&template).expect("read")));
    println!("nifti read  template .nii.gz {:?}: {ms:.1} ms", vol.shape());
    let ms = time(reps, || drop(read_nifti(&raw).expect("read")));
    println!("nifti read  template .nii: {ms:.1} ms");
    let ms = time(reps, || write_nifti(&gz, &vol).expect("write"));
    println!("nifti write template .nii.gz: {ms:.1} ms");
    let ms = time(reps, || write_nifti(&raw, &vol).expect("write"));
    println!("nifti write template .nii: {ms:.1} ms");

    let cfg = ModelConfig::paper();
    let keys = expected_keys(&cfg, WeightsFile::Encoder).expect("keys");
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut n = 0usize;
    for (k, shape) in &keys {
        if k.starts_with(ENCODER_BACKBONE_TWIN) {
            continue;
        }
        let numel: usize = shape.iter().product();
        n += numel;
        let v: Vec<f32> = (0..numel).map(|i| (i % 97) as f32 * 1e-3).collect();
        tensors.insert(k.clone(), Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).expect("tensor"));
    }
    let pth = tmp.path().join("encoder.pth");
    pth_support::write_encoder_pth(&pth, &tensors, None, None);
    let size = std::fs::metadata(&pth).map(|m| m.len()).unwrap_or(0);
    drop(tensors);
    let ms = time(reps, || drop(load_file_checked(Path::new(&pth), WeightsFile::Encoder, &cfg).expect("load")));
    println!("pth   load  paper encoder ({} keys, {n} floats, {} MB): {ms:.1} ms", keys.len(), size >> 20);
    // The same file through candle's own reader, for the record kept in src/model/pickle.rs.
    let ms = time(reps, || drop(candle_core::pickle::read_all(&pth).expect("candle read_all")));
    println!("pth   load  paper encoder via candle_core::pickle::read_all (no key check): {ms:.1} ms");
}
