//! `ldae train aekl|ddpm|repr` as a process on a tiny configuration (16³ inputs, 4 synthetic volumes made here:
//! smoothed noise inside an ellipsoid of random size): each stage trains a few steps from scratch (ddpm/repr from
//! the previous stage's output), the loss on a fixed batch falls, `--resume` continues the step count, every
//! output directory passes `ldae weights check` and encodes a scan, and bad configuration/data fail naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use ldae::nifti::write_nifti;
use ldae::volume::{Affine, Volume};
use ndarray::Array3;
use rand::{Rng, SeedableRng};

const N: usize = 16;

fn ldae(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ldae")).args(args).output().expect("run ldae");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A brain-like blob: an ellipsoid of random radii filled with box-smoothed noise, scaled to [0, 1].
fn volume(seed: u64) -> Volume {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let noise = Array3::from_shape_fn((N, N, N), |_| rng.random::<f32>());
    let r: [f32; 3] = [rng.random_range(4.5..7.0), rng.random_range(4.5..7.0), rng.random_range(4.5..7.0)];
    let c = (N as f32 - 1.0) / 2.0;
    let mut v = Array3::<f32>::zeros((N, N, N));
    for ((i, j, k), out) in v.indexed_iter_mut() {
        let d = [(i as f32 - c) / r[0], (j as f32 - c) / r[1], (k as f32 - c) / r[2]];
        if d.iter().map(|x| x * x).sum::<f32>() > 1.0 {
            continue;
        }
        let mut s = 0.0;
        for a in i.saturating_sub(1)..(i + 2).min(N) {
            for b in j.saturating_sub(1)..(j + 2).min(N) {
                for e in k.saturating_sub(1)..(k + 2).min(N) {
                    s += noise[[a, b, e]];
                }
            }
        }
        *out = 0.3 + 0.7 * s / 27.0;
    }
    let max = v.iter().cloned().fold(0f32, f32::max);
    v.mapv_inplace(|x| x / max);
    Volume::new(v, Affine::from_spacing_origin([2.0; 3], [0.0; 3]))
}

/// The parity fixture `tiny-a`'s config with tiny sizes: AEKL [4, 8] (latent 3×8³), UNet base 32 ×[1, 1],
/// ConvNeXt 8/16 (not weights/demo's: the demo model's sizes are a training recipe's choice, not the test's).
fn model_json() -> String {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shared/ldae/fixtures/tiny-a/config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(demo).unwrap()).unwrap();
    v["vae_args"]["num_channels"] = serde_json::json!([4, 8]);
    v["vae_args"]["attention_levels"] = serde_json::json!([false, false]);
    v["vae_args"]["norm_num_groups"] = serde_json::json!(4);
    v["enc_args"]["backbone_args"]["convnext_block_setting"] = serde_json::json!([[8, 16, 1], [16, null, 1]]);
    v["enc_args"]["emb_chans"] = serde_json::json!(16);
    v["enc_args"]["seq_len"] = serde_json::json!(N);
    v["data"]["resize_to"] = serde_json::json!([N, N, N]);
    v["data"]["pixdim"] = serde_json::json!(2.0);
    v.as_object_mut().unwrap().remove("fixture");
    serde_json::to_string_pretty(&v).unwrap()
}

