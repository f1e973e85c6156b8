//! `ldae n4`: N4-style bias-field correction of one NIfTI volume ([`crate::preprocess::n4`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::config::Config;
use crate::nifti::{read_nifti_limited, write_nifti};
use crate::preprocess::n4::n4;

/// `ldae n4`: correct a scan for a smooth multiplicative bias field (parameters from `[preprocess.n4]`).
#[derive(Debug, clap::Args)]
pub struct N4Args {
    /// The scan (NIfTI).
    pub input: PathBuf,
    /// The corrected scan (NIfTI).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Fit the field only inside this mask (NIfTI on the same grid, > 0.5); default: Otsu's foreground.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Also write the multiplicative field (NIfTI, mean 1 inside the mask).
    #[arg(long)]
    pub field: Option<PathBuf>,
    /// Iterations per level, comma-separated (overrides `[preprocess.n4] iterations`; the count is the levels).
    #[arg(long, value_delimiter = ',')]
    pub iterations: Option<Vec<u32>>,
    /// Shrink factor of the working copy (overrides `[preprocess.n4] shrink`).
    #[arg(long)]
    pub shrink: Option<u32>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: N4Args, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = if !config.exists() && config == Path::new("config/ldae.toml") {
        Config::defaults_here()
    } else {
        Config::load(config)?
    };
    let mut opts = cfg.preprocess.n4.clone();
    if let Some(i) = a.iterations {
        opts.iterations = i;
    }
    if let Some(s) = a.shrink {
        opts.shrink = s;
    }
    if let Err((k, m)) = opts.validate() {
        anyhow::bail!("{k}: {m}");
    }
    let vol = read_nifti_limited(&a.input, &cfg.limits)?;
    let mask = a.mask.as_ref().map(|m| read_nifti_limited(m, &cfg.limits)).transpose()?;
    let start = Instant::now();
    let quiet = a.json;
    let r = n4(&vol, mask.as_ref(), &opts, &cfg.limits, &|level, it, cv| {
        if !quiet && (it % 10 == 0 || it == 1) {
            eprintln!("n4: level {} iteration {it}: field update cv {cv:.5}", level + 1);
        }
    })
    .with_context(|| format!("correcting {}", a.input.display()))?;
    let secs = start.elapsed().as_secs_f64();
    write_nifti(&a.output, &r.corrected)?;
    if let Some(f) = &a.field {
        write_nifti(f, &r.field)?;
    }
    let (lo, hi) = r.field.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if a.json {
        let summary = serde_json::json!({
            "input": a.input,
            "output": a.output,
            "field": a.field,
            "seconds": secs,
            "mask_voxels": r.mask_voxels,
            "levels": r.levels,
            "field_min": lo,
            "field_max": hi,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!(
            "corrected {} in {secs:.1} s ({} levels, field {lo:.3}–{hi:.3}); wrote {}",
            a.input.display(),
            r.levels.len(),
            a.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
