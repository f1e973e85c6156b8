//! `ldae similar` (exact cosine nearest neighbours among the stored scans) and `ldae export` (the stored
//! embeddings as CSV, JSON lines or NPY + a CSV index). Both read one model version's embeddings (see
//! [`super::lookup`]); filters apply before ranking, so `similar` returns `-n` rows whenever that many pass.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::lookup::{FilterArgs, Session};
use crate::lookup::export::{csv_field, model_label, write_csv, write_jsonl, write_npy};

/// How `similar` prints its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimilarFormat {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

/// `ldae similar SCAN`: the stored scans whose y_sem is closest (cosine) to SCAN's.
///
/// SCAN is a stored SeriesInstanceUID, a codes file (.safetensors, as `ldae encode` and the daemon write), a
/// model-input NIfTI, or a DICOM folder holding one series (converted, registered and encoded now with the
/// configured model). Columns: series_uid, patient_id, date, age, score (cosine similarity), model
/// (`id@version`). A stored query scan is never listed as its own neighbour. The embeddings are kept as a
/// memory-mapped matrix in `<state>/lookup/` and rebuilt when the store has new ones.
#[derive(Debug, clap::Args)]
pub struct SimilarArgs {
    /// A stored series UID, a codes file, a model-input NIfTI or a DICOM folder.
    pub scan: String,
    /// How many neighbours.
    #[arg(short = 'n', long = "number", default_value_t = 10)]
    pub n: usize,
    /// Leave out every scan of the query's own patient (the query must be a stored scan).
    #[arg(long)]
    pub exclude_patient: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[arg(long, value_enum, default_value_t = SimilarFormat::Table)]
    pub format: SimilarFormat,
    /// Same as `--format json`.
    #[arg(long)]
    pub json: bool,
}

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One row per embedding: the identifiers, then y0…y{E-1}.
    Csv,
    /// One JSON object per embedding with a `y_sem` array.
    Jsonl,
    /// OUT.npy (N×E float32) + OUT.csv (the identifiers, same row order).
    Npy,
}

/// `ldae export -o OUT`: every stored embedding of one model version that passes the filters, in store order.
///
/// Columns: series_uid, patient_id, date, age, model (`id@version`), study_uid, patient_key, issuer, study_date,
/// modality, description, steps, preprocess_hash, codes_path. Parquet is not offered: pandas and polars read the
/// CSV and NPY directly.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Output file (`npy`: the stem of OUT.npy and OUT.csv).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print a JSON summary (rows, dimension, files) instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// One neighbour as printed.
#[derive(Debug, serde::Serialize)]
struct Neighbour<'a> {
    series_uid: &'a str,
    patient_id: Option<&'a str>,
    date: Option<&'a str>,
    age: Option<f64>,
    score: f32,
    model: String,
}

