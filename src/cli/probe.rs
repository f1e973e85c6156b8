//! `ldae probe fit|apply`: linear probes on y_sem. Rows come from the store (one model version's embeddings,
//! the configured model or `--model`, see [`super::lookup`]) or from an exported matrix (`--embeddings X.npy`,
//! N×E float32, with `--index X.csv` naming `series_uid`, `patient_id` and optionally `date`, `patient_key`
//! per row, as `ldae export --format npy` writes them). Cross-validation folds are grouped by patient (the
//! `patient_key` column when present, else `patient_id`); with fewer patients than `--folds`, each patient is
//! its own fold.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::lookup::{FilterArgs, Session};
use crate::lookup::export::model_label;
use crate::lookup::probe_cv::{cross_validate, fit_probe, Target};
use crate::lookup::probe_file::{load_probe, save_probe, Probe, ProbeKind, ProbeMeta};
use crate::store::EmbeddingRow;

#[derive(Debug, clap::Subcommand)]
pub enum ProbeCommand {
    /// Fit a probe with patient-grouped k-fold cross-validation, then on all rows.
    Fit(FitArgs),
    /// Score rows with a probe.
    Apply(ApplyArgs),
}

#[derive(Debug, clap::Args)]
pub struct FitArgs {
    /// Labels CSV keyed by `series_uid` (or by `patient_id` + `date`).
    #[arg(long)]
    pub labels: PathBuf,
    /// Column of the labels CSV to predict.
    #[arg(long)]
    pub target: String,
    /// Two classes, positive first (logistic regression); without it the target is a number (ridge).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// λ of the objective `mean loss + λ‖w‖²`.
    #[arg(long, default_value_t = 1e-2)]
    pub lambda: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// N×E float32 .npy of y_sem rows, instead of the store's embeddings (needs --index).
    #[arg(long, requires = "index")]
    pub embeddings: Option<PathBuf>,
    /// CSV index of the --embeddings rows (`series_uid`, `patient_id`, optional `date`, `model`, `patient_key`).
    #[arg(long, requires = "embeddings")]
    pub index: Option<PathBuf>,
    /// Which stored embeddings (without --embeddings).
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The probe file (weight, bias, mean, std: also a direction for `ldae manipulate`).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print the cross-validation report as JSON (per-fold metrics, mean ± std, each row's fold).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A probe file written by `ldae probe fit`.
    pub probe: PathBuf,
    /// Scans to score: stored series UIDs, codes files, model-input NIfTIs or DICOM folders (as `ldae similar`
    /// takes them). None, and no --embeddings: every stored embedding of the model that passes the filters.
    pub scans: Vec<String>,
    /// N×E float32 .npy to score instead (needs --index).
    #[arg(long, requires = "index", conflicts_with = "scans")]
    pub embeddings: Option<PathBuf>,
    #[arg(long, requires = "embeddings")]
    pub index: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// One JSON object per scan.
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: ProbeCommand, config: &Path) -> anyhow::Result<ExitCode> {
    match c {
        ProbeCommand::Fit(a) => fit(a, config),
        ProbeCommand::Apply(a) => apply(a, config),
    }
}

/// A CSV table (no quoting: ids, dates and labels need none).
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn read(path: &Path) -> anyhow::Result<Table> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = split_csv(lines.next().with_context(|| format!("{}: empty CSV", path.display()))?)
            .with_context(|| format!("{}: line 1", path.display()))?;
        let mut rows = Vec::new();
        for (i, l) in lines.enumerate() {
            let r = split_csv(l).with_context(|| format!("{}: line {}", path.display(), i + 2))?;
            if r.len() != header.len() {
                bail!("{}: line {}: {} fields, header has {}", path.display(), i + 2, r.len(), header.len());
            }
            rows.push(r);
        }
        Ok(Table { header, rows })
    }

    fn col(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// The fields of one CSV line (RFC 4180 quoting, as `ldae export` writes it; no line breaks inside fields),
/// unquoted fields trimmed.
fn split_csv(line: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => bail!("unterminated quoted field"),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => out.push(field),
                Some(c) => bail!("{c:?} after a quoted field"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field.trim().to_string());
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some('"') => bail!("a quote inside an unquoted field"),
                    Some(c) => field.push(c),
                }
            }
            out.push(field.trim().to_string());
        }
    }
}

/// Read an N×E little-endian float32 C-order .npy.
fn read_npy(path: &Path) -> anyhow::Result<(Vec<f64>, usize, usize)> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bad = |why: &str| anyhow::anyhow!("{}: not an N×E float32 .npy: {why}", path.display());
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad("no NUMPY magic"));
    }
    let (hlen, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        _ => return Err(bad("unknown version")),
    };
    let header = b.get(start..start.saturating_add(hlen)).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad("dtype must be '<f4' in C order"));
    }
    let shape = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> =
        shape.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse()).collect::<Result<_, _>>()?;
    let [n, e] = dims[..] else { return Err(bad("shape is not 2-D")) };
    let data = &b[start + hlen..];
    if Some(data.len()) != n.checked_mul(e).and_then(|v| v.checked_mul(4)) {
        return Err(bad(&format!("{} data bytes for shape ({n}, {e})", data.len())));
    }
    let v = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect();
    Ok((v, n, e))
}

