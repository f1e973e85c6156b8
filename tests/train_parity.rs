//! One training step of each LDAE stage (SPEC §1) against the same step in PyTorch: the loss and every trained
//! parameter's gradient within 1e-4 of each tensor's max |value|, plus two clipped Adam steps of the AEKL.
//!
//! Fixtures: tests/data/train (scripts/make_train_fixtures.py, see its PROVENANCE.md) hold the batch, noise,
//! timesteps, losses and gradients; the weights are the committed random weights of the tiny fixtures
//! (tests/data/shared/ldae/fixtures/tiny-a, tiny-b). The losses come from `ldae::model::train::{aekl,ddpm,repr}`,
//! the networks from `train::params` (their tensors are the VarMap's Vars, so gradients land on them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use ldae::model::config::ModelConfig;
use ldae::model::ddim::Schedule;
use ldae::model::train::optim::{Adam, AdamParams, Grads};
use ldae::model::train::{aekl, ddpm, params, repr};

mod common;

/// Gradients and losses: max |ours − torch| over max |torch| per tensor.
const GRAD_TOL: f64 = 1e-4;

fn dev() -> Device {
    match std::env::var("LDAE_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::new_cuda(0).expect("LDAE_TEST_DEVICE=cuda needs the cuda feature and a GPU"),
        _ => Device::Cpu,
    }
}

/// The torch step of `stage` (tests/data/train/<stage>.safetensors), or `None` after `require` when missing.
fn torch_step(stage: &str) -> Option<HashMap<String, Tensor>> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/train").join(format!("{stage}.safetensors"));
    if !p.is_file() {
        common::require(&format!("fixture {} (run scripts/make_train_fixtures.py)", p.display()));
        return None;
    }
    Some(candle_core::safetensors::load(&p, &dev()).expect("train fixture"))
}

/// The tiny fixture `name`'s folder and config, or `None` after `require`.
fn tiny(name: &str) -> Option<(PathBuf, ModelConfig)> {
    let dir = common::shared_data(&format!("ldae/fixtures/{name}"))?;
    let cfg = ModelConfig::load(&dir.join("config.json")).expect("fixture config");
    Some((dir, cfg))
}

fn get<'a>(m: &'a HashMap<String, Tensor>, k: &str) -> &'a Tensor {
    m.get(k).unwrap_or_else(|| panic!("fixture tensor {k} missing"))
}

fn timesteps(m: &HashMap<String, Tensor>) -> Vec<usize> {
    get(m, "t").to_vec1::<i64>().expect("t").into_iter().map(|t| t as usize).collect()
}

fn vec64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f64>()).expect("to_vec")
}

fn max_abs(t: &Tensor) -> f64 {
    vec64(t).iter().fold(0f64, |m, v| m.max(v.abs()))
}

/// Max |got − want| / max(max |want|, floor) (shapes must agree).
fn rel_err(what: &str, got: &Tensor, want: &Tensor, floor: f64) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (vec64(got), vec64(want));
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(floor).max(1e-30);
    let err = g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    if err.is_finite() {
        err / scale
    } else {
        f64::INFINITY
    }
}

/// Worst relative error over a set of tensors, with its name; asserts each is within `tol`.
#[derive(Default)]
struct Worst {
    err: f64,
    name: String,
    count: usize,
}

impl Worst {
    fn check_floor(&mut self, what: &str, got: &Tensor, want: &Tensor, floor: f64, tol: f64) {
        let e = rel_err(what, got, want, floor);
        assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
        self.count += 1;
        if e >= self.err {
            self.err = e;
            self.name = what.to_string();
        }
    }

    fn report(&self, stage: &str) {
        println!("{stage}: {} tensors, worst relative error {:.3e} ({})", self.count, self.err, self.name);
    }
}

fn scalar(t: &Tensor) -> f64 {
    vec64(t)[0]
}

fn check_loss(stage: &str, got: &Tensor, want: &Tensor) {
    let (g, w) = (scalar(got), scalar(want));
    let e = (g - w).abs() / w.abs();
    println!("{stage}: loss {g:.7} (torch {w:.7}), relative {e:.2e}");
    assert!(e <= GRAD_TOL, "{stage}: loss {g} vs torch {w}");
}

