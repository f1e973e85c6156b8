//! `ldae report PATIENT -o report.html`: gathers one patient's timeline from the store (registered series and
//! synthetic scans, previews drawn from their template-space volumes), the nearest stored scans of other patients
//! to the latest encoded scan (same model id and version), and the configured probes' scores, then writes the
//! page `lookup::report` builds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::Config;
use crate::longitudinal::dates;
use crate::longitudinal::timeline::SyntheticState;
use crate::lookup::preview::preview_png;
use crate::lookup::probe::sigmoid;
use crate::lookup::probe_file::{load_probe, Probe, ProbeKind};
use crate::lookup::report::{
    display_date, render, timeline_order, Neighbour, Neighbours, ProbeColumn, ReportInput, ScanKind, Score, Timepoint,
};
use crate::lookup::similar::{normalise, top_k};
use crate::store::{EmbeddingFilter, EmbeddingRow, PatientRef, Store};

/// Arguments of `ldae report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The patient: a PatientID, or a patient key (`id:<issuer>\<PatientID>`, `study:<StudyInstanceUID>`).
    pub patient: String,
    /// Output HTML file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// How many nearest neighbours of the latest scan to list.
    #[arg(short = 'n', long, default_value_t = 5)]
    pub neighbours: usize,
    /// The model whose embeddings are used (default: the configured model's id, its folder name).
    #[arg(long)]
    pub model: Option<String>,
    /// Print what the page shows as JSON (without the pictures).
    #[arg(long)]
    pub json: bool,
}

