//! What `ldae similar`, `ldae export` and the store side of `ldae probe` share: the filter options, the store
//! beside the daemon, which model's embeddings a command uses (the configured model, or `--model ID[@VERSION]`;
//! embeddings of different models or versions are never mixed), the matrix cache beside the database, and a
//! query scan resolved to its y_sem (a stored series UID, a codes file, a model-input NIfTI or a DICOM folder,
//! the last two encoded now with the configured model).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::{Config, DeviceKind};
use crate::lookup::matrix::{CacheKey, Matrix};
use crate::store::{EmbeddingFilter, EmbeddingRow, Store};

/// Which stored scans a look-up considers (applied before ranking).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only scans of this patient (DICOM PatientID, or a patient key such as `id:ISSUER\ID`).
    #[arg(long)]
    pub patient: Option<String>,
    /// Only scans acquired on or after this date (YYYYMMDD or YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub since: Option<String>,
    /// Only scans acquired on or before this date (YYYYMMDD or YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub until: Option<String>,
    /// The model whose embeddings to use, `ID` or `ID@VERSION` (default: the configured `[model] dir`, whose
    /// folder name is the id and whose weights digest gives the version).
    #[arg(long)]
    pub model: Option<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> EmbeddingFilter {
        EmbeddingFilter {
            patient: self.patient.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            exclude_patient_key: None,
        }
    }
}

/// A date as the store keeps it (`YYYYMMDD`), from `YYYYMMDD` or `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<String, String> {
    let d: String = s.chars().filter(|c| *c != '-').collect();
    let ok = d.len() == 8
        && d.bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&d[4..6].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&d[6..8].parse::<u32>().unwrap_or(0));
    if ok {
        Ok(d)
    } else {
        Err(format!("{s:?} is not a date (YYYYMMDD or YYYY-MM-DD)"))
    }
}

/// A model as embeddings name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub id: String,
    pub version: String,
    /// Is it the configured model (the one that can encode a scan now)?
    pub configured: bool,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

/// The store and the model a look-up command works with.
pub struct Session {
    pub cfg: Config,
    pub store: Store,
    pub model: ModelRef,
}

/// The configured model's id and version, when one is installed.
fn configured_model(cfg: &Config) -> anyhow::Result<Option<ModelRef>> {
    if !cfg.model.dir.join("config.json").is_file() {
        return Ok(None);
    }
    let digest = crate::daemon::digest::model_digest(&cfg.model.dir).map_err(anyhow::Error::msg)?;
    let (id, version) = crate::daemon::digest::model_identity(&cfg.model.dir, &digest);
    Ok(Some(ModelRef { id, version, configured: true }))
}

impl Session {
    /// Open the store of `config` and settle the model (`--model`, else the configured one).
    pub fn open(config: &Path, model: Option<&str>) -> anyhow::Result<Session> {
        let cfg = Config::load(config)?;
        let store = Store::open_existing_at(&crate::store::Location::of(&cfg))?;
        let configured = configured_model(&cfg)?;
        let held = || -> anyhow::Result<String> {
            let m = store.embedding_models()?;
            Ok(if m.is_empty() {
                "the store holds no embeddings yet".into()
            } else {
                format!(
                    "the store holds embeddings of {}",
                    m.iter().map(|(id, n)| format!("{id} ({n})")).collect::<Vec<_>>().join(", ")
                )
            })
        };
        let model = match model {
            Some(m) => {
                let (id, version) = match m.split_once('@') {
                    Some((id, v)) => (id.to_string(), Some(v.to_string())),
                    None => (m.to_string(), None),
                };
                let is_conf = |c: &ModelRef| c.id == id && version.as_ref().is_none_or(|v| *v == c.version);
                let conf = configured.filter(is_conf);
                match (version, conf) {
                    (_, Some(c)) => c,
                    (Some(v), None) => ModelRef { id, version: v, configured: false },
                    (None, None) => {
                        let newest = store.embeddings(&id, &EmbeddingFilter::default(), false)?.pop();
                        let Some(r) = newest else { bail!("--model {id}: no embeddings of this model; {}", held()?) };
                        ModelRef { id, version: r.model_version, configured: false }
                    }
                }
            }
            None => match configured {
                Some(c) => c,
                None => bail!(
                    "no model installed at {} ([model] dir); name one with --model ID ({})",
                    cfg.model.dir.display(),
                    held()?
                ),
            },
        };
        if store.embeddings_generation(&model.id)?.count == 0 {
            bail!("no embeddings of model {model} in {}; {}", store.location(), held()?);
        }
        Ok(Session { cfg, store, model })
    }

    /// The model's embeddings that pass `filter`, in id order (only this model version).
    pub fn rows(&self, filter: &EmbeddingFilter, with_vectors: bool) -> anyhow::Result<Vec<EmbeddingRow>> {
        let mut rows = self.store.embeddings(&self.model.id, filter, with_vectors)?;
        let before = rows.len();
        rows.retain(|r| r.model_version == self.model.version);
        if rows.len() < before {
            tracing::info!("{} embeddings of other versions of {} left out", before - rows.len(), self.model.id);
        }
        Ok(rows)
    }

    /// The matrix cache file of this model version.
    pub fn cache_path(&self) -> PathBuf {
        let safe = crate::daemon::files::safe_component;
        self.cfg.paths.state.join("lookup").join(format!(
            "embeddings-{}-{}.f32",
            safe(&self.model.id),
            safe(&self.model.version)
        ))
    }