fn train_toml(stage: &str, lr: f64, accumulate: usize) -> String {
    format!(
        "stage = \"{stage}\"\n[model]\nconfig = \"model.json\"\n[run]\nsteps = 6\nbatch_size = 2\naccumulate = {accumulate}\n\
         seed = 7\ncheckpoint_every = 3\nvalidate_every = 3\nval_count = 1\n[optim]\nlr = {lr}\nema_decay = 0.5\n"
    )
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..4 {
        write_nifti(&data.join(format!("v{i}.nii.gz")), &volume(i)).unwrap();
    }
    std::fs::write(root.join("model.json"), model_json()).unwrap();
    for (stage, lr, acc) in [("aekl", 3e-3, 1), ("ddpm", 2e-3, 1), ("repr", 2e-3, 2)] {
        std::fs::write(root.join(format!("{stage}.toml")), train_toml(stage, lr, acc)).unwrap();
    }
    Setup { _tmp: tmp, root, data }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ldae train STAGE --json …` → the summary.
fn train(st: &Setup, stage: &str, out: &str, extra: &[&str]) -> serde_json::Value {
    let cfg = st.root.join(format!("{stage}.toml"));
    let outp = st.root.join(out);
    let mut args = vec!["train", stage, "--config", s(&cfg), "--data", s(&st.data), "-o", s(&outp), "--json"];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = ldae(&args);
    assert!(ok, "ldae train {stage} failed: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}"))
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn weights_ok(dir: &Path) {
    let (ok, stdout, stderr) = ldae(&["weights", "check", s(dir)]);
    assert!(ok && stdout.contains(": ok"), "weights check {}: {stdout} {stderr}", dir.display());
}

#[test]
fn three_stages_train_resume_and_make_model_directories() {
    let st = setup();
    // (a) AEKL from scratch, 4 steps, then --resume to 6.
    let a = train(&st, "aekl", "m1", &["--steps", "4"]);
    assert_eq!((a["start_step"].as_u64(), a["end_step"].as_u64()), (Some(0), Some(4)), "{a}");
    let (b0, b1) = (f(&a, "fixed_loss_before"), f(&a, "fixed_loss_after"));
    eprintln!("aekl: fixed-batch loss {b0:.5} → {b1:.5}, {:.2} steps/s", f(&a, "steps_per_s"));
    assert!(b1 < 0.97 * b0, "AEKL loss did not fall: {b0} → {b1}");
    let r = train(&st, "aekl", "m1", &["--resume"]);
    assert_eq!((r["start_step"].as_u64(), r["end_step"].as_u64()), (Some(4), Some(6)), "{r}");
    assert!(f(&r, "fixed_loss_before") < b0, "resume did not restore the trained weights: {r}");
    let log = std::fs::read_to_string(st.root.join("m1/train-log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6], "log steps");
    assert!(log.contains("\"event\":\"val\"") && log.contains("\"ssim\""), "no validation in the log");
    weights_ok(&st.root.join("m1"));

    // (b) DDPM on the AEKL's latents.
    let m1 = st.root.join("m1");
    let d = train(&st, "ddpm", "m2", &["--init", s(&m1)]);
    let (d0, d1) = (f(&d, "fixed_loss_before"), f(&d, "fixed_loss_after"));
    eprintln!("ddpm: fixed-batch loss {d0:.5} → {d1:.5}, {:.2} steps/s", f(&d, "steps_per_s"));
    assert!(d1 < 0.99 * d0, "DDPM loss did not fall: {d0} → {d1}");
    weights_ok(&st.root.join("m2"));

    // (c) representation learning on the frozen epsilon path.
    let m2 = st.root.join("m2");
    let c = train(&st, "repr", "m3", &["--init", s(&m2)]);
    let (c0, c1) = (f(&c, "fixed_loss_before"), f(&c, "fixed_loss_after"));
    eprintln!("repr: fixed-batch loss {c0:.5} → {c1:.5}, {:.2} steps/s", f(&c, "steps_per_s"));
    assert!(c1 < c0, "repr loss did not fall: {c0} → {c1}");
    let m3 = st.root.join("m3");
    weights_ok(&m3);
    // The stage-(c) output keeps the stage-(b) epsilon path bit for bit (frozen) and is a usable model.
    let load = |p: PathBuf| candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    let (dec2, dec3) = (load(m2.join("decoder.safetensors")), load(m3.join("decoder.safetensors")));
    let same = |k: &str| {
        let a = dec2[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = dec3[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        a == b
    };
    assert!(same("input_blocks.0.0.weight") && same("out.2.weight"), "the epsilon path moved in stage repr");
    assert!(!same("shift_out.2.weight"), "the shift branch did not train");
    let codes = st.root.join("codes.safetensors");
    let (ok, _, err) =
        ldae(&["encode", "--model", s(&m3), "--steps", "2", s(&st.data.join("v0.nii.gz")), "-o", s(&codes)]);
    assert!(ok, "encode with the trained model: {err}");
}

#[test]
fn bad_configuration_and_data_fail_naming_the_file() {
    let st = setup();
    let bad = st.root.join("bad.toml");
    std::fs::write(&bad, train_toml("aekl", 1e-3, 1).replace("lr =", "lrr = 1\nlr =")).unwrap();
    let out = st.root.join("x");
    let (ok, _, err) = ldae(&["train", "aekl", "--config", s(&bad), "--data", s(&st.data), "-o", s(&out)]);
    assert!(!ok && err.contains("bad.toml") && err.contains("lrr"), "{err}");
    let (ok, _, err) =
        ldae(&["train", "ddpm", "--config", s(&st.root.join("aekl.toml")), "--data", s(&st.data), "-o", s(&out)]);
    assert!(!ok && err.contains("aekl.toml") && err.contains("stage"), "{err}");
    let wrong = st.root.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    let mut v = volume(9);
    v.data = Array3::zeros((N, N, N - 2));
    write_nifti(&wrong.join("scan.nii"), &v).unwrap();
    let (ok, _, err) =
        ldae(&["train", "aekl", "--config", s(&st.root.join("aekl.toml")), "--data", s(&wrong), "-o", s(&out)]);
    assert!(!ok && err.contains("scan.nii") && err.contains("ldae preprocess"), "{err}");
    let (ok, _, err) =
        ldae(&["train", "ddpm", "--config", s(&st.root.join("ddpm.toml")), "--data", s(&st.data), "-o", s(&out)]);
    assert!(!ok && err.contains("--init"), "{err}");
}
