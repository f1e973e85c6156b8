//! `ldae register|preprocess|unwarp`: registration to the template, the model's input, and the way back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::config::{Config, PreprocessConfig};
use crate::limits::Limits;
use crate::model::config::ModelConfig;
use crate::nifti::{read_nifti, read_nifti_limited, write_nifti};
use crate::preprocess::pipeline::{preprocess_volume, unwarp as unwarp_volume};
use crate::preprocess::register::{register_affine, RegisterOptions};
use crate::preprocess::resample::{resample, Grid, Interp};
use crate::preprocess::template::Template;
use crate::preprocess::transform::Transform;

/// `ldae register`: rigid + affine registration of a scan to the template.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The scan to register (NIfTI, native space, with or without skull).
    pub moving: PathBuf,
    /// Template T1 (default: `[preprocess] template` of the config).
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Brain mask on the template's grid (default: the config's when the template is the config's; none otherwise).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// The scan resampled onto the template grid (NIfTI); with `--deformable`, a folder for every output.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Where to write the template → native transform: ITK/ANTs text for `.txt`/`.tfm`, ldae JSON otherwise
    /// (required without `--deformable`).
    #[arg(long)]
    pub transform: Option<PathBuf>,
    /// After the affine, register deformably (SyN-style, local CC); `-o` is then a folder that receives
    /// `registered.nii.gz`, `transform.json` (ldae's record), `affine.txt`, `warp.nii.gz` and
    /// `inverse_warp.nii.gz` (ITK/ANTs files: `antsApplyTransforms -t warp.nii.gz -t affine.txt`).
    #[arg(long)]
    pub deformable: bool,
}

/// `ldae preprocess`: register, mask and build the model input.
#[derive(Debug, clap::Args)]
pub struct PreprocessArgs {
    /// The scan (NIfTI, native space).
    pub input: PathBuf,
    /// Model directory whose `config.json` gives the input spacing and shape (`data.pixdim`, `data.resize_to`).
    #[arg(long)]
    pub model: PathBuf,
    /// The model input (NIfTI, values in [0, 1]).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the template → native transform here (ITK text for `.txt`, JSON otherwise).
    #[arg(long)]
    pub transform: Option<PathBuf>,
    /// Also write the template brain mask mapped onto the native grid here.
    #[arg(long)]
    pub native_mask: Option<PathBuf>,
}

/// `ldae unwarp`: a template-space volume back onto a native grid.
#[derive(Debug, clap::Args)]
pub struct UnwarpArgs {
    /// The template-space volume (NIfTI).
    pub input: PathBuf,
    /// The template → native transform written by `register`/`preprocess` (ITK text or JSON).
    #[arg(long)]
    pub transform: PathBuf,
    /// A volume on the native grid to resample onto (its grid is used, not its values).
    #[arg(long)]
    pub reference: PathBuf,
    /// Output NIfTI on the reference grid.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// The `[preprocess]` and `[limits]` sections: from the config file, or the defaults when the default file is
/// absent.
fn preprocess_config(config: &Path) -> anyhow::Result<(PreprocessConfig, Limits)> {
    if !config.exists() && config == Path::new("config/ldae.toml") {
        tracing::debug!("no configuration found: using the default [preprocess] settings");
        let d = Config::defaults_here();
        return Ok((d.preprocess, d.limits));
    }
    let c = Config::load(config)?;
    Ok((c.preprocess, c.limits))
}

fn load_template(t1: &Path, mask: &Path) -> anyhow::Result<Template> {
    Template::load(t1, mask).with_context(|| "loading the template (see [preprocess] template in the config)")
}

pub fn register(a: RegisterArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let (cfg, limits) = preprocess_config(config)?;
    let moving = read_nifti_limited(&a.moving, &limits)?;
    let (fixed, mask) = match (&a.template, &a.mask) {
        (None, m) => {
            let t = load_template(&cfg.template, m.as_deref().unwrap_or(&cfg.template_mask))?;
            (t.t1, Some(t.mask))
        }
        (Some(t1), Some(m)) => {
            let t = load_template(t1, m)?;
            (t.t1, Some(t.mask))
        }
        (Some(t1), None) => (read_nifti_limited(t1, &limits)?, None),
    };
    let spacing = fixed.spacing().iter().cloned().fold(f64::INFINITY, f64::min);
    let opts = RegisterOptions::from_config(&cfg, spacing);
    let start = Instant::now();
    let reg = register_affine(&moving, &fixed, mask.as_ref(), &opts)
        .with_context(|| format!("registering {}", a.moving.display()))?;
    if a.deformable {
        return super::transforms::register_deformable(&a, &moving, &fixed, &reg, &cfg.syn, &limits, start);
    }
    let Some(transform) = &a.transform else {
        anyhow::bail!("--transform is required without --deformable");
    };
    let out = resample(&moving, &Grid::of(&fixed), &reg.transform.matrix, Interp::Linear, 0.0)
        .context("resampling onto the template grid")?;
    write_nifti(&a.output, &out)?;
    reg.transform.write(transform)?;
    eprintln!(
        "registered {} in {:.1} s (mutual information {:.3}); wrote {} and {}",
        a.moving.display(),
        start.elapsed().as_secs_f64(),
        reg.mi,
        a.output.display(),
        transform.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn preprocess(a: PreprocessArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let (cfg, limits) = preprocess_config(config)?;
    let model_json = a.model.join("config.json");
    let model = ModelConfig::load(&model_json)?;
    let template = load_template(&cfg.template, &cfg.template_mask)?;
    let native = read_nifti_limited(&a.input, &limits)?;
    let start = Instant::now();
    let p = preprocess_volume(&native, &template, &model, &cfg)
        .with_context(|| format!("preprocessing {}", a.input.display()))?;
    write_nifti(&a.output, &p.model_input)?;
    if let Some(t) = &a.transform {
        p.transform.write(t)?;
    }
    if let Some(m) = &a.native_mask {
        write_nifti(m, &p.native_mask)?;
    }
    eprintln!(
        "preprocessed {} in {:.1} s: model input {:?} at {} mm → {}",
        a.input.display(),
        start.elapsed().as_secs_f64(),
        p.model_input.shape(),
        model.data.pixdim,
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn unwarp(a: UnwarpArgs) -> anyhow::Result<ExitCode> {
    let vol = read_nifti(&a.input)?;
    let t = Transform::read(&a.transform)?;
    let reference = read_nifti(&a.reference)?;
    let out = unwarp_volume(&vol, &Grid::of(&reference), &t)?;
    write_nifti(&a.output, &out)?;
    eprintln!("wrote {} on the grid of {}", a.output.display(), a.reference.display());
    Ok(ExitCode::SUCCESS)
}
