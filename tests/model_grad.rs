//! Whole-network gradient checks on tiny configurations with random weights: autograd through the CPU
//! kernels (conv3d, depthwise conv, fused GELU/residual, LayerNorm, softmax) against f32 central differences
//! for a few random parameter entries and input entries of the AEKL encoder/decoder, the semantic encoder
//! (ConvNeXt backbone + attention pooling) and the ShiftUNet's eps and shift outputs.
//!
//! Nothing here needs outside data or tools.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

use ldae::model::autoencoder::AutoencoderKl;
use ldae::model::config::{ModelConfig, PerLevel, VaeArgs};
use ldae::model::ops::grad_checks::{fd_check_vars, FdReport, VarProbe};
use ldae::model::semantic::SemanticEncoder;
use ldae::model::unet::ShiftUnet;

/// f32 central-difference step, per network: small enough for the truncation error, large enough for f32
/// rounding (measured: the ShiftUNet's shift head needs 3e-2, the ConvNeXt's GELUs want 1e-2).
/// `LDAE_FD_STEP` overrides it to explore.
fn step(default: f64) -> f64 {
    std::env::var("LDAE_FD_STEP").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn uniform(shape: &[usize], lo: f32, hi: f32, r: &mut rand::rngs::StdRng) -> Result<Tensor> {
    let v: Vec<f32> = (0..shape.iter().product()).map(|_| r.random_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Give every var of `vm` random values of a trained-like scale: matrices/kernels ±1/√fan_in, 1-D `weight`s
/// (norm scales) near 1, other 1-D tensors (biases) and layer scales ±0.2.
fn randomise(vm: &VarMap, seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let data = vm.data().lock().map_err(|_| candle_core::Error::Msg("var map lock".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let t = if name.ends_with("layer_scale") || (dims.len() == 1 && !name.ends_with("weight")) {
            uniform(&dims, -0.2, 0.2, &mut r)?
        } else if dims.len() == 1 {
            uniform(&dims, 0.8, 1.2, &mut r)?
        } else {
            let fan_in = (dims.iter().product::<usize>() / dims[0]).max(1) as f32;
            let a = 1.0 / fan_in.sqrt();
            uniform(&dims, -a, a, &mut r)?
        };
        var.set(&t)?;
    }
    Ok(())
}

/// The network's parameters in name order, without `skip`ped buffers.
fn params(vm: &VarMap, skip: &[&str]) -> Vec<(String, Var)> {
    let data = vm.data().lock().expect("var map lock");
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| !skip.iter().any(|s| k.ends_with(s)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `count` random (var, entry) probes over `vars`, spread over distinct vars where possible.
fn probes(vars: &[Var], count: usize, seed: u64) -> Vec<VarProbe> {
    let mut r = rng(seed);
    let mut order: Vec<usize> = (0..vars.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, r.random_range(0..=i));
    }
    order
        .iter()
        .cycle()
        .take(count)
        .map(|&v| VarProbe { var: v, index: r.random_range(0..vars[v].elem_count()) })
        .collect()
}

fn report(what: &str, names: &[String], rep: &FdReport, tol: f64) {
    let worst = rep.worst_against(tol).expect("probes");
    eprintln!(
        "{what}: {} probes, worst relative error {:.2e}, worst entry {} #{}: analytic {:.6e}, numeric {:.6e}, \
         rounding bound {:.2e}, {:.2} of the tolerance",
        rep.entries.len(),
        rep.worst_rel(),
        names[worst.input],
        worst.index,
        worst.analytic,
        worst.numeric,
        worst.noise,
        worst.excess(tol)
    );
    assert!(worst.excess(tol) < 1.0, "{what}: an entry is past the tolerance {tol} and the rounding bound: {worst:?}");
}

fn tiny_vae() -> VaeArgs {
    VaeArgs {
        spatial_dims: 3,
        in_channels: 1,
        out_channels: 1,
        num_channels: vec![4, 8],
        latent_channels: 2,
        num_res_blocks: PerLevel::One(1),
        norm_num_groups: 2,
        attention_levels: vec![false, false],
        with_encoder_nonlocal_attn: false,
        with_decoder_nonlocal_attn: false,
        norm_eps: 1e-6,
    }
}

#[test]
fn autoencoder_encode_and_decode_gradients() {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let aekl = AutoencoderKl::new(VarBuilder::from_varmap(&vm, DType::F32, &dev), &tiny_vae()).expect("aekl");
    randomise(&vm, 1).expect("weights");
    let (mut names, mut vars): (Vec<String>, Vec<Var>) = params(&vm, &[]).into_iter().unzip();
    let x = Var::from_tensor(&uniform(&[1, 1, 7, 8, 6], -1.0, 1.0, &mut rng(2)).expect("x")).expect("x var");
    let z = Var::from_tensor(&uniform(&[1, 2, 4, 4, 3], -1.0, 1.0, &mut rng(3)).expect("z")).expect("z var");
    let mut p = probes(&vars, 10, 4);
    names.extend(["input".to_string(), "latent".to_string()]);
    vars.extend([x.clone(), z.clone()]);
    p.extend((0..3).map(|i| VarProbe { var: vars.len() - 2, index: i * 97 % x.elem_count() }));
    p.extend((0..3).map(|i| VarProbe { var: vars.len() - 1, index: i * 13 % z.elem_count() }));
    // The loss reaches encoder (mu and log-variance) and decoder parameters in one output.
    let f = || -> Result<Tensor> {
        let post = aekl.encode(x.as_tensor())?;
        let enc = Tensor::cat(&[post.mu.flatten_all()?, post.logvar.flatten_all()?], 0)?;
        Tensor::cat(&[enc, aekl.decode(z.as_tensor())?.flatten_all()?], 0)
    };
    let rep = fd_check_vars(&vars, &p, f, step(1e-2), 5).expect("fd");
    report("AEKL encode+decode", &names, &rep, 5e-3);
}

fn tiny_config() -> ModelConfig {
    let mut cfg = ModelConfig::paper();
    cfg.enc_args.backbone_args.convnext_block_setting = Some(vec![(4, Some(8), 1), (8, None, 1)]);
    cfg.enc_args.emb_chans = 8;
    cfg.enc_args.seq_len = 6;
    cfg.enc_args.num_heads = 2;
    cfg.unet_args.input_channel = 2;
    cfg.unet_args.base_channel = 32;
    cfg.unet_args.channel_multiplier = vec![1, 1];
    cfg.unet_args.num_residual_blocks_of_a_block = 1;
    cfg.unet_args.attention_resolutions = vec![2];
    cfg.unet_args.latent_dim = Some(8);
    cfg
}

#[test]
fn semantic_encoder_gradients() {
    let dev = Device::Cpu;
    let cfg = tiny_config();
    let vm = VarMap::new();
    let enc = SemanticEncoder::new(VarBuilder::from_varmap(&vm, DType::F32, &dev), &cfg).expect("encoder");
    randomise(&vm, 11).expect("weights");
    // positional_encoding.pe is a buffer the checkpoint stores, not a parameter.
    let all = params(&vm, &[]);
    let (mut names, mut vars): (Vec<String>, Vec<Var>) = params(&vm, &["positional_encoding.pe"]).into_iter().unzip();
    assert_eq!(all.len(), vars.len() + 1, "the pe buffer is one var");
    // 5 slices of 9×11 (H/W not multiples of the stem's 4 or the downsample's 2: the tails are cropped).
    let x = Var::from_tensor(&uniform(&[1, 1, 5, 9, 11], -1.0, 1.0, &mut rng(12)).expect("x")).expect("x var");
    let mut p = probes(&vars, 14, 13);
    names.push("input".into());
    vars.push(x.clone());
    p.extend((0..3).map(|i| VarProbe { var: vars.len() - 1, index: i * 151 % x.elem_count() }));
    let f = || enc.forward(x.as_tensor());
    let rep = fd_check_vars(&vars, &p, f, step(1e-2), 14).expect("fd");
    report("semantic encoder", &names, &rep, 3e-2);
}

#[test]
fn shift_unet_eps_and_shift_gradients() {
    let dev = Device::Cpu;
    let cfg = tiny_config();
    let vm = VarMap::new();
    let unet =
        ShiftUnet::new(VarBuilder::from_varmap(&vm, DType::F32, &dev), &cfg.unet_args, cfg.latent_dim()).expect("unet");
    randomise(&vm, 21).expect("weights");
    let (mut names, mut vars): (Vec<String>, Vec<Var>) = params(&vm, &[]).into_iter().unzip();
    let z = Var::from_tensor(&uniform(&[1, 2, 3, 4, 4], -1.0, 1.0, &mut rng(22)).expect("z")).expect("z var");
    let y = Var::from_tensor(&uniform(&[1, 8], -1.0, 1.0, &mut rng(23)).expect("y")).expect("y var");
    let mut p = probes(&vars, 14, 24);
    names.extend(["z_t".to_string(), "y_sem".to_string()]);
    vars.extend([z.clone(), y.clone()]);
    p.extend((0..3).map(|i| VarProbe { var: vars.len() - 2, index: i * 29 % z.elem_count() }));
    p.extend((0..2).map(|i| VarProbe { var: vars.len() - 1, index: i * 5 }));
    for (what, pick) in [("ShiftUNet eps", 0usize), ("ShiftUNet shift", 1)] {
        let f = || -> Result<Tensor> {
            let (eps, shift) = unet.forward(z.as_tensor(), &[417.0], y.as_tensor())?;
            Ok(if pick == 0 { eps } else { shift })
        };
        let rep = fd_check_vars(&vars, &p, f, step(3e-2), 25).expect("fd");
        report(what, &names, &rep, 3e-2);
    }
}
