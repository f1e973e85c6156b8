//! `make-train-set`: a varied, labelled training set for `ldae train`, built offline and deterministically
//! (same seed, same bytes) from a brain template that ships with ldae (weights/templates: MNI ICBM152 2009a).
//!
//! N subjects × M sessions. Each subject gets its own smooth random anatomy ([`subject`]); each session an age
//! that grows from session to session, atrophy driven by that age (ventricles grow, CSF spaces widen:
//! [`anatomy`]), and its own scanner (contrast, bias field, Rician noise: [`scanner`]). Every volume is written as
//! `ldae preprocess` writes a model input ([`render`]) at the model's resolution, with `labels.csv` and
//! `labels.json` (subject, session, age, atrophy level, split) beside them ([`plan`]). See docs/training-data.md.

mod anatomy;
mod field;
mod plan;
mod render;
mod scanner;
mod subject;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use rand::SeedableRng;
use rayon::prelude::*;

use ldae::model::config::ModelConfig;
use ldae::preprocess::template::Template;

/// Largest ventricle push (mm) at atrophy level 1 (age 90).
const VENTRICLE_MM_AT_1: f64 = 4.5;
/// Largest CSF widening (mm) at atrophy level 1.
const CORTEX_MM_AT_1: f64 = 1.0;

/// Build a synthetic longitudinal training set of model-input NIfTIs and its labels.
#[derive(Debug, Parser)]
#[command(name = "make-train-set", version, about, long_about, args_override_self = true)]
struct Args {
    /// Output folder (created; existing files of the same names are replaced).
    #[arg(short, long)]
    output: PathBuf,
    /// Model folder whose config.json gives the input spacing and shape (`data.pixdim`, `data.resize_to`) and
    /// the divisibility the networks need.
    #[arg(long, required_unless_present_all = ["pixdim", "shape"])]
    model: Option<PathBuf>,
    /// Voxel size (mm) instead of the model's.
    #[arg(long)]
    pixdim: Option<f64>,
    /// Volume shape X,Y,Z instead of the model's.
    #[arg(long, value_delimiter = ',')]
    shape: Option<Vec<usize>>,
    /// Subjects.
    #[arg(long, default_value_t = 20)]
    subjects: usize,
    /// Sessions per subject (at increasing ages).
    #[arg(long, default_value_t = 5)]
    sessions: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fractions of subjects in train and val (the rest is test).
    #[arg(long, value_delimiter = ',', default_values_t = [0.7, 0.15])]
    split: Vec<f64>,
    /// Scale of the per-subject anatomy variation (0 = every subject is the template).
    #[arg(long, default_value_t = 1.0)]
    anatomy: f64,
    /// Scale of the age-driven atrophy (0 = none: an atrophy-free control set with the same anatomy and scanners).
    #[arg(long, default_value_t = 1.0)]
    atrophy: f64,
    /// Scale of the per-session scanner variation: contrast, bias field, noise (0 = none).
    #[arg(long, default_value_t = 1.0)]
    scanner: f64,
    /// Template T1 (MNI space; default: the shipped MNI ICBM152 2009a).
    #[arg(long, requires = "template_mask")]
    template: Option<PathBuf>,
    /// Brain mask on the template's grid.
    #[arg(long, requires = "template")]
    template_mask: Option<PathBuf>,
    /// Another brain-extracted T1 in MNI space (and its brain mask on its grid) to make subjects from, besides
    /// the template; repeatable. Each subject is made from one source, drawn uniformly.
    #[arg(long, num_args = 2, value_names = ["T1", "MASK"], action = clap::ArgAction::Append)]
    extra_source: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", parts.join(": "));
            ExitCode::from(2)
        }
    }
}

/// Input spacing and shape, from the model or the flags, checked against the networks' downsampling.
fn geometry(a: &Args) -> anyhow::Result<(f64, [usize; 3])> {
    let model = match &a.model {
        Some(dir) => Some(ModelConfig::load(&dir.join("config.json")).context("reading the model configuration")?),
        None => None,
    };
    let pixdim = a.pixdim.or(model.as_ref().map(|m| m.data.pixdim)).context("--pixdim or --model is needed")?;
    let shape = match (&a.shape, &model) {
        (Some(s), _) => match s[..] {
            [x, y, z] => [x, y, z],
            _ => bail!("--shape takes three sizes X,Y,Z, not {} values", s.len()),
        },
        (None, Some(m)) => m.data.resize_to,
        (None, None) => bail!("--shape or --model is needed"),
    };
    if !(pixdim.is_finite() && (0.5..=16.0).contains(&pixdim)) {
        bail!("--pixdim {pixdim}: must be between 0.5 and 16 mm");
    }
    if shape.iter().any(|&n| n == 0 || n > 512) {
        bail!("shape {shape:?}: every axis must be between 1 and 512");
    }
    if let Some(m) = &model {
        // The rule of `Ldae::check_input`: the AEKL halves every axis per level after the first, the UNet the
        // latent's last two per level after the first.
        let f = 1usize << (m.vae_args.num_channels.len().saturating_sub(1));
        let g = 1usize << (m.unet_args.channel_multiplier.len().saturating_sub(1));
        if shape.iter().any(|n| n % f != 0) || [shape[1] / f, shape[2] / f].iter().any(|n| n % g != 0) {
            bail!("shape {shape:?}: the model needs every axis divisible by {f} and the latent's last two by {g}");
        }
    }
    Ok((pixdim, shape))
}

