//! `ldae register --deformable` (the folder of ITK/ANTs transform files and ldae's record) and
//! `ldae apply-transform` (resampling any image through a chain of transforms, forward or inverse).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use super::preprocess::RegisterArgs;
use crate::config::Config;
use crate::limits::Limits;
use crate::nifti::{read_nifti_limited, write_nifti};
use crate::preprocess::deformable::chain::write_chain_folder;
use crate::preprocess::deformable::{register_syn, Chain, Step, SynOptions};
use crate::preprocess::register::Registration;
use crate::preprocess::resample::{Grid, Interp};
use crate::volume::Volume;

/// How `apply-transform` interpolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InterpArg {
    /// Trilinear (images).
    Linear,
    /// Nearest neighbour (label maps and masks).
    Nearest,
}

/// `ldae apply-transform`: resample an image through transforms.
#[derive(Debug, clap::Args)]
pub struct ApplyTransformArgs {
    /// The image to resample (NIfTI).
    pub input: PathBuf,
    /// Transforms in ANTs' order (a reference point goes through the first, then the next, … to the input's
    /// space): ITK text affines (`.txt`), ldae JSON affines or chain records (`transform.json`), displacement
    /// fields (`.nii.gz`).
    #[arg(long = "transform", short = 't', required = true, num_args = 1..)]
    pub transforms: Vec<PathBuf>,
    /// The grid to resample onto (its values are not used).
    #[arg(long)]
    pub reference: PathBuf,
    /// Interpolation.
    #[arg(long, value_enum, default_value = "linear")]
    pub interp: InterpArg,
    /// Apply the inverse of the chain (order reversed, each step inverted; a chain record's stored inverse).
    #[arg(long)]
    pub inverse: bool,
    /// Output NIfTI on the reference grid.
    #[arg(short, long)]
    pub output: PathBuf,
}

fn limits_of(config: &Path) -> anyhow::Result<Limits> {
    if !config.exists() && config == Path::new("config/ldae.toml") {
        return Ok(Limits::default());
    }
    Ok(Config::load(config)?.limits)
}

pub fn apply_transform(a: ApplyTransformArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let limits = limits_of(config)?;
    let input = read_nifti_limited(&a.input, &limits)?;
    let reference = read_nifti_limited(&a.reference, &limits)?;
    let mut chain = Chain::default();
    // A chain record expands to its own list; the order of several files is reversed for the inverse.
    let mut parts = Vec::with_capacity(a.transforms.len());
    for t in &a.transforms {
        parts.push(Chain::read(t, a.inverse, &limits).with_context(|| format!("reading {}", t.display()))?);
    }
    if a.inverse {
        parts.reverse();
    }
    for p in parts {
        chain.steps.extend(p.steps);
    }
    let interp = match a.interp {
        InterpArg::Linear => Interp::Linear,
        InterpArg::Nearest => Interp::Nearest,
    };
    let out = chain.resample(&input, &Grid::of(&reference), interp, 0.0)?;
    write_nifti(&a.output, &out)?;
    eprintln!(
        "resampled {} through {} transform(s) onto the grid of {} → {}",
        a.input.display(),
        chain.steps.len(),
        a.reference.display(),
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The deformable stage of `ldae register --deformable` (`[preprocess.syn]` settings) and its folder of outputs.
pub fn register_deformable(
    a: &RegisterArgs,
    moving: &Volume,
    fixed: &Volume,
    reg: &Registration,
    syn_opts: &SynOptions,
    limits: &Limits,
    start: Instant,
) -> anyhow::Result<ExitCode> {
    let dir = &a.output;
    let affine_s = start.elapsed().as_secs_f64();
    let syn = register_syn(fixed, moving, &reg.transform.matrix, syn_opts, limits)
        .with_context(|| format!("deformable registration of {}", a.moving.display()))?;
    write_chain_folder(dir, &reg.transform, &syn.forward, &syn.inverse)
        .with_context(|| format!("writing the transforms to {}", dir.display()))?;
    let chain = Chain { steps: vec![Step::Field(Box::new(syn.forward)), Step::Affine(reg.transform.matrix)] };
    let out = chain.resample(moving, &Grid::of(fixed), Interp::Linear, 0.0)?;
    write_nifti(&dir.join("registered.nii.gz"), &out)?;
    eprintln!(
        "registered {} in {:.1} s (affine {:.1} s, mutual information {:.3}; deformable local CC {:.3}, \
         iterations {:?}); wrote {}",
        a.moving.display(),
        start.elapsed().as_secs_f64(),
        affine_s,
        reg.mi,
        syn.cc,
        syn.iterations,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
