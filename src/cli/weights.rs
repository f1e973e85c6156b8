//! `ldae weights convert|check`: published `.pth` files → safetensors + manifest, and verification.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::model::manifest::{check_dir, convert_dir};

#[derive(Debug, clap::Subcommand)]
pub enum WeightsCommand {
    /// Convert a model directory's .pth files to safetensors and write a manifest (sha256 + config).
    Convert { dir: PathBuf },
    /// Verify a model directory: keys, shapes and manifest checksums.
    Check { dir: PathBuf },
}

pub fn run(c: WeightsCommand) -> anyhow::Result<ExitCode> {
    match c {
        WeightsCommand::Convert { dir } => {
            for d in convert_dir(&dir)? {
                match &d.written {
                    Some(out) => {
                        println!("{} → {} ({} tensors, keys verified)", d.source.display(), out.display(), d.tensors)
                    }
                    None => {
                        println!("{}: already safetensors ({} tensors, keys verified)", d.source.display(), d.tensors)
                    }
                }
            }
            println!("{}", dir.join(crate::model::manifest::MANIFEST).display());
            Ok(ExitCode::SUCCESS)
        }
        WeightsCommand::Check { dir } => {
            for line in check_dir(&dir)? {
                println!("{line}");
            }
            println!("{}: ok", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