fn default_template() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/templates");
    (dir.join("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"), dir.join("mni152_brain_mask_nilearn_res1.nii.gz"))
}

/// A source volume ready to sample: its anatomy analysed, its world → voxel map.
fn source(template: Template, path: &Path) -> anyhow::Result<render::Source> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let anatomy = anatomy::Anatomy::of(&template).with_context(|| format!("analysing {}", path.display()))?;
    let voxel_of_world =
        template.t1.affine.inverse().with_context(|| format!("{}: singular affine", path.display()))?;
    eprintln!(
        "source {name}: CSF/GM/WM means {:.1}/{:.1}/{:.1}, {} ventricle voxels",
        anatomy.means[0], anatomy.means[1], anatomy.means[2], anatomy.ventricle_voxels
    );
    Ok(render::Source { template, anatomy, voxel_of_world, name })
}

fn run(a: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let (pixdim, shape) = geometry(&a)?;
    if a.subjects == 0 || a.sessions == 0 {
        bail!("--subjects and --sessions must be at least 1");
    }
    if a.subjects.saturating_mul(a.sessions) > 100_000 {
        bail!("{} × {} volumes is more than 100000", a.subjects, a.sessions);
    }
    let [train, val] = a.split[..] else {
        bail!("--split takes two fractions TRAIN,VAL, not {} values", a.split.len());
    };
    if !(0.0..=1.0).contains(&train) || !(0.0..=1.0).contains(&val) || train + val > 1.0 + 1e-9 {
        bail!("--split {train},{val}: fractions in [0, 1] summing to at most 1");
    }
    // `contains` is false for NaN.
    if !(0.0..=3.0).contains(&a.anatomy) || !(0.0..=3.0).contains(&a.scanner) || !(0.0..=1.5).contains(&a.atrophy) {
        bail!("--anatomy and --scanner must be between 0 and 3, --atrophy between 0 and 1.5");
    }
    let (t1, mask) = match (&a.template, &a.template_mask) {
        (Some(t), Some(m)) => (t.clone(), m.clone()),
        _ => default_template(),
    };
    let template = Template::load(&t1, &mask).with_context(|| format!("loading the template {}", t1.display()))?;
    let mut sources = vec![source(template.clone(), &t1)?];
    for pair in a.extra_source.chunks_exact(2) {
        let t = Template::load(&pair[0], &pair[1])
            .with_context(|| format!("loading the source {} (mask {})", pair[0].display(), pair[1].display()))?;
        sources.push(source(t, &pair[0])?);
    }
    eprintln!("{} × {} volumes of {:?} at {} mm", a.subjects, a.sessions, shape, pixdim);
    std::fs::create_dir_all(&a.output).with_context(|| format!("creating {}", a.output.display()))?;
    let grid = render::SampleGrid::new(&template.t1, pixdim);
    let scans = plan::plan(a.seed, a.subjects, a.sessions, sources.len(), train, val);
    let centre = sources[0].anatomy.centre;
    let subjects: Vec<subject::SubjectMap> = (0..a.subjects)
        .map(|s| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(plan::seed_for(a.seed, plan::purpose::ANATOMY, s, 0));
            subject::SubjectMap::draw(&mut rng, centre, a.anatomy)
        })
        .collect();
    let done = AtomicUsize::new(0);
    let total = scans.len();
    scans.par_iter().try_for_each(|scan| -> anyhow::Result<()> {
        let (s, t) = (scan.subject_index, scan.session);
        let mut rng = rand::rngs::StdRng::seed_from_u64(plan::seed_for(a.seed, plan::purpose::SCANNER, s, t));
        let src = &sources[scan.source];
        let scanner = scanner::Scanner::draw(&mut rng, src.anatomy.means, centre, a.scanner);
        let session = render::Session {
            target: &template,
            source: src,
            grid: &grid,
            subject: &subjects[s],
            scanner: &scanner,
            vent_mm: VENTRICLE_MM_AT_1 * scan.atrophy * a.atrophy,
            cortex_mm: CORTEX_MM_AT_1 * scan.atrophy * a.atrophy,
            noise_seed: plan::seed_for(a.seed, plan::purpose::NOISE, s, t),
        };
        let vol = render::render(&session, shape).with_context(|| format!("making {}", scan.id))?;
        let path = a.output.join(&scan.file);
        ldae::nifti::write_nifti(&path, &vol).with_context(|| format!("writing {}", path.display()))?;
        let k = done.fetch_add(1, Ordering::Relaxed) + 1;
        eprintln!("[{k}/{total}] {} age {:.2} ({})", scan.id, scan.age, scan.split.as_str());
        Ok(())
    })?;
    let settings = serde_json::json!({
        "generator": "make-train-set",
        "version": ldae::VERSION,
        "seed": a.seed,
        "subjects": a.subjects,
        "sessions": a.sessions,
        "pixdim": pixdim,
        "shape": shape,
        "split": [train, val],
        "anatomy": a.anatomy,
        "scanner": a.scanner,
        "atrophy_scale": a.atrophy,
        "sources": sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "atrophy": {
            "of_age": "clamp((age - 50) / 40, 0, 1.25)",
            "ventricle_mm_at_1": VENTRICLE_MM_AT_1,
            "cortex_mm_at_1": CORTEX_MM_AT_1,
        },
    });
    plan::write_labels(&a.output, &scans, &settings)
        .with_context(|| format!("writing the labels in {}", a.output.display()))?;
    eprintln!(
        "wrote {total} volumes and labels.csv/labels.json to {} in {:.1} s",
        a.output.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