struct Rows {
    x: Vec<f64>,
    e: usize,
    index: Table,
}

/// Rows from the store: the index columns an export writes, the vectors as f64.
fn store_rows(rows: Vec<EmbeddingRow>) -> anyhow::Result<Rows> {
    let e = rows.first().map_or(0, |r| r.y_sem.len());
    let header = ["series_uid", "patient_id", "date", "model", "patient_key"].map(String::from).to_vec();
    let mut x = Vec::with_capacity(rows.len() * e);
    let mut index = Vec::with_capacity(rows.len());
    for r in rows {
        if r.y_sem.len() != e {
            bail!("series {}: y_sem has {} values, the first row {e}", r.series_uid, r.y_sem.len());
        }
        x.extend(r.y_sem.iter().map(|v| f64::from(*v)));
        let model = model_label(&r);
        index.push(vec![
            r.series_uid,
            r.patient_id.unwrap_or_default(),
            r.date.unwrap_or_default(),
            model,
            r.patient_key,
        ]);
    }
    Ok(Rows { x, e, index: Table { header, rows: index } })
}

/// The rows a command works on: `--embeddings/--index`, else the store's.
fn rows_of(emb: &Option<PathBuf>, index: &Option<PathBuf>, filter: &FilterArgs, config: &Path) -> anyhow::Result<Rows> {
    match (emb, index) {
        (Some(e), Some(i)) => load_rows(e, i),
        _ => {
            let s = Session::open(config, filter.model.as_deref())?;
            store_rows(s.rows(&filter.filter(), true)?)
        }
    }
}

fn load_rows(emb: &Path, index: &Path) -> anyhow::Result<Rows> {
    let (x, n, e) = read_npy(emb)?;
    let index = Table::read(index)?;
    if index.rows.len() != n {
        bail!("{}: {} rows, {} has {n}", index_name(index.rows.len()), emb.display(), n);
    }
    if index.col("series_uid").is_none() || index.col("patient_id").is_none() {
        bail!("index CSV needs columns series_uid and patient_id");
    }
    Ok(Rows { x, e, index })
}

fn index_name(n: usize) -> String {
    format!("index has {n} rows")
}