    /// The model's normalised embeddings: the cache when it is current, else rebuilt from the store (and saved;
    /// a cache that cannot be written is logged and the matrix used from memory).
    pub fn matrix(&self) -> anyhow::Result<Matrix> {
        let g = self.store.embeddings_generation(&self.model.id)?;
        let key = CacheKey {
            model_id: self.model.id.clone(),
            model_version: self.model.version.clone(),
            count: g.count,
            max_id: g.max_id,
        };
        let path = self.cache_path();
        match Matrix::open(&path, &key) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => tracing::debug!("{}: missing or stale, rebuilding", path.display()),
            Err(e) => tracing::warn!("{e}; rebuilding it"),
        }
        let mut rows = self.rows(&EmbeddingFilter::default(), true)?;
        rows.retain(|r| r.id <= key.max_id);
        if rows.is_empty() {
            let versions: Vec<String> = self
                .store
                .embeddings(&self.model.id, &EmbeddingFilter::default(), false)?
                .into_iter()
                .map(|r| r.model_version)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            bail!(
                "no embeddings of model {} (stored versions of {}: {})",
                self.model,
                self.model.id,
                versions.join(", ")
            );
        }
        let m = Matrix::from_rows(key, rows)?;
        if let Err(e) = m.write(&path) {
            tracing::warn!("could not save the matrix cache: {e}");
        }
        Ok(m)
    }

    /// The y_sem of `scan` (see the module doc) and its stored row when it is a stored scan.
    pub fn query(&self, scan: &str) -> anyhow::Result<Query> {
        let p = Path::new(scan);
        if p.is_dir() {
            let v = self.dicom_model_input(p)?;
            return Ok(Query { y_sem: self.encode(&v, p)?, stored: None });
        }
        if p.is_file() {
            if crate::cli::model::is_codes(p) {
                let f = crate::model::codes::load_codes(p)?;
                let y = f.codes.y_sem.flatten_all().and_then(|t| t.to_vec1::<f32>());
                let y = y.with_context(|| format!("{}: y_sem", p.display()))?;
                return Ok(Query { y_sem: y, stored: None });
            }
            let v = crate::nifti::read_nifti_limited(p, &self.cfg.limits)
                .with_context(|| format!("{scan}: not a codes file (.safetensors) nor a readable NIfTI"))?;
            return Ok(Query { y_sem: self.encode(&v, p)?, stored: None });
        }
        let all = self.store.embeddings_of_series(scan, true)?;
        if all.is_empty() {
            bail!("{scan}: no such file or folder, and no stored series with this UID has an embedding");
        }
        let Some(row) = all.iter().find(|r| r.model_id == self.model.id && r.model_version == self.model.version)
        else {
            let have: Vec<String> = all.iter().map(crate::lookup::export::model_label).collect();
            bail!("series {scan}: no embedding of model {} (it has {})", self.model, have.join(", "));
        };
        Ok(Query { y_sem: row.y_sem.clone(), stored: Some(row.clone()) })
    }

    /// Convert a DICOM folder (one series), register and mask it: the configured model's input.
    fn dicom_model_input(&self, dir: &Path) -> anyhow::Result<crate::volume::Volume> {
        let report =
            crate::dicom::convert::convert_paths_with(&[dir.to_path_buf()], &self.cfg.convert, &self.cfg.limits);
        let [c] = &report.converted[..] else {
            let why: Vec<String> = report.rejected.iter().map(|r| r.to_string()).collect();
            bail!(
                "{}: {} series converted, a query needs exactly one{}",
                dir.display(),
                report.converted.len(),
                if why.is_empty() { String::new() } else { format!(" (rejected: {})", why.join("; ")) }
            );
        };
        let pc = &self.cfg.preprocess;
        let template = crate::preprocess::template::Template::load(&pc.template, &pc.template_mask)
            .context("loading the template ([preprocess] template)")?;
        let mc = crate::model::config::ModelConfig::load(&self.cfg.model.dir.join("config.json"))?;
        let p = crate::preprocess::pipeline::preprocess_volume(&c.volume, &template, &mc, pc)
            .with_context(|| format!("preprocessing {}", dir.display()))?;
        Ok(p.model_input)
    }

    /// Encode a model input with the configured model (which must be the session's model).
    fn encode(&self, v: &crate::volume::Volume, what: &Path) -> anyhow::Result<Vec<f32>> {
        if !self.model.configured {
            bail!(
                "{}: encoding a scan needs the configured model, but the embeddings compared are of {} (drop --model)",
                what.display(),
                self.model
            );
        }
        let run = crate::cli::model::RunArgs {
            model: self.cfg.model.dir.clone(),
            steps: self.cfg.model.steps,
            device: match self.cfg.model.device {
                DeviceKind::Cpu => crate::cli::model::DeviceArg::Cpu,
                DeviceKind::Cuda => crate::cli::model::DeviceArg::Cuda,
            },
            dtype: crate::cli::model::DtypeArg::F32,
        };
        let model = crate::cli::model::load_model(&run)?;
        let bar = crate::cli::model::Bar::new();
        let codes = model
            .encode_volume(v, run.steps, &|s, d, t| bar.update(s, d, t))
            .with_context(|| format!("encoding {}", what.display()))?;
        let y = codes.y_sem.flatten_all().and_then(|t| t.to_vec1::<f32>());
        y.with_context(|| format!("{}: y_sem", what.display()))
    }
}

/// A query scan's code.
pub struct Query {
    pub y_sem: Vec<f32>,
    /// Its stored embedding row, when the scan is a stored series.
    pub stored: Option<EmbeddingRow>,
}
