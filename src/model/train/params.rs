//! Trainable parameters: a `VarMap` per weights file, keyed by the published checkpoint names, so a network
//! built over it reads its tensors from the Vars (gradients land on them) and saving writes the published layout.
//!
//! Fresh initialisation follows torch's defaults where they matter: Linear/Conv weights uniform in
//! ±1/sqrt(fan_in), biases 0 (torch draws them uniform too; zero is a documented simplification), norm weights 1,
//! ConvNeXt `layer_scale` 1e-6, `in_proj_weight` Xavier-uniform, the sinusoid `positional_encoding.pe`, and the
//! ShiftUNet's guided-diffusion `zero_module`s (every ResBlock's `out_layers.3`, every attention `proj_out`,
//! `out.2` and `shift_out.2`), so the shift starts at 0 as SPEC §1c says. The ConvNeXt is not ImageNet-initialised
//! (those weights cannot be had offline).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

use super::error::{Ctx, TrainError};
use crate::model::autoencoder::AutoencoderKl;
use crate::model::config::ModelConfig;
use crate::model::keyset::{expected_keys, WeightsFile, ENCODER_BACKBONE, ENCODER_BACKBONE_TWIN};
use crate::model::semantic::SemanticEncoder;
use crate::model::unet::ShiftUnet;

/// Keys of the ShiftUNet's shift branch (trained in stage repr, untouched in stage ddpm).
pub fn is_shift_key(k: &str) -> bool {
    k.starts_with("label_emb.")
        || k.starts_with("shift_middle_block.")
        || k.starts_with("shift_output_blocks.")
        || k.starts_with("shift_out.")
}

/// The semantic encoder's fixed buffer (not a parameter).
pub fn is_buffer_key(k: &str) -> bool {
    k == "positional_encoding.pe"
}

fn zero_init(file: WeightsFile, k: &str) -> bool {
    file == WeightsFile::Decoder
        && (k.ends_with("out_layers.3.weight")
            || k.ends_with("out_layers.3.bias")
            || k.ends_with("proj_out.weight")
            || k.ends_with("proj_out.bias")
            || k.starts_with("out.2.")
            || k.starts_with("shift_out.2."))
}

/// The interleaved sin/cos slice encoding of SPEC §3 step 3, `[1, S, E]`.
fn positional_encoding(s: usize, e: usize) -> Vec<f32> {
    let mut v = vec![0f32; s * e];
    for k in 0..s {
        for i in 0..e / 2 {
            let f = (-(2.0 * i as f32) * (10000f32).ln() / e as f32).exp();
            v[k * e + 2 * i] = (k as f32 * f).sin();
            v[k * e + 2 * i + 1] = (k as f32 * f).cos();
        }
    }
    v
}