pub fn similar(a: SimilarArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let s = Session::open(config, a.filter.model.as_deref())?;
    let q = s.query(&a.scan)?;
    let mut filter = a.filter.filter();
    if a.exclude_patient {
        let Some(row) = &q.stored else {
            bail!("--exclude-patient needs a stored scan as the query ({} is not one)", a.scan);
        };
        filter.exclude_patient_key = Some(row.patient_key.clone());
    }
    let m = s.matrix()?;
    if q.y_sem.len() != m.dim {
        bail!("{}: y_sem has {} values, the embeddings of {} have {}", a.scan, q.y_sem.len(), s.model, m.dim);
    }
    let own = q.stored.as_ref().map(|r| r.id);
    let hits = m.search(&q.y_sem, a.n, |r| Some(r.id) != own && filter.matches(r));
    let rows: Vec<Neighbour> = hits
        .iter()
        .map(|h| {
            let r = &m.rows[h.index];
            Neighbour {
                series_uid: &r.series_uid,
                patient_id: r.patient_id.as_deref(),
                date: r.date.as_deref(),
                age: r.age,
                score: h.score,
                model: model_label(r),
            }
        })
        .collect();
    let format = if a.json { SimilarFormat::Json } else { a.format };
    let mut out = std::io::stdout().lock();
    match format {
        SimilarFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        SimilarFormat::Jsonl => {
            for r in &rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        SimilarFormat::Csv => {
            writeln!(out, "series_uid,patient_id,date,age,score,model")?;
            for r in &rows {
                let age = r.age.map(|v| v.to_string()).unwrap_or_default();
                let f = [r.series_uid, r.patient_id.unwrap_or(""), r.date.unwrap_or(""), &age];
                let f: Vec<_> = f.iter().map(|v| csv_field(v)).collect();
                writeln!(out, "{},{},{}", f.join(","), r.score, csv_field(&r.model))?;
            }
        }
        SimilarFormat::Table => {
            let w = rows.iter().map(|r| r.series_uid.len()).max().unwrap_or(10).max(10);
            writeln!(
                out,
                "{:<w$}  {:<12}  {:<8}  {:>5}  {:>8}  model",
                "series_uid", "patient_id", "date", "age", "score"
            )?;
            for r in &rows {
                let age = r.age.map(|v| format!("{v:.0}")).unwrap_or_default();
                writeln!(
                    out,
                    "{:<w$}  {:<12}  {:<8}  {:>5}  {:>8.5}  {}",
                    r.series_uid,
                    r.patient_id.unwrap_or("-"),
                    r.date.unwrap_or("-"),
                    age,
                    r.score,
                    r.model
                )?;
            }
            if rows.len() < a.n {
                eprintln!("{} of {} requested: only {} scans pass the filters", rows.len(), a.n, rows.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn export(a: ExportArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let s = Session::open(config, a.filter.model.as_deref())?;
    let rows = s.rows(&a.filter.filter(), true)?;
    let dim = rows.first().map_or(0, |r| r.y_sem.len());
    if let Some(r) = rows.iter().find(|r| r.y_sem.len() != dim) {
        bail!("series {}: y_sem has {} values, the first row {dim}", r.series_uid, r.y_sem.len());
    }
    let create = |p: &Path| -> anyhow::Result<BufWriter<std::fs::File>> {
        let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
        Ok(BufWriter::with_capacity(1 << 20, f))
    };
    let finish = |mut w: BufWriter<std::fs::File>, p: &Path| -> anyhow::Result<()> {
        w.flush().with_context(|| format!("writing {}", p.display()))
    };
    let files: Vec<PathBuf> = match a.format {
        ExportFormat::Csv | ExportFormat::Jsonl => {
            let mut w = create(&a.output)?;
            let r =
                if a.format == ExportFormat::Csv { write_csv(&mut w, &rows, dim) } else { write_jsonl(&mut w, &rows) };
            r.with_context(|| format!("writing {}", a.output.display()))?;
            finish(w, &a.output)?;
            vec![a.output.clone()]
        }
        ExportFormat::Npy => {
            let stem = if a.output.extension().is_some_and(|e| e == "npy" || e == "csv") {
                a.output.with_extension("")
            } else {
                a.output.clone()
            };
            let (npy, csv) = (stem.with_extension("npy"), stem.with_extension("csv"));
            let mut w = create(&npy)?;
            write_npy(&mut w, &rows, dim).with_context(|| format!("writing {}", npy.display()))?;
            finish(w, &npy)?;
            let mut w = create(&csv)?;
            write_csv(&mut w, &rows, 0).with_context(|| format!("writing {}", csv.display()))?;
            finish(w, &csv)?;
            vec![npy, csv]
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({"rows": rows.len(), "dim": dim, "model": s.model.to_string(), "files": files})
        );
    } else {
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        eprintln!("{} embeddings of {} ({dim} values each) → {}", rows.len(), s.model, names.join(" + "));
    }
    Ok(ExitCode::SUCCESS)
}