/// Run `ldae report`.
pub fn run(a: ReportArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let store = Store::open_existing_at(&crate::store::Location::of(&cfg))?;
    let patient = one_patient(&store, &a.patient)?;
    let model_id = a.model.clone().unwrap_or_else(|| cfg.model.id());
    let all = store.embeddings(&model_id, &EmbeddingFilter::default(), true)?;
    let by_id: HashMap<i64, &EmbeddingRow> = all.iter().map(|r| (r.id, r)).collect();
    let probes: Vec<(ProbeColumn, Option<Probe>)> = cfg.lookup.probes.iter().map(|p| probe(p, &model_id)).collect();

    let series = store.patient_series(&patient.patient_key, &model_id)?;
    let mut timepoints = Vec::new();
    let mut not_shown = 0;
    // (date, embedding) of each encoded acquired timepoint, for the neighbour query.
    let mut encoded: Vec<&EmbeddingRow> = Vec::new();
    for s in &series {
        let Some(input) = &s.model_input_path else {
            not_shown += 1;
            continue;
        };
        let emb = s.embedding_id.and_then(|id| by_id.get(&id).copied());
        encoded.extend(emb);
        let (png, err) = draw(Path::new(input), &display_date(s.date.as_deref()), false, &cfg);
        let note = emb.is_none().then(|| format!("not encoded by model {model_id} (series state: {})", s.state));
        timepoints.push(Timepoint {
            kind: ScanKind::Acquired,
            date: s.date.clone(),
            age: s.age,
            series_uid: Some(s.series_uid.clone()),
            description: s.description.clone(),
            note,
            preview_png: png,
            preview_error: err,
            scores: scores(&probes, emb.map(|e| e.y_sem.as_slice())),
        });
    }
    for syn in store.synthetic_of_patient(&patient.patient_key)? {
        // A planned fill has no volume yet.
        if syn.state == SyntheticState::Planned {
            continue;
        }
        let from = syn.from_embedding.and_then(|id| by_id.get(&id).copied());
        let to = syn.to_embedding.and_then(|id| by_id.get(&id).copied());
        let age = match (from.and_then(|f| f.age), to.and_then(|t| t.age), syn.alpha) {
            (Some(f), Some(t), Some(al)) => Some(f + al * (t - f)),
            _ => None,
        };
        let when = |e: Option<&EmbeddingRow>| e.map(|e| display_date(e.date.as_deref()));
        let mut note = match (when(from), when(to), syn.alpha) {
            (Some(f), Some(t), Some(al)) => format!("Interpolated between the scans of {f} and {t} (α = {al:.2})."),
            _ => "Interpolated by the model.".into(),
        };
        if syn.state != SyntheticState::Written {
            note.push_str(&format!(" State: {}.", syn.state.as_str()));
        }
        if let Some(m) = syn.model_id.as_deref().filter(|m| *m != model_id) {
            note.push_str(&format!(" Made by model {m}."));
        }
        if let Some(n) = &syn.state_note {
            note.push_str(&format!(" {n}"));
        }
        // Stored as YYYY-MM-DD; the timeline orders DICOM-style YYYYMMDD dates.
        let date = syn.target_date.as_deref().map(|d| dates::parse(d).map(dates::dicom).unwrap_or_else(|| d.into()));
        let (png, err) = draw(Path::new(&syn.path), &display_date(date.as_deref()), true, &cfg);
        let no_codes = vec![Score::Missing { reason: "not encoded".into() }; probes.len()];
        timepoints.push(Timepoint {
            kind: ScanKind::Synthetic,
            date,
            age,
            series_uid: syn.dicom_series_uid.clone(),
            description: None,
            note: Some(note),
            preview_png: png,
            preview_error: err,
            scores: no_codes,
        });
    }

    timepoints.sort_by(timeline_order);
    let neighbours = nearest(&all, &encoded, &patient.patient_key, a.neighbours, &model_id);
    let model_version = match &neighbours {
        Neighbours::Found { model_version, .. } => Some(model_version.clone()),
        Neighbours::Unavailable { .. } => None,
    };
    let page = ReportInput {
        patient: patient.patient_id.clone().unwrap_or_else(|| patient.patient_key.clone()),
        model_id,
        model_version,
        generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        timepoints,
        series_not_shown: not_shown,
        neighbours,
        probes: probes.into_iter().map(|(c, _)| c).collect(),
    };
    let html = render(&page);
    crate::nifti::write_atomic(&a.output, html.as_bytes())
        .with_context(|| format!("writing {}", a.output.display()))?;
    if a.json {
        let mut v = serde_json::to_value(&page)?;
        v["output"] = serde_json::json!(a.output);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let hits = match &page.neighbours {
            Neighbours::Found { hits, .. } => hits.len(),
            Neighbours::Unavailable { .. } => 0,
        };
        println!(
            "{}: {} timepoint(s), {hits} neighbour(s), {} probe(s)",
            a.output.display(),
            page.timepoints.len(),
            page.probes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The one stored patient `id` names; an error naming it when none or several (one PatientID, two issuers) do.
fn one_patient(store: &Store, id: &str) -> anyhow::Result<PatientRef> {
    let mut found = store.find_patients(id)?;
    match found.len() {
        0 => bail!("patient {id}: not in the store"),
        1 => Ok(found.remove(0)),
        n => {
            let keys: Vec<&str> = found.iter().map(|p| p.patient_key.as_str()).collect();
            bail!("patient {id}: {n} patients have this PatientID (issuers differ); name one by its key: {keys:?}")
        }
    }
}

/// The preview PNG of the volume at `path`, or why there is none.
fn draw(path: &Path, label: &str, synthetic: bool, cfg: &Config) -> (Option<Vec<u8>>, Option<String>) {
    let drawn = crate::nifti::read_nifti_limited(path, &cfg.limits)
        .map_err(|e| e.to_string())
        .and_then(|v| preview_png(&v, label, synthetic).map_err(|e| format!("{}: {e}", path.display())));
    match drawn {
        Ok(png) => (Some(png), None),
        Err(e) => {
            tracing::warn!(error = %e, "no preview");
            (None, Some(e))
        }
    }
}

/// A configured probe file: its column, and the probe when it applies to `model_id`'s embeddings.
fn probe(path: &Path, model_id: &str) -> (ProbeColumn, Option<Probe>) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match load_probe(path) {
        Err(e) => {
            (ProbeColumn { name, target: String::new(), kind: None, classes: vec![], error: Some(e.to_string()) }, None)
        }
        Ok(p) => {
            let error = (p.meta.model != model_id)
                .then(|| format!("fitted on model {}, this report uses model {model_id}", p.meta.model));
            let col = ProbeColumn {
                name,
                target: p.meta.target.clone(),
                kind: Some(p.meta.kind),
                classes: p.meta.classes.clone(),
                error: error.clone(),
            };
            (col, error.is_none().then_some(p))
        }
    }
}

/// Each probe's score of one y_sem (None: the timepoint has no codes of this model).
fn scores(probes: &[(ProbeColumn, Option<Probe>)], y_sem: Option<&[f32]>) -> Vec<Score> {
    probes
        .iter()
        .map(|(col, p)| {
            let missing = |r: &str| Score::Missing { reason: r.to_string() };
            let (Some(p), Some(y)) = (p, y_sem) else {
                return missing(if col.error.is_some() { "probe not applied" } else { "not encoded" });
            };
            if y.len() != p.dim() {
                return missing(&format!("code has {} values, the probe {}", y.len(), p.dim()));
            }
            let row: Vec<f64> = y.iter().map(|&x| f64::from(x)).collect();
            let score = p.score(&row)[0];
            let probability = (p.meta.kind == ProbeKind::Logistic).then(|| sigmoid(score));
            Score::Value { score, probability }
        })
        .collect()
}

/// The `n` stored scans of other patients nearest to the latest of `encoded` (by date, then id), among
/// embeddings of the same model id and version.
fn nearest(all: &[EmbeddingRow], encoded: &[&EmbeddingRow], patient_key: &str, n: usize, model: &str) -> Neighbours {
    let Some(query) =
        encoded.iter().max_by(|a, b| (a.date.is_some(), &a.date, a.id).cmp(&(b.date.is_some(), &b.date, b.id)))
    else {
        return Neighbours::Unavailable { reason: format!("no scan of this patient is encoded by model {model}") };
    };
    let dim = query.y_sem.len();
    let candidates: Vec<&EmbeddingRow> = all
        .iter()
        .filter(|r| r.model_version == query.model_version && r.patient_key != patient_key && r.y_sem.len() == dim)
        .collect();
    let mut matrix: Vec<f32> = Vec::with_capacity(candidates.len() * dim);
    for r in &candidates {
        let at = matrix.len();
        matrix.extend_from_slice(&r.y_sem);
        normalise(&mut matrix[at..]);
    }
    let mut q = query.y_sem.clone();
    normalise(&mut q);
    let hits = top_k(&matrix, dim, &q, n, |_| true)
        .into_iter()
        .map(|h| {
            let r = candidates[h.index];
            Neighbour {
                series_uid: r.series_uid.clone(),
                patient: r.patient_id.clone().unwrap_or_else(|| r.patient_key.clone()),
                date: r.date.clone(),
                age: r.age,
                description: r.description.clone(),
                score: h.score,
            }
        })
        .collect();
    Neighbours::Found {
        query_series_uid: query.series_uid.clone(),
        query_date: query.date.clone(),
        model_version: query.model_version.clone(),
        candidates: candidates.len(),
        hits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, key: &str, date: &str, version: &str, y: [f32; 2]) -> EmbeddingRow {
        EmbeddingRow {
            id,
            series_uid: format!("2.25.{id}"),
            study_uid: format!("2.25.{id}0"),
            patient_id: Some(key.trim_start_matches("id:\\").into()),
            issuer: None,
            patient_key: key.into(),
            date: Some(date.into()),
            study_date: Some(date.into()),
            age: Some(70.0),
            modality: Some("MR".into()),
            description: None,
            model_id: "demo".into(),
            model_version: version.into(),
            steps: Some(10),
            preprocess_hash: "ph".into(),
            codes_path: "/c".into(),
            y_sem: y.to_vec(),
        }
    }

    #[test]
    fn neighbours_of_the_latest_scan_exclude_the_patient_and_other_versions() {
        let all = vec![
            row(1, "id:\\A", "20220101", "v1", [1.0, 0.0]),
            row(2, "id:\\A", "20190101", "v1", [0.0, 1.0]),
            row(3, "id:\\B", "20200101", "v1", [2.0, 0.1]),
            row(4, "id:\\C", "20200101", "v1", [0.0, 3.0]),
            row(5, "id:\\D", "20200101", "v2", [1.0, 0.0]),
            row(6, "id:\\E", "20200101", "v1", [1.0, 1.0]),
        ];
        let own: Vec<&EmbeddingRow> = vec![&all[1], &all[0]];
        let Neighbours::Found { query_series_uid, candidates, hits, model_version, .. } =
            nearest(&all, &own, "id:\\A", 2, "demo")
        else {
            panic!("no neighbours")
        };
        assert_eq!((query_series_uid.as_str(), model_version.as_str(), candidates), ("2.25.1", "v1", 3));
        let got: Vec<(&str, f32)> = hits.iter().map(|h| (h.patient.as_str(), h.score)).collect();
        let b = 2.0 / (4.0f32 + 0.01).sqrt();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, got[1].0), ("B", "E"));
        assert!((got[0].1 - b).abs() < 1e-6 && (got[1].1 - 0.5f32.sqrt()).abs() < 1e-6, "{got:?}");
        assert!(matches!(nearest(&all, &[], "id:\\A", 2, "demo"), Neighbours::Unavailable { .. }));
    }
}
