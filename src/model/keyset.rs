//! The key set a network asks for: a `VarBuilder` backend that records every (name, shape) requested and hands
//! back a zero-stride broadcast of one zero (no allocation), so building a network at the paper size lists its
//! checkpoint keys without the 3.7 GB files.
//!
//! [`expected_keys`] builds the network a weights file belongs to and returns the names and shapes the file
//! must hold, including the encoder's duplicate `slice_distributed.module.*` backbone copy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::model::autoencoder::AutoencoderKl;
use crate::model::config::ModelConfig;
use crate::model::semantic::SemanticEncoder;
use crate::model::unet::ShiftUnet;

/// Names and shapes, sorted by name.
pub type KeySet = BTreeMap<String, Vec<usize>>;

/// Which of a model directory's three weights files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightsFile {
    /// `autoencoderkl.*` — the AutoencoderKL.
    Autoencoder,
    /// `encoder.*` — the semantic encoder.
    Encoder,
    /// `decoder.*` — the ShiftUNet.
    Decoder,
}

impl WeightsFile {
    /// All three, in a fixed order.
    pub const ALL: [WeightsFile; 3] = [WeightsFile::Autoencoder, WeightsFile::Encoder, WeightsFile::Decoder];

    /// File stem in a model directory (`.pth` or `.safetensors` follows).
    pub fn stem(self) -> &'static str {
        match self {
            WeightsFile::Autoencoder => "autoencoderkl",
            WeightsFile::Encoder => "encoder",
            WeightsFile::Decoder => "decoder",
        }
    }
}

/// Prefix the semantic encoder's backbone is loaded from, and the duplicate registration of the same module.
pub const ENCODER_BACKBONE: &str = "backbone.backbone.";
pub const ENCODER_BACKBONE_TWIN: &str = "slice_distributed.module.backbone.";

/// Records requests; answers with broadcast zeros.
#[derive(Clone, Default)]
pub struct KeyRecorder {
    seen: Arc<Mutex<KeySet>>,
}

impl KeyRecorder {
    /// A `VarBuilder` over this recorder (f32, CPU).
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, Device::Cpu)
    }

    /// Everything requested so far.
    pub fn keys(&self) -> KeySet {
        self.seen.lock().map(|m| m.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl SimpleBackend for KeyRecorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prev) = m.get(name) {
            if prev.as_slice() != s.dims() {
                candle_core::bail!("{name} requested as {prev:?} and as {:?}", s.dims());
            }
        }
        m.insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: the key recorder needs a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// Why an expected key set could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("building the {file:?} network: {source}")]
    Build { file: WeightsFile, source: candle_core::Error },
}

/// The keys and shapes a `file` of a model with configuration `cfg` must contain.
pub fn expected_keys(cfg: &ModelConfig, file: WeightsFile) -> Result<KeySet, KeySetError> {
    let rec = KeyRecorder::default();
    let vb = rec.var_builder();
    let built = match file {
        WeightsFile::Encoder => SemanticEncoder::new(vb, cfg).map(drop),
        WeightsFile::Autoencoder => AutoencoderKl::new(vb, &cfg.vae_args).map(drop),
        WeightsFile::Decoder => ShiftUnet::new(vb, &cfg.unet_args, cfg.latent_dim()).map(drop),
    };
    built.map_err(|source| KeySetError::Build { file, source })?;
    let mut keys = rec.keys();
    if file == WeightsFile::Encoder {
        let twins: Vec<(String, Vec<usize>)> = keys
            .iter()
            .filter_map(|(k, s)| {
                k.strip_prefix(ENCODER_BACKBONE).map(|rest| (format!("{ENCODER_BACKBONE_TWIN}{rest}"), s.clone()))
            })
            .collect();
        keys.extend(twins);
    }
    Ok(keys)
}