/// The VarMap's Vars by name.
fn vars(vm: &VarMap) -> Vec<(String, Var)> {
    let data = vm.data().lock().expect("varmap lock");
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Compare the gradient of every key the fixture has under `prefix` with ours; every fixture gradient must be
/// matched by a Var, and every Var that the fixture says is not trained is left out.
fn check_grads(
    stage: &str,
    vm: &VarMap,
    grads: &candle_core::backprop::GradStore,
    want: &HashMap<String, Tensor>,
    prefix: &str,
    worst: &mut Worst,
) {
    let vs = vars(vm);
    let names: std::collections::HashSet<&str> = vs.iter().map(|(k, _)| k.as_str()).collect();
    let expected: Vec<&String> = want.keys().filter(|k| k.starts_with(prefix)).collect();
    assert!(!expected.is_empty(), "{stage}: no `{prefix}` gradients in the fixture");
    for k in &expected {
        let key = &k[prefix.len()..];
        assert!(names.contains(key), "{stage}: fixture has a gradient for {key}, the network has no such tensor");
    }
    // A gradient that is zero in exact arithmetic (the bias of a conv feeding a GroupNorm with one channel per
    // group) is float noise on both sides: its scale is at least 1e-3 of the stage's largest gradient.
    let floor = expected.iter().map(|k| max_abs(&want[k.as_str()])).fold(0f64, f64::max) * 1e-3;
    for (name, var) in &vs {
        let Some(w) = want.get(&format!("{prefix}{name}")) else { continue };
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{stage}: no gradient reached {name}"));
        worst.check_floor(&format!("{stage} grad {name}"), g, w, floor, GRAD_TOL);
    }
}

#[test]
fn aekl_step_matches_torch() {
    let (Some(want), Some((dir, cfg))) = (torch_step("aekl"), tiny("tiny-a")) else { return };
    let d = dev();
    let vm = params::varmap_from_safetensors(&dir.join("autoencoderkl.safetensors"), &d).expect("weights");
    let ae = params::build_aekl(&vm, &cfg, &d).expect("aekl");
    let w = aekl::AeklLossWeights { kl: 1e-7, perceptual: 0.0, adversarial: 0.0 };
    let x = get(&want, "x");
    let eps = get(&want, "eps_sample");
    let losses = aekl::loss(&ae, x, eps, &w).expect("aekl loss");
    check_loss("aekl", &losses.total, get(&want, "loss"));
    check_loss("aekl l1", &losses.l1, get(&want, "l1"));
    check_loss("aekl kl", &losses.kl, get(&want, "kl"));
    let grads = losses.total.backward().expect("backward");
    let mut worst = Worst::default();
    check_grads("aekl", &vm, &grads, &want, "grad.", &mut worst);
    assert_eq!(worst.count, vars(&vm).len(), "aekl: every AEKL tensor is trained");
    worst.report("aekl");
}

#[test]
fn ddpm_step_matches_torch() {
    let (Some(want), Some((dir, cfg))) = (torch_step("ddpm"), tiny("tiny-a")) else { return };
    let d = dev();
    let vm = params::varmap_from_safetensors(&dir.join("decoder.safetensors"), &d).expect("weights");
    let unet = params::build_unet(&vm, &cfg, &d).expect("unet");
    let sched = Schedule::new(&cfg.timesteps_args).expect("schedule");
    let loss = ddpm::loss(&unet, get(&want, "z0"), &timesteps(&want), get(&want, "noise"), &sched).expect("loss");
    check_loss("ddpm", &loss, get(&want, "loss"));
    let grads = loss.backward().expect("backward");
    let mut worst = Worst::default();
    check_grads("ddpm", &vm, &grads, &want, "grad.", &mut worst);
    // The plain UNet never touches the shift path.
    for (name, var) in vars(&vm) {
        if !want.contains_key(&format!("grad.{name}")) {
            if let Some(g) = grads.get(var.as_tensor()) {
                let m = vec64(g).iter().fold(0f64, |m, v| m.max(v.abs()));
                assert!(m == 0.0, "ddpm: the shift-path tensor {name} got a gradient (max {m:e})");
            }
        }
    }
    worst.report("ddpm");
}

#[test]
fn repr_step_matches_torch() {
    let (Some(want), Some((dir, cfg))) = (torch_step("repr"), tiny("tiny-b")) else { return };
    let d = dev();
    let vm_e = params::varmap_from_safetensors(&dir.join("encoder.safetensors"), &d).expect("encoder weights");
    let vm_d = params::varmap_from_safetensors(&dir.join("decoder.safetensors"), &d).expect("decoder weights");
    let encoder = params::build_encoder(&vm_e, &cfg, &d).expect("encoder");
    let unet = params::build_unet(&vm_d, &cfg, &d).expect("unet");
    let sched = Schedule::new(&cfg.timesteps_args).expect("schedule");
    let nets = repr::ReprNets { encoder: &encoder, unet: &unet };
    let loss =
        repr::loss(&nets, get(&want, "x0_axial"), get(&want, "z0"), &timesteps(&want), get(&want, "noise"), &sched)
            .expect("loss");
    check_loss("repr", &loss, get(&want, "loss"));
    let grads = loss.backward().expect("backward");
    let mut worst = Worst::default();
    check_grads("repr encoder", &vm_e, &grads, &want, "grad_encoder.", &mut worst);
    check_grads("repr shift", &vm_d, &grads, &want, "grad_decoder.", &mut worst);
    worst.report("repr");
}

/// Two optimiser steps of the AEKL on the same batch as torch's `clip_grad_norm_(1.0)` + `Adam(lr 5e-5)`: the
/// pre-clip norms, the loss at the step-1 parameters and each step's parameter update. An update is a difference
/// of float32 parameters, so besides 1e-4 of its max |value| it may differ by the parameter's own rounding (two
/// float32 ulps of |p|).
#[test]
fn aekl_two_clipped_adam_steps_match_torch() {
    let (Some(want), Some((dir, cfg))) = (torch_step("aekl"), tiny("tiny-a")) else { return };
    let d = dev();
    let vm = params::varmap_from_safetensors(&dir.join("autoencoderkl.safetensors"), &d).expect("weights");
    let ae = params::build_aekl(&vm, &cfg, &d).expect("aekl");
    let w = aekl::AeklLossWeights { kl: 1e-7, perceptual: 0.0, adversarial: 0.0 };
    let vs = vars(&vm);
    let hp = AdamParams { lr: 5e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let mut opt = Adam::new(vs.clone(), hp).expect("adam");
    let mut worst = Worst::default();
    let mut prev: Vec<Vec<f64>> = Vec::new();
    for step in 1..=2 {
        let losses = aekl::loss(&ae, get(&want, "x"), get(&want, "eps_sample"), &w).expect("loss");
        if step == 2 {
            check_loss("aekl step 2", &losses.total, get(&want, "loss2"));
        }
        let mut g = Grads::default();
        g.accumulate(&vs, &losses.total.backward().expect("backward")).expect("grads");
        let norm = g.clip(1.0).expect("clip");
        let torch_norm = scalar(get(&want, &format!("grad_norm.{step}")));
        println!("aekl step {step}: grad norm {norm:.6} (torch {torch_norm:.6})");
        assert!((norm - torch_norm).abs() <= GRAD_TOL * torch_norm, "step {step}: grad norm {norm} vs {torch_norm}");
        assert!(norm > 1.0, "the fixture is meant to exercise the clip");
        let clipped: Vec<Vec<f64>> = vs.iter().map(|(k, _)| vec64(&g.0[k])).collect();
        let before: Vec<Tensor> = vs.iter().map(|(_, v)| v.as_tensor().copy().expect("copy")).collect();
        opt.step(&g).expect("adam step");
        for (k, (((name, var), b), gc)) in vs.iter().zip(&before).zip(&clipped).enumerate() {
            let after = var.as_tensor();
            let upd = (after - b).expect("update");
            let w = get(&want, &format!("update{step}.{name}"));
            let (gu, wu, p) = (vec64(&upd), vec64(w), vec64(after));
            let scale = wu.iter().fold(0f64, |m, v| m.max(v.abs()));
            let mut rel = 0f64;
            for i in 0..wu.len() {
                let err = (gu[i] - wu[i]).abs();
                // The gradient's own tolerance carried through Adam's g/(|g|+eps): d/dg = eps/(|g|+eps)^2,
                // large where |g| is near eps.
                let dg = GRAD_TOL * gc.iter().fold(0f64, |m, v| m.max(v.abs()));
                // Step 2: u = m̂/(√v̂ + eps) moves by about δg/√v̂.
                let through = if step == 1 {
                    hp.lr * hp.eps * dg / (gc[i].abs() + hp.eps).powi(2)
                } else {
                    let g1 = prev[k][i];
                    let vhat = 0.001 * (0.999 * g1 * g1 + gc[i] * gc[i]) / (1.0 - 0.999f64.powi(2));
                    hp.lr * dg / (vhat.sqrt() + hp.eps)
                };
                let allowed = GRAD_TOL * scale + 2.0 * f32::EPSILON as f64 * p[i].abs() + through;
                assert!(
                    err <= allowed,
                    "step {step} update {name}[{i}]: {} vs torch {} (allowed {allowed:e})",
                    gu[i],
                    wu[i]
                );
                rel = rel.max(err / scale);
            }
            worst.count += 1;
            if rel >= worst.err {
                worst.err = rel;
                worst.name = format!("step {step} update {name}");
            }
        }
        prev = clipped;
    }
    worst.report("aekl adam (updates, relative incl. rounding)");
}
