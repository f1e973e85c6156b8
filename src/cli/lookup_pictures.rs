//! `ldae preview`: the three-view picture of a NIfTI volume (see `lookup::preview`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

/// Arguments of `ldae preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// A NIfTI volume (.nii / .nii.gz).
    pub scan: PathBuf,
    /// Output PNG.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Draw the SYNTHETIC banner (the volume was made by the model).
    #[arg(long)]
    pub synthetic: bool,
    /// Label line drawn on the picture (default empty: file names can hold patient names, so none is drawn).
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Run `ldae preview`.
pub fn preview(a: PreviewArgs) -> anyhow::Result<ExitCode> {
    let v = crate::nifti::read_nifti(&a.scan).with_context(|| format!("reading {}", a.scan.display()))?;
    let png = crate::lookup::preview::preview_png(&v, &a.label, a.synthetic)
        .with_context(|| format!("drawing {}", a.scan.display()))?;
    std::fs::write(&a.output, png).with_context(|| format!("writing {}", a.output.display()))?;
    Ok(ExitCode::SUCCESS)
}
