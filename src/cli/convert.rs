//! `ldae convert`: DICOM files/folders → NIfTI + JSON sidecar per series.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::dicom::{convert_paths_each, ConvertedSeries};
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
    // A writer thread takes each series as soon as it is converted: series n is written while n + 1 is decoded,
    // and at most three volumes are in memory (converting, queued, writing) however many series the input holds.
    let (tx, rx) = std::sync::mpsc::sync_channel::<ConvertedSeries>(1);
    let (rejected, written) = std::thread::scope(|s| {
        let writer = s.spawn(|| -> anyhow::Result<()> {
            for c in rx {
                write_series(&c, &args.output, args.uncompressed)?;
            }
            Ok(())
        });
        // A failed send means the writer stopped on an error, which `join` reports; stop converting then.
        let rejected =
            convert_paths_each(&args.inputs, &cfg.convert, &cfg.limits, |c| tx.send(c).map_err(|_| WriterStopped));
        drop(tx);
        let written = writer.join().map_err(|_| anyhow::anyhow!("the output writer panicked"))?;
        anyhow::Ok((rejected, written))
    })?;
    written?;
    let rejected = rejected?;
    for r in &rejected {
        eprintln!("rejected: {r}");
    }
    Ok(if rejected.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The writer thread stopped (its own error is the one reported).
#[derive(Debug, thiserror::Error)]
#[error("the output writer stopped")]
struct WriterStopped;

/// Write one series' volume and sidecar into `dir`, and say so on stdout.
fn write_series(c: &ConvertedSeries, dir: &Path, uncompressed: bool) -> anyhow::Result<()> {
    let ext = if uncompressed { "nii" } else { "nii.gz" };
    let nii = dir.join(format!("{}.{ext}", c.file_stem));
    let json = dir.join(format!("{}.json", c.file_stem));
    write_volume(&nii, &c.volume, uncompressed).with_context(|| format!("writing {}", nii.display()))?;
    let text = serde_json::to_vec_pretty(&c.sidecar)?;
    write_file(&json, &text).with_context(|| format!("writing {}", json.display()))?;
    let [ni, nj, nk] = c.volume.shape();
    println!("converted: {} ({ni}x{nj}x{nk}, {} files) -> {}", c.series_uid, c.sources.len(), nii.display());
    Ok(())
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