fn fit(a: FitArgs, config: &Path) -> anyhow::Result<ExitCode> {
    if a.folds < 2 {
        bail!("--folds must be at least 2");
    }
    if !a.classes.is_empty() && a.classes.len() != 2 {
        bail!("--classes takes two classes, positive first, e.g. AD,CN");
    }
    let rows = rows_of(&a.embeddings, &a.index, &a.filter, config)?;
    let labels = Table::read(&a.labels)?;
    let tcol = labels.col(&a.target).with_context(|| format!("{}: no column {:?}", a.labels.display(), a.target))?;
    // Key: series_uid, else patient_id + date.
    let (lkey, ikey): (Vec<usize>, Vec<usize>) = match (labels.col("series_uid"), rows.index.col("series_uid")) {
        (Some(l), Some(i)) => (vec![l], vec![i]),
        _ => match (labels.col("patient_id"), labels.col("date"), rows.index.col("patient_id"), rows.index.col("date"))
        {
            (Some(lp), Some(ld), Some(ip), Some(id)) => (vec![lp, ld], vec![ip, id]),
            _ => bail!("{}: labels need series_uid, or patient_id and date", a.labels.display()),
        },
    };
    let key = |r: &[String], k: &[usize]| k.iter().map(|&i| r[i].as_str()).collect::<Vec<_>>().join("\u{1f}");
    let label_of: HashMap<String, String> = labels.rows.iter().map(|r| (key(r, &lkey), r[tcol].clone())).collect();
    let pcol = rows.index.col("patient_key").or(rows.index.col("patient_id")).unwrap_or(0);
    let scol = rows.index.col("series_uid").unwrap_or(0);
    let (mut x, mut groups, mut raw, mut series) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, r) in rows.index.rows.iter().enumerate() {
        let Some(l) = label_of.get(&key(r, &ikey)) else { continue };
        if l.is_empty() || (!a.classes.is_empty() && !a.classes.contains(l)) {
            continue;
        }
        x.extend_from_slice(&rows.x[i * rows.e..(i + 1) * rows.e]);
        groups.push(r[pcol].clone());
        raw.push(l.clone());
        series.push(r[scol].clone());
    }
    if raw.is_empty() {
        bail!("no embedding row has a label in {}", a.labels.display());
    }
    let target = if a.classes.is_empty() {
        let v: Result<Vec<f64>, _> = raw.iter().map(|s| s.parse::<f64>()).collect();
        Target::Number(
            v.with_context(|| format!("{}: {:?} holds a non-number (give --classes?)", a.labels.display(), a.target))?,
        )
    } else {
        Target::Classes(raw.iter().map(|s| *s == a.classes[0]).collect())
    };
    let patients = {
        let mut g = groups.clone();
        g.sort();
        g.dedup();
        g.len()
    };
    if patients < 2 {
        bail!("cross-validation grouped by patient needs labelled rows of at least 2 patients; there are {patients}");
    }
    let folds = a.folds.min(patients);
    if folds < a.folds {
        eprintln!("{patients} patients: {folds} folds (one patient each) instead of {}", a.folds);
    }
    let cv = cross_validate(&x, rows.e, &target, &groups, folds, a.lambda, a.seed).with_context(|| {
        format!("cross-validation ({} rows, {patients} patients, {folds} folds grouped by patient)", groups.len())
    })?;
    let (z, m) = fit_probe(&x, rows.e, &target, a.lambda).context("final fit")?;
    let model = rows.index.col("model").and_then(|c| rows.index.rows.first().map(|r| r[c].clone())).unwrap_or_default();
    let summary: serde_json::Map<String, serde_json::Value> =
        cv.summary.iter().map(|(k, s)| (k.clone(), serde_json::to_value(s).unwrap_or_default())).collect();
    let meta = ProbeMeta {
        kind: if a.classes.is_empty() { ProbeKind::Ridge } else { ProbeKind::Logistic },
        target: a.target.clone(),
        classes: a.classes.clone(),
        model,
        lambda: a.lambda,
        n_rows: groups.len(),
        cv: serde_json::Value::Object(summary.clone()),
    };
    save_probe(&a.output, &Probe { meta, zscore: z, linear: m })
        .with_context(|| format!("writing {}", a.output.display()))?;
    if a.json {
        let out = serde_json::json!({
            "target": a.target, "rows": groups.len(), "patients": patients,
            "folds": cv.folds, "summary": summary, "fold_of_row": cv.fold_of_row, "probe": a.output,
            "lambda": a.lambda, "series_uid": series,
        });
        println!("{out}");
    } else {
        println!("{} rows of {patients} patients, {folds} folds grouped by patient, λ = {}", groups.len(), a.lambda);
        for (k, s) in &cv.summary {
            match s {
                Some(s) => println!("{k:>9}: {:.4} ± {:.4} ({} folds)", s.mean, s.std, s.folds),
                None => println!("{k:>9}: undefined"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn apply(a: ApplyArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let p = load_probe(&a.probe)?;
    let rows = if a.scans.is_empty() {
        rows_of(&a.embeddings, &a.index, &a.filter, config)?
    } else {
        let s = Session::open(config, a.filter.model.as_deref())?;
        let mut x = Vec::new();
        let mut index = Vec::new();
        for scan in &a.scans {
            let q = s.query(scan)?;
            if q.y_sem.len() != p.dim() {
                bail!("{scan}: y_sem has {} values, the probe {} features", q.y_sem.len(), p.dim());
            }
            x.extend(q.y_sem.iter().map(|v| f64::from(*v)));
            index.push(vec![q.stored.map_or_else(|| scan.clone(), |r| r.series_uid), s.model.to_string()]);
        }
        Rows { x, e: p.dim(), index: Table { header: vec!["series_uid".into(), "model".into()], rows: index } }
    };
    if rows.e != p.dim() && !rows.index.rows.is_empty() {
        bail!("{}: probe has {} features, the embeddings have {}", a.probe.display(), p.dim(), rows.e);
    }
    if let (Some(mc), false) = (rows.index.col("model"), p.meta.model.is_empty()) {
        if let Some(r) = rows.index.rows.iter().find(|r| r[mc] != p.meta.model) {
            let uid = rows.index.col("series_uid").map_or("a row", |c| r[c].as_str());
            bail!("{}: fitted on embeddings of {}, but {uid} is of {}", a.probe.display(), p.meta.model, r[mc]);
        }
    }
    let s = p.score(&rows.x);
    let sc = rows.index.col("series_uid").unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (r, v) in rows.index.rows.iter().zip(s) {
        let (value, class) = match p.meta.kind {
            ProbeKind::Logistic => {
                let pr = crate::lookup::probe::sigmoid(v);
                (pr, p.meta.classes.get(if pr > 0.5 { 0 } else { 1 }))
            }
            ProbeKind::Ridge => (v, None),
        };
        if a.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"series_uid": r[sc], "score": value, "class": class, "target": p.meta.target})
            )?;
        } else {
            writeln!(out, "{}\t{value:.6}\t{}", r[sc], class.map(|c| c.as_str()).unwrap_or(""))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::split_csv;

    #[test]
    fn csv_fields_quoted_as_export_writes_them() {
        assert_eq!(split_csv("a, b ,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(split_csv("1,\"T1, MPRAGE\",\"say \"\"hi\"\"\",").unwrap(), ["1", "T1, MPRAGE", "say \"hi\"", ""]);
        assert!(split_csv("\"open,x").is_err());
        assert!(split_csv("a\"b,c").is_err());
    }
}
