//! `ldae train aekl|ddpm|repr`: train the three LDAE stages (SPEC §1) on model inputs from a folder or the store.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::model::train::config::TrainConfig;
use crate::model::train::data::{load_model_inputs, nifti_files};
use crate::model::train::runner::{train, RunOptions};
use crate::model::train::Stage;

/// Which stage to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StageArg {
    /// (a) the AutoencoderKL: sampled latent, L1 + 1e-7·KL.
    Aekl,
    /// (b) latent DDPM pre-training of the plain UNet (epsilon path), with EMA. Needs --init (the AEKL).
    Ddpm,
    /// (c) representation learning: semantic encoder + shift branch on the frozen epsilon UNet, EMA of both.
    /// Needs --init (the AEKL and the stage-ddpm UNet).
    Repr,
}

impl From<StageArg> for Stage {
    fn from(s: StageArg) -> Stage {
        match s {
            StageArg::Aekl => Stage::Aekl,
            StageArg::Ddpm => Stage::Ddpm,
            StageArg::Repr => Stage::Repr,
        }
    }
}

/// Train one stage of LDAE.
///
/// The three stages run in order, each starting from the previous one's output directory:
///
///   ldae train aekl --config config/train-aekl.toml --data INPUTS -o m1
///   ldae train ddpm --config config/train-ddpm.toml --data INPUTS --init m1 -o m2
///   ldae train repr --config config/train-repr.toml --data INPUTS --init m2 -o m3
///
/// `--config` here is the training configuration (stage, network sizes, steps, Adam, EMA, validation; see
/// config/train-*.toml). Every output directory is a complete model directory (config.json + autoencoderkl,
/// encoder, decoder safetensors, the trained networks as their EMA copies) that `ldae weights check` and every
/// model command accept, plus `checkpoint/` (for --resume) and `train-log.jsonl` (one JSON object per step,
/// validation and checkpoint).
///
/// Data: model-input NIfTIs, as `ldae preprocess` writes them (shape = the model's input, values in [0, 1]);
/// with --preprocess, volumes of another shape go through the daemon's preprocessing first (registration to the
/// template of --ldae-config). --from-store takes the registered model inputs the daemon's store holds.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TrainArgs {
    #[arg(value_enum)]
    pub stage: StageArg,
    /// Folder of model-input NIfTIs (.nii / .nii.gz).
    #[arg(long, required_unless_present = "from_store", conflicts_with = "from_store")]
    pub data: Option<PathBuf>,
    /// Train on the registered model inputs of the daemon's store (the store of --ldae-config).
    #[arg(long)]
    pub from_store: bool,
    /// The daemon configuration (store location, [preprocess]) for --from-store and --preprocess.
    /// Default: config/ldae.toml.
    #[arg(long)]
    pub ldae_config: Option<PathBuf>,
    /// Run the daemon's preprocessing on volumes that are not model inputs yet.
    #[arg(long)]
    pub preprocess: bool,
    /// Model directory to start from (required for ddpm and repr; for aekl: fine-tune it).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Output model directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Continue from OUTPUT/checkpoint (optimiser state, step count, EMA) up to run.steps.
    #[arg(long)]
    pub resume: bool,
    /// Override run.steps (total optimiser steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Print the summary as JSON on stdout; no progress bar.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: TrainArgs, train_config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(cpath) = train_config else {
        bail!("ldae train needs --config TRAIN.toml (a training configuration, e.g. config/train-aekl.toml)");
    };
    let mut cfg = TrainConfig::load(cpath)?;
    let stage = Stage::from(a.stage);
    if cfg.stage != stage {
        bail!("{}: stage = \"{}\", but the command trains {stage}", cpath.display(), cfg.stage);
    }
    if let Some(s) = a.steps {
        if s == 0 {
            bail!("--steps must be at least 1");
        }
        cfg.run.steps = s;
    }
    let model_cfg = match &a.init {
        Some(dir) => crate::model::weights::model_config(dir)?,
        None => crate::model::config::ModelConfig::load(&cfg.model.config)
            .with_context(|| format!("{}: model.config", cpath.display()))?,
    };
    let shape = model_cfg.data.resize_to;
    let ldae_config = a.ldae_config.clone().unwrap_or_else(crate::config::default_config_path);
    let paths = if a.from_store {
        let c = crate::config::Config::load(&ldae_config)?;
        let store = crate::store::Store::open_existing_at(&crate::store::Location::of(&c))
            .context("opening the store for --from-store")?;
        let paths: Vec<PathBuf> = store.model_input_paths()?.into_iter().map(PathBuf::from).collect();
        if paths.is_empty() {
            bail!("--from-store: the store holds no registered model inputs yet");
        }
        paths
    } else {
        let dir = a.data.as_ref().context("--data DIR or --from-store")?;
        nifti_files(dir)?
    };
    let inputs = if a.preprocess {
        let c = crate::config::Config::load(&ldae_config)?;
        let template = crate::preprocess::template::Template::load(&c.preprocess.template, &c.preprocess.template_mask)
            .context("loading the template (see [preprocess] template in the config)")?;
        let prep = |v: &crate::volume::Volume| -> Result<crate::volume::Volume, String> {
            crate::preprocess::pipeline::preprocess_volume(v, &template, &model_cfg, &c.preprocess)
                .map(|p| p.model_input)
                .map_err(|e| format!("preprocessing: {e}"))
        };
        load_model_inputs(&paths, shape, Some(&prep))?
    } else {
        load_model_inputs(&paths, shape, None)?
    };
    let opts = RunOptions {
        out: a.output.clone(),
        init: a.init.clone(),
        resume: a.resume,
        progress: !a.json && std::io::stderr().is_terminal(),
    };
    let s = train(&cfg, inputs, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "trained {} steps {}→{} in {:.1} s ({:.2} steps/s); fixed-batch loss {:.6} → {:.6}; validation SSIM {}{}",
            s.stage,
            s.start_step,
            s.end_step,
            s.seconds,
            s.steps_per_s,
            s.fixed_loss_before,
            s.fixed_loss_after,
            s.last_ssim.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
            if s.stopped_early { " (stopped early)" } else { "" }
        );
        println!("{}", s.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