fn init_values(file: WeightsFile, k: &str, shape: &[usize], rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if zero_init(file, k) || k.ends_with(".bias") || k.ends_with("in_proj_bias") {
        return vec![0.0; n];
    }
    if is_buffer_key(k) && shape.len() == 3 {
        return positional_encoding(shape[1], shape[2]);
    }
    if k.ends_with("layer_scale") {
        return vec![1e-6; n];
    }
    if shape.len() == 1 {
        // GroupNorm / LayerNorm weight.
        return vec![1.0; n];
    }
    let fan_in: usize = shape[1..].iter().product();
    let bound = if k.ends_with("in_proj_weight") {
        (6.0 / (shape[0] + shape[1]) as f64).sqrt()
    } else {
        1.0 / (fan_in.max(1) as f64).sqrt()
    } as f32;
    (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
}

/// A fresh VarMap for `file` of `cfg` (every key the network reads, the encoder's twin prefix left out), seeded.
pub fn init_varmap(cfg: &ModelConfig, file: WeightsFile, seed: u64, dev: &Device) -> Result<VarMap, TrainError> {
    let keys = expected_keys(cfg, file).map_err(|e| TrainError::Unsupported(e.to_string()))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (file as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().map_err(|_| TrainError::Unsupported("VarMap lock poisoned".into()))?;
        for (k, shape) in keys {
            if k.starts_with(ENCODER_BACKBONE_TWIN) {
                continue;
            }
            let v = init_values(file, &k, &shape, &mut rng);
            let t = Tensor::from_vec(v, shape.as_slice(), dev).ctx(&k)?;
            data.insert(k, Var::from_tensor(&t).ctx("init")?);
        }
    }
    Ok(vm)
}

/// A VarMap with every tensor of a weights file (`.safetensors` or `.pth`) as f32, the encoder's twin prefix
/// left out.
pub fn varmap_from_file(path: &Path, dev: &Device) -> Result<VarMap, TrainError> {
    let tensors = crate::model::weights::read_tensors(path)
        .map_err(|e| TrainError::File { path: path.into(), reason: e.to_string() })?;
    varmap_from_tensors(tensors, dev)
}

/// As [`varmap_from_file`] for a safetensors file (the name the parity tests use).
pub fn varmap_from_safetensors(path: &Path, dev: &Device) -> Result<VarMap, TrainError> {
    varmap_from_file(path, dev)
}

/// `file` of model directory `dir`, key-checked against `cfg`.
pub fn varmap_from_model_dir(
    dir: &Path,
    file: WeightsFile,
    cfg: &ModelConfig,
    dev: &Device,
) -> Result<VarMap, TrainError> {
    let (_, tensors) = crate::model::weights::load_checked(dir, file, cfg)
        .map_err(|e| TrainError::File { path: dir.into(), reason: e.to_string() })?;
    varmap_from_tensors(tensors, dev)
}

fn varmap_from_tensors(
    tensors: impl IntoIterator<Item = (String, Tensor)>,
    dev: &Device,
) -> Result<VarMap, TrainError> {
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().map_err(|_| TrainError::Unsupported("VarMap lock poisoned".into()))?;
        for (k, t) in tensors {
            if k.starts_with(ENCODER_BACKBONE_TWIN) {
                continue;
            }
            let t = t.to_dtype(DType::F32).and_then(|t| t.to_device(dev)).ctx(&k)?;
            data.insert(k, Var::from_tensor(&t).ctx("loading")?);
        }
    }
    Ok(vm)
}

/// A `VarBuilder` over `vm` in `dtype`: keys for which `frozen` holds are detached copies (no gradient is
/// tracked through them), the others are the Vars themselves (or, for another dtype, casts that track back).
pub fn var_builder(
    vm: &VarMap,
    frozen: &dyn Fn(&str) -> bool,
    dtype: DType,
    dev: &Device,
) -> Result<VarBuilder<'static>, TrainError> {
    let data = vm.data().lock().map_err(|_| TrainError::Unsupported("VarMap lock poisoned".into()))?;
    let mut map = HashMap::with_capacity(data.len());
    for (k, v) in data.iter() {
        let t = if frozen(k) || is_buffer_key(k) { v.as_tensor().detach() } else { v.as_tensor().clone() };
        let t = if t.dtype() == dtype { t } else { t.to_dtype(dtype).ctx(k)? };
        map.insert(k.clone(), t);
    }
    Ok(VarBuilder::from_tensors(map, dtype, dev))
}

/// The AutoencoderKL over `vm`, every tensor trainable.
pub fn build_aekl(vm: &VarMap, cfg: &ModelConfig, dev: &Device) -> Result<AutoencoderKl, TrainError> {
    AutoencoderKl::new(var_builder(vm, &|_| false, DType::F32, dev)?, &cfg.vae_args).ctx("building the AutoencoderKL")
}

/// The ShiftUNet over `vm`, every tensor trainable.
pub fn build_unet(vm: &VarMap, cfg: &ModelConfig, dev: &Device) -> Result<ShiftUnet, TrainError> {
    ShiftUnet::new(var_builder(vm, &|_| false, DType::F32, dev)?, &cfg.unet_args, cfg.latent_dim())
        .ctx("building the ShiftUNet")
}

