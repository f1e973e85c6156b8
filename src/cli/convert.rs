//! `ldae convert`: DICOM files/folders → NIfTI + JSON sidecar per series.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::dicom::convert_paths_with;
use crate::nifti::write_nifti_unsynced;
use crate::volume::Volume;

/// Arguments of `ldae convert`.
///
/// Exit code: 0 when every file and series was converted, 1 when anything was rejected (each rejection is one
/// line on stderr naming the file or series and the reason), 2 on a usage or output error.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 = everything converted; 1 = at least one file or series was rejected \
(one line per rejection on stderr: `rejected: <file or series>: <reason>`); 2 = usage, configuration or write \
error.")]
pub struct ConvertArgs {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Write uncompressed `.nii` instead of `.nii.gz`.
    #[arg(long)]
    pub uncompressed: bool,
}

pub fn run(args: ConvertArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = if config.exists() { Config::load(config)? } else { Config::default() };
    std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;
    let report = convert_paths_with(&args.inputs, &cfg.convert, &cfg.limits);
    let ext = if args.uncompressed { "nii" } else { "nii.gz" };
    for c in &report.converted {
        let nii = args.output.join(format!("{}.{ext}", c.file_stem));
        let json = args.output.join(format!("{}.json", c.file_stem));
        write_volume(&nii, &c.volume, args.uncompressed).with_context(|| format!("writing {}", nii.display()))?;
        let text = serde_json::to_vec_pretty(&c.sidecar)?;
        write_file(&json, &text).with_context(|| format!("writing {}", json.display()))?;
        let [ni, nj, nk] = c.volume.shape();
        println!("converted: {} ({ni}x{nj}x{nk}, {} files) -> {}", c.series_uid, c.sources.len(), nii.display());
    }
    for r in &report.rejected {
        eprintln!("rejected: {r}");
    }
    Ok(if report.rejected.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Write a volume through a temporary sibling and a rename (readers never see half a file). Unlike the daemon's
/// store, a one-shot conversion leaves flushing to the OS (no fsync, for the sidecar too), as dcm2niix does.
fn write_volume(path: &Path, vol: &Volume, uncompressed: bool) -> anyhow::Result<()> {
    Ok(write_nifti_unsynced(path, vol, !uncompressed)?)
}

/// Temporary sibling + rename, no fsync.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
