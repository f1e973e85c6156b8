//! `quality-metrics`: the numbers and pictures scripts/demo-quality.sh prints for a trained model, in the pieces
//! the `ldae` commands do not have: SSIM of a reconstruction against the model input within the template brain
//! mask ([`ssim`]), an N×E y_sem matrix from `ldae encode` code files for `ldae probe fit|apply`, the R²/MAE of
//! a probe's predictions on held-out subjects ([`regression`]), and a strip of previews ([`montage`]).

mod montage;
mod regression;
mod ssim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use ldae::model::ldae::Ldae;
use ldae::model::tensor_volume::{tensor_volume, volume_tensor};
use ldae::nifti::{read_nifti, write_nifti};
use ldae::preprocess::model_input::{pad_or_crop_minimum, resample_to_spacing};

#[derive(Debug, Parser)]
#[command(name = "quality-metrics", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// SSIM of a reconstruction against its model input, inside the template brain mask on the input's grid.
    Ssim {
        /// The model input (as `ldae preprocess` wrote it).
        input: PathBuf,
        /// The reconstruction (as `ldae decode` wrote it), same shape.
        reconstruction: PathBuf,
        /// Template brain mask (default: the shipped MNI 2009a mask), carried to the input grid the way
        /// `ldae preprocess` carries the template.
        #[arg(long)]
        template_mask: Option<PathBuf>,
        /// Data range L of the SSIM constants (model inputs are in [0, 1]).
        #[arg(long, default_value_t = 1.0)]
        range: f64,
    },
    /// Stack the y_sem of `<id>.codes.safetensors` files for the rows of a labels CSV of chosen splits into
    /// `<out>.npy` (N×E float32) and `<out>.csv` (series_uid, patient_id, age, split).
    Embeddings {
        /// labels.csv written by make-train-set.
        #[arg(long)]
        labels: PathBuf,
        /// Folder holding `<id>.codes.safetensors`.
        #[arg(long)]
        codes: PathBuf,
        /// Splits to take (train, val, test).
        #[arg(long, value_delimiter = ',', required = true)]
        split: Vec<String>,
        /// Output prefix.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// R², MAE and the chance MAE of `ldae probe apply` output (tab-separated: id, score) against a truth CSV.
    Score {
        /// Output of `ldae probe apply` (not --json).
        #[arg(long)]
        pred: PathBuf,
        /// CSV with series_uid and the target column (an `embeddings` index).
        #[arg(long)]
        truth: PathBuf,
        /// The training rows' CSV: chance predicts its mean of the target.
        #[arg(long)]
        train: PathBuf,
        #[arg(long, default_value = "age")]
        target: String,
    },
    /// AutoencoderKL alone: decode(mu(x)) of a model input, written as NIfTI on the input's grid. The ceiling
    /// of the full reconstruction (encode → DDIM → decode), so a script can tell which part loses detail.
    Autoencode {
        /// The model input (as `ldae preprocess` wrote it).
        input: PathBuf,
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// PNGs side by side.
    Montage {
        images: Vec<PathBuf>,
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", parts.join(": "));
            ExitCode::from(2)
        }
    }
}

/// A small CSV without quoting (the files make-train-set and this tool write).
struct Csv {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Csv {
    fn read(path: &Path) -> anyhow::Result<Csv> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let split = |l: &str| l.split(',').map(|f| f.trim().to_string()).collect::<Vec<_>>();
        let header = split(lines.next().with_context(|| format!("{}: empty", path.display()))?);
        let rows: Vec<Vec<String>> = lines.map(split).collect();
        if let Some((i, _)) = rows.iter().enumerate().find(|(_, r)| r.len() != header.len()) {
            bail!("{}: line {} has a different number of fields than the header", path.display(), i + 2);
        }
        Ok(Csv { header, rows })
    }

    fn col(&self, path: &Path, name: &str) -> anyhow::Result<usize> {
        self.header.iter().position(|h| h == name).with_context(|| format!("{}: no column {name:?}", path.display()))
    }
}

fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Ssim { input, reconstruction, template_mask, range } => {
            let x = read_nifti(&input).with_context(|| format!("reading {}", input.display()))?;
            let y = read_nifti(&reconstruction).with_context(|| format!("reading {}", reconstruction.display()))?;
            if x.shape() != y.shape() {
                bail!("shapes differ: {:?} and {:?}", x.shape(), y.shape());
            }
            let mask_path = template_mask.unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/templates/mni152_brain_mask_nilearn_res1.nii.gz")
            });
            let m = read_nifti(&mask_path).with_context(|| format!("reading {}", mask_path.display()))?;
            let pixdim = x.spacing()[0];
            let carried = pad_or_crop_minimum(&resample_to_spacing(&m, pixdim)?, x.shape())?;
            let mask = carried.data.mapv(|v| v > 0.5);
            let n = mask.iter().filter(|m| **m).count();
            let s = ssim::masked_ssim(&x.data, &y.data, &mask, range).context("the brain mask is empty")?;
            println!("ssim {s:.4} over {n} brain voxels");
        }
        Command::Embeddings { labels, codes, split, output } => {
            let t = Csv::read(&labels)?;
            let (ci, cs, ca, cp) =
                (t.col(&labels, "id")?, t.col(&labels, "subject")?, t.col(&labels, "age")?, t.col(&labels, "split")?);
            let mut x: Vec<f32> = Vec::new();
            let mut dim = None;
            let mut index = String::from("series_uid,patient_id,age,split\n");
            for r in t.rows.iter().filter(|r| split.contains(&r[cp])) {
                let path = codes.join(format!("{}.codes.safetensors", r[ci]));
                let f = ldae::model::codes::load_codes(&path)?;
                let v: Vec<f32> = f.codes.y_sem.flatten_all()?.to_vec1()?;
                if *dim.get_or_insert(v.len()) != v.len() {
                    bail!("{}: y_sem has {} values, earlier files {}", path.display(), v.len(), dim.unwrap_or(0));
                }
                x.extend(v);
                index.push_str(&format!("{},{},{},{}\n", r[ci], r[cs], r[ca], r[cp]));
            }
            let e = dim.with_context(|| format!("{}: no rows in splits {split:?}", labels.display()))?;
            let n = x.len() / e;
            let mut bytes = ldae::lookup::export::npy_header(n, e);
            x.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            let npy = output.with_extension("npy");
            std::fs::write(&npy, bytes).with_context(|| format!("writing {}", npy.display()))?;
            let csv = output.with_extension("csv");
            std::fs::write(&csv, index).with_context(|| format!("writing {}", csv.display()))?;
            eprintln!("{n} rows × {e} → {} and {}", npy.display(), csv.display());
        }
        Command::Score { pred, truth, train, target } => {
            let text = std::fs::read_to_string(&pred).with_context(|| format!("reading {}", pred.display()))?;
            let mut score: HashMap<String, f64> = HashMap::new();
            for (i, l) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
                let mut f = l.split('\t');
                let (Some(id), Some(v)) = (f.next(), f.next()) else {
                    bail!("{}: line {} is not `id<TAB>score`", pred.display(), i + 1);
                };
                let v: f64 = v.trim().parse().with_context(|| format!("{}: line {}", pred.display(), i + 1))?;
                score.insert(id.to_string(), v);
            }
            let values = |path: &Path| -> anyhow::Result<Vec<(String, f64)>> {
                let t = Csv::read(path)?;
                let (cu, ct) = (t.col(path, "series_uid")?, t.col(path, &target)?);
                t.rows
                    .iter()
                    .map(|r| Ok((r[cu].clone(), r[ct].parse::<f64>().with_context(|| format!("{}", path.display()))?)))
                    .collect()
            };
            let tr = values(&train)?;
            let baseline = tr.iter().map(|(_, v)| v).sum::<f64>() / tr.len().max(1) as f64;
            let (mut p, mut y) = (Vec::new(), Vec::new());
            for (id, v) in values(&truth)? {
                let s = score.get(&id).with_context(|| format!("{}: no prediction for {id}", pred.display()))?;
                p.push(*s);
                y.push(v);
            }
            let s = regression::scores(&p, &y, baseline).context("need at least 2 held-out rows")?;
            println!(
                "{target} probe on {} held-out scans: R² {:.3}, MAE {:.2} (chance MAE {:.2}, predicting the train mean {:.2}), Pearson r {:.3}",
                s.n, s.r2, s.mae, s.chance_mae, baseline, s.pearson
            );
        }
        Command::Autoencode { input, model, output } => {
            let device = candle_core::Device::Cpu;
            let m = Ldae::load(&model, &device, candle_core::DType::F32)
                .with_context(|| format!("loading the model in {}", model.display()))?;
            let v = read_nifti(&input).with_context(|| format!("reading {}", input.display()))?;
            let x = m.check_input(&volume_tensor(&v)?)?;
            let (mu, _) = m.latent(&x)?;
            let recon = m.decode_latent(&m.scale(&mu)?)?;
            write_nifti(&output, &tensor_volume(&recon, &v.affine)?)
                .with_context(|| format!("writing {}", output.display()))?;
        }
        Command::Montage { images, output } => {
            let imgs = images
                .iter()
                .map(|p| image::open(p).map(|i| i.to_rgba8()).with_context(|| format!("reading {}", p.display())))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if imgs.is_empty() {
                bail!("no images given");
            }
            montage::side_by_side(&imgs)?.save(&output).with_context(|| format!("writing {}", output.display()))?;
        }
    }
    Ok(())
}