/// The semantic encoder over `vm`, every parameter trainable (`positional_encoding.pe` is a fixed buffer).
pub fn build_encoder(vm: &VarMap, cfg: &ModelConfig, dev: &Device) -> Result<SemanticEncoder, TrainError> {
    SemanticEncoder::new(var_builder(vm, &|_| false, DType::F32, dev)?, cfg).ctx("building the semantic encoder")
}

/// The tensors of `vm` (CPU, f32) as `file` publishes them: the encoder's backbone also under its twin prefix.
pub fn published_tensors(vm: &VarMap, file: WeightsFile) -> Result<HashMap<String, Tensor>, TrainError> {
    let data = vm.data().lock().map_err(|_| TrainError::Unsupported("VarMap lock poisoned".into()))?;
    let mut out = HashMap::with_capacity(data.len() * 2);
    for (k, v) in data.iter() {
        let t = v.as_tensor().detach().to_device(&Device::Cpu).ctx(k)?;
        if file == WeightsFile::Encoder {
            if let Some(rest) = k.strip_prefix(ENCODER_BACKBONE) {
                out.insert(format!("{ENCODER_BACKBONE_TWIN}{rest}"), t.clone());
            }
        }
        out.insert(k.clone(), t);
    }
    Ok(out)
}

/// Write `vm` as `file`'s safetensors at `path` (atomically: a temporary name, then a rename).
pub fn save_published(vm: &VarMap, file: WeightsFile, path: &Path) -> Result<(), TrainError> {
    save_tensors(&published_tensors(vm, file)?, path)
}

/// Write tensors as safetensors at `path` atomically.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), TrainError> {
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(tensors, &tmp)
        .map_err(|e| TrainError::File { path: tmp.clone(), reason: format!("writing: {e}") })?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::File { path: path.into(), reason: format!("renaming: {e}") })
}

/// `(name, Var)` pairs of `vm`, sorted by name (a fixed order for the optimiser and checkpoints).
pub fn sorted_vars(vm: &VarMap) -> Result<Vec<(String, Var)>, TrainError> {
    let data = vm.data().lock().map_err(|_| TrainError::Unsupported("VarMap lock poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_parameters_have_the_published_keys_and_run() {
        let cfg = crate::model::weights::model_config(Path::new("weights/demo")).unwrap();
        let dev = Device::Cpu;
        for file in WeightsFile::ALL {
            let vm = init_varmap(&cfg, file, 1, &dev).unwrap();
            let published = published_tensors(&vm, file).unwrap();
            let want = expected_keys(&cfg, file).unwrap();
            let mut got: Vec<&String> = published.keys().collect();
            got.sort();
            assert_eq!(got, want.keys().collect::<Vec<_>>(), "{file:?}");
        }
        let vm = init_varmap(&cfg, WeightsFile::Decoder, 1, &dev).unwrap();
        let unet = build_unet(&vm, &cfg, &dev).unwrap();
        let z = Tensor::ones((1, 3, 6, 8, 6), DType::F32, &dev).unwrap();
        let y = Tensor::ones((1, cfg.latent_dim()), DType::F32, &dev).unwrap();
        let (eps, g) = unet.forward(&z, &[10.0], &y).unwrap();
        // zero_module on out.2 / shift_out.2: both outputs start at exactly 0.
        assert_eq!(eps.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        // Same seed, same values; another seed, other values.
        let a = init_varmap(&cfg, WeightsFile::Autoencoder, 7, &dev).unwrap();
        let b = init_varmap(&cfg, WeightsFile::Autoencoder, 7, &dev).unwrap();
        let c = init_varmap(&cfg, WeightsFile::Autoencoder, 8, &dev).unwrap();
        let key = "encoder.blocks.0.conv.weight";
        let val =
            |m: &VarMap| m.data().lock().unwrap()[key].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(val(&a), val(&b));
        assert_ne!(val(&a), val(&c));
    }
}
