//! `ldae encode|decode|interpolate|manipulate`: the LDAE model on NIfTI inputs already in model-input space
//! (`ldae preprocess` makes them). Codes are safetensors files (see `model::codes`); outputs are float32 NIfTI.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};

use crate::model::codes::{load_codes, load_tensors, save_codes};
use crate::model::ldae::{Codes, Ldae};
use crate::model::tensor_volume::tensor_volume;
use crate::nifti::{read_nifti, write_nifti};
use crate::volume::Affine;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

/// Precision of the ShiftUNet (f16/bf16 need CUDA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

/// Options every model command shares.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Model directory (config.json + autoencoderkl/encoder/decoder as .safetensors or .pth).
    #[arg(long)]
    pub model: PathBuf,
    /// DDIM steps for inversion and sampling (the paper uses 100).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
}

#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Model-input NIfTI (shape = the model's input shape).
    pub input: PathBuf,
    /// Output codes (.safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Codes written by `ldae encode`.
    pub input: PathBuf,
    /// Output NIfTI.
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// First scan: model-input NIfTI or codes (.safetensors).
    pub a: PathBuf,
    /// Second scan: model-input NIfTI or codes (.safetensors).
    pub b: PathBuf,
    /// 0 = A, 1 = B.
    #[arg(long)]
    pub alpha: f32,
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ManipulateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Model-input NIfTI or codes (.safetensors).
    pub input: PathBuf,
    /// safetensors with `direction` (or `weight`, a linear probe's [1,E] row) and the y_sem statistics `mean`
    /// and `std` (or `semantic_mean`, `semantic_std`), [E] each.
    #[arg(long)]
    pub direction: PathBuf,
    /// Step along the direction in normalised units (its sign picks the way).
    #[arg(long, allow_hyphen_values = true)]
    pub scale: f32,
    #[arg(short, long)]
    pub output: PathBuf,
}

pub(crate) fn load_model(run: &RunArgs) -> anyhow::Result<Ldae> {
    let device = match run.device {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda => {
            Device::new_cuda(0).context("--device cuda (this binary needs the `cuda` feature and a GPU)")?
        }
    };
    let dtype = match run.dtype {
        DtypeArg::F32 => DType::F32,
        DtypeArg::F16 => DType::F16,
        DtypeArg::Bf16 => DType::BF16,
    };
    if run.steps == 0 {
        bail!("--steps must be at least 1");
    }
    Ldae::load(&run.model, &device, dtype).with_context(|| format!("loading model {}", run.model.display()))
}

/// A progress bar on a terminal, nothing otherwise.
pub(crate) struct Bar(Option<Mutex<indicatif::ProgressBar>>);

impl Bar {
    pub(crate) fn new() -> Self {
        if std::io::stderr().is_terminal() {
            let pb = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {elapsed}") {
                pb.set_style(style);
            }
            Bar(Some(Mutex::new(pb)))
        } else {
            Bar(None)
        }
    }

    pub(crate) fn update(&self, stage: &str, done: usize, total: usize) {
        if let Some(pb) = &self.0 {
            let pb = pb.lock().unwrap_or_else(|p| p.into_inner());
            pb.set_message(stage.to_string());
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(pb) = &self.0 {
            pb.lock().unwrap_or_else(|p| p.into_inner()).finish_and_clear();
        }
    }
}

fn write_volume(path: &Path, t: &Tensor, affine: &Affine) -> anyhow::Result<()> {
    write_nifti(path, &tensor_volume(t, affine)?).with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn is_codes(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Codes and the grid they belong to, from a NIfTI (encoded now) or a code file.
fn codes_of(model: &Ldae, path: &Path, steps: usize, bar: &Bar) -> anyhow::Result<(Codes, Affine)> {
    if is_codes(path) {
        let f = load_codes(path)?;
        if let Some(s) = f.steps.filter(|&s| s != steps) {
            tracing::warn!("{}: codes were inverted with {s} DDIM steps, decoding with {steps}", path.display());
        }
        Ok((f.codes, f.affine.unwrap_or_else(|| default_affine(model))))
    } else {
        let v = read_nifti(path).with_context(|| format!("reading {}", path.display()))?;
        let codes = model
            .encode_volume(&v, steps, &|s, d, t| bar.update(s, d, t))
            .with_context(|| format!("encoding {}", path.display()))?;
        Ok((codes, v.affine))
    }
}

fn default_affine(model: &Ldae) -> Affine {
    let p = model.config().data.pixdim;
    Affine::from_spacing_origin([p; 3], [0.0; 3])
}

pub fn encode(a: EncodeArgs) -> anyhow::Result<ExitCode> {
    if is_codes(&a.input) {
        bail!("{}: encode takes a NIfTI volume", a.input.display());
    }
    let model = load_model(&a.run)?;
    let bar = Bar::new();
    let (codes, affine) = codes_of(&model, &a.input, a.run.steps, &bar)?;
    drop(bar);
    save_codes(&a.output, &codes, &affine, a.run.steps)?;
    Ok(ExitCode::SUCCESS)
}

pub fn decode(a: DecodeArgs) -> anyhow::Result<ExitCode> {
    let f = load_codes(&a.input)?;
    let model = load_model(&a.run)?;
    let bar = Bar::new();
    let v = model
        .decode(&f.codes.y_sem, &f.codes.x_t, a.run.steps, &|s, d, t| bar.update(s, d, t))
        .with_context(|| format!("decoding {}", a.input.display()))?;
    drop(bar);
    write_volume(&a.output, &v, &f.affine.unwrap_or_else(|| default_affine(&model)))?;
    Ok(ExitCode::SUCCESS)
}

pub fn interpolate(a: InterpolateArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&a.alpha) {
        bail!("--alpha {} must be between 0 and 1", a.alpha);
    }
    let model = load_model(&a.run)?;
    let bar = Bar::new();
    let (ca, affine) = codes_of(&model, &a.a, a.run.steps, &bar)?;
    let (cb, _) = codes_of(&model, &a.b, a.run.steps, &bar)?;
    let v = model
        .interpolate((&ca.y_sem, &ca.x_t), (&cb.y_sem, &cb.x_t), a.alpha, a.run.steps, &|s, d, t| bar.update(s, d, t))
        .context("interpolating")?;
    drop(bar);
    write_volume(&a.output, &v, &affine)?;
    Ok(ExitCode::SUCCESS)
}

pub fn manipulate(a: ManipulateArgs) -> anyhow::Result<ExitCode> {
    let dir = load_tensors(&a.direction)?;
    let pick = |names: &[&str]| -> anyhow::Result<Tensor> {
        names
            .iter()
            .find_map(|n| dir.get(*n).cloned())
            .with_context(|| format!("{}: no tensor named {}", a.direction.display(), names.join(" or ")))
    };
    let (d, mean, std) =
        (pick(&["direction", "weight"])?, pick(&["mean", "semantic_mean"])?, pick(&["std", "semantic_std"])?);
    let sv = std.flatten_all()?.to_vec1::<f32>()?;
    if sv.iter().any(|v| !v.is_finite() || *v == 0.0) {
        bail!("{}: std must be finite and non-zero", a.direction.display());
    }
    let model = load_model(&a.run)?;
    let bar = Bar::new();
    let (c, affine) = codes_of(&model, &a.input, a.run.steps, &bar)?;
    let v = model
        .manipulate(&c.y_sem, &c.x_t, &mean, &std, &d, a.scale, a.run.steps, &|s, dd, t| bar.update(s, dd, t))
        .context("manipulating")?;
    drop(bar);
    write_volume(&a.output, &v, &affine)?;
    Ok(ExitCode::SUCCESS)
}
