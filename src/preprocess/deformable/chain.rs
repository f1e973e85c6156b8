//! A chain of transforms (affines and displacement fields) that maps points of a reference space to a source
//! image's space, applied in the order listed — ANTs' `-t warp.nii.gz -t affine.txt` order: a template point
//! goes through the warp, then the affine, to land in the native scan. [`Chain::inverse`] reverses the order and
//! inverts each step (fields by fixed-point inversion unless the record names a stored inverse).
//!
//! ldae's own record of a deformable registration (`transform.json` in `ldae register --deformable`'s folder) is
//! a [`ChainRecord`]: the forward and inverse step lists, by file name relative to the record.

use std::path::{Path, PathBuf};

use ndarray::{Array3, Zip};
use serde::{Deserialize, Serialize};

use super::field::Field;
use super::itk_field::read_field;
use crate::limits::Limits;
use crate::preprocess::resample::{Grid, Interp, Sampler};
use crate::preprocess::transform::Transform;
use crate::preprocess::{invalid, PreprocessError};
use crate::volume::{Affine, Volume};

/// One step of a chain.
#[derive(Debug, Clone)]
pub enum Step {
    /// A world → world affine (RAS mm).
    Affine(Affine),
    /// `p ↦ p + u(p)`.
    Field(Box<Field>),
}

/// Steps applied in order to a point of the reference space.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub steps: Vec<Step>,
}

/// A step of a [`ChainRecord`]: a file (ITK text / ldae JSON affine, or a displacement-field NIfTI) and whether
/// to apply its inverse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRef {
    pub file: String,
    #[serde(default)]
    pub invert: bool,
}

/// ldae's record of a composite transform from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainRecord {
    pub from: String,
    pub to: String,
    /// `from` → `to` points (e.g. template → native: the warp, then the affine).
    pub forward: Vec<StepRef>,
    /// `to` → `from` points (the inverse affine, then the inverse warp).
    pub inverse: Vec<StepRef>,
}

fn is_field_file(path: &Path) -> bool {
    let n = path.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

impl Chain {
    /// Map a reference-space point through every step.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        self.steps.iter().fold(p, |p, s| match s {
            Step::Affine(a) => a.apply(p),
            Step::Field(f) => f.apply(p),
        })
    }

    /// The inverse chain: steps reversed, each inverted.
    pub fn inverse(&self, iterations: usize, limits: &Limits) -> Result<Chain, PreprocessError> {
        let mut steps = Vec::with_capacity(self.steps.len());
        for s in self.steps.iter().rev() {
            steps.push(match s {
                Step::Affine(a) => Step::Affine(a.inverse().ok_or_else(|| invalid("transform", "singular affine"))?),
                Step::Field(f) => Step::Field(Box::new(f.invert(iterations, limits)?)),
            });
        }
        Ok(Chain { steps })
    }

    /// One step from a file: a displacement field (`.nii`, `.nii.gz`) or an affine (ITK text or ldae JSON).
    pub fn read_step(path: &Path, invert: bool, limits: &Limits) -> Result<Step, PreprocessError> {
        if is_field_file(path) {
            let f = read_field(path, limits)?;
            return Ok(Step::Field(Box::new(if invert { f.invert(30, limits)? } else { f })));
        }
        let t = Transform::read(path)?;
        let m = if invert { t.inverse().map(|t| t.matrix) } else { Some(t.matrix) };
        Ok(Step::Affine(m.ok_or_else(|| invalid(path.display().to_string(), "singular affine"))?))
    }

    /// A chain from files in the order given (each inverted when `inverse`, and the order reversed).
    pub fn read_files(paths: &[PathBuf], inverse: bool, limits: &Limits) -> Result<Chain, PreprocessError> {
        let mut steps = Vec::with_capacity(paths.len());
        for p in paths {
            steps.push(Self::read_step(p, inverse, limits)?);
        }
        if inverse {
            steps.reverse();
        }
        Ok(Chain { steps })
    }

    /// A chain from a transform file: a [`ChainRecord`] (its forward or inverse list), or a single affine (ITK
    /// text or ldae JSON [`Transform`], inverted when `inverse`).
    pub fn read(path: &Path, inverse: bool, limits: &Limits) -> Result<Chain, PreprocessError> {
        if !is_field_file(path) {
            let text = std::fs::read_to_string(path)
                .map_err(|source| PreprocessError::Io { path: path.to_path_buf(), source })?;
            if let Ok(rec) = serde_json::from_str::<ChainRecord>(&text) {
                let dir = path.parent().unwrap_or(Path::new("."));
                let list = if inverse { &rec.inverse } else { &rec.forward };
                let mut steps = Vec::with_capacity(list.len());
                for s in list {
                    if Path::new(&s.file).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                        return Err(PreprocessError::TransformFormat {
                            path: path.to_path_buf(),
                            reason: format!("step {:?} is not a plain file name beside the record", s.file),
                        });
                    }
                    steps.push(Self::read_step(&dir.join(&s.file), s.invert, limits)?);
                }
                return Ok(Chain { steps });
            }
        }
        Self::read_files(&[path.to_path_buf()], inverse, limits)
    }

    /// Resample `src` onto `grid`: output voxel `v` gets `src` at `self.apply(grid.affine · v)`, `fill` outside.
    pub fn resample(&self, src: &Volume, grid: &Grid, interp: Interp, fill: f32) -> Result<Volume, PreprocessError> {
        let w2v = src.affine.inverse().ok_or_else(|| invalid("resample", "the source affine is singular"))?;
        let data = src.data.as_standard_layout().to_owned();
        let s = Sampler::new(&data).ok_or_else(|| invalid("resample", "source layout"))?;
        let samplers: Vec<Option<super::field::FieldSampler>> = self
            .steps
            .iter()
            .map(|st| match st {
                Step::Field(f) => Some(f.sampler()),
                Step::Affine(_) => None,
            })
            .collect();
        let mut out = Array3::<f32>::zeros(grid.shape);
        Zip::indexed(&mut out).par_for_each(|(i, j, k), o| {
            let mut p = grid.affine.apply([i as f64, j as f64, k as f64]);
            for (st, sm) in self.steps.iter().zip(&samplers) {
                p = match (st, sm) {
                    (Step::Affine(a), _) => a.apply(p),
                    (Step::Field(_), Some(fs)) => {
                        let u = fs.at(p);
                        [p[0] + u[0], p[1] + u[1], p[2] + u[2]]
                    }
                    (Step::Field(f), None) => f.apply(p),
                };
            }
            let v = w2v.apply(p);
            *o = match interp {
                Interp::Linear => s.linear(v).map(|x| x as f32),
                Interp::Nearest => s.nearest(v),
            }
            .unwrap_or(fill);
        });
        let mut provenance = src.provenance.clone();
        provenance.notes.push(format!("resampled ({interp:?}) through {} transform(s)", self.steps.len()));
        Ok(Volume { data: out, affine: grid.affine, provenance })
    }
}

/// Write a deformable registration as a folder ANTs tools and ldae both read: `affine.txt` (ITK text),
/// `affine.json` (ldae), `warp.nii.gz` and `inverse_warp.nii.gz` (ITK displacement fields) and the
/// [`ChainRecord`] `transform.json` (forward: the warp then the affine; inverse: the inverse affine then the
/// inverse warp). Returns the record's path. `dir` is created if missing.
pub fn write_chain_folder(
    dir: &Path,
    affine: &Transform,
    forward: &Field,
    inverse: &Field,
) -> Result<PathBuf, PreprocessError> {
    std::fs::create_dir_all(dir).map_err(|source| PreprocessError::Io { path: dir.to_path_buf(), source })?;
    affine.write(&dir.join("affine.txt"))?;
    affine.write(&dir.join("affine.json"))?;
    super::itk_field::write_field(&dir.join("warp.nii.gz"), forward)?;
    super::itk_field::write_field(&dir.join("inverse_warp.nii.gz"), inverse)?;
    let step = |file: &str, invert| StepRef { file: file.into(), invert };
    let record = ChainRecord {
        from: affine.from.clone(),
        to: affine.to.clone(),
        forward: vec![step("warp.nii.gz", false), step("affine.json", false)],
        inverse: vec![step("affine.json", true), step("inverse_warp.nii.gz", false)],
    };
    let path = dir.join("transform.json");
    let json = serde_json::to_string_pretty(&record)
        .map_err(|e| invalid(path.display().to_string(), format!("cannot serialise the chain record: {e}")))?;
    crate::nifti::write_atomic(&path, json.as_bytes())
        .map_err(|source| PreprocessError::Io { path: path.clone(), source })?;
    Ok(path)
}

/// Map a template-space volume onto a native grid with a stored template → native transform: an affine (ITK text
/// or ldae JSON) or a [`ChainRecord`] (its inverse list is used: native → template points).
pub fn unwarp(
    template_space: &Volume,
    native_grid: &Grid,
    transform: &Path,
    limits: &Limits,
) -> Result<Volume, PreprocessError> {
    let chain = Chain::read(transform, true, limits)?;
    chain.resample(template_space, native_grid, Interp::Linear, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_chain_and_invert() {
        let dir = tempfile::tempdir().unwrap();
        let l = Limits::default();
        let grid = Grid { shape: [10, 10, 10], affine: Affine::from_spacing_origin([2.0; 3], [-10.0; 3]) };
        let warp = Field::fill_with(grid, &l, |_, _, _| [1.0, 0.0, 0.0]).unwrap();
        let inv = Field::fill_with(grid, &l, |_, _, _| [-1.0, 0.0, 0.0]).unwrap();
        super::super::itk_field::write_field(&dir.path().join("warp.nii.gz"), &warp).unwrap();
        super::super::itk_field::write_field(&dir.path().join("inverse_warp.nii.gz"), &inv).unwrap();
        let t = Transform {
            from: "template".into(),
            to: "native".into(),
            matrix: Affine::from_spacing_origin([1.0; 3], [0.0, 5.0, 0.0]),
        };
        t.write(&dir.path().join("affine.txt")).unwrap();
        let step = |f: &str, invert| StepRef { file: f.into(), invert };
        let rec = ChainRecord {
            from: "template".into(),
            to: "native".into(),
            forward: vec![step("warp.nii.gz", false), step("affine.txt", false)],
            inverse: vec![step("affine.txt", true), step("inverse_warp.nii.gz", false)],
        };
        let path = dir.path().join("transform.json");
        std::fs::write(&path, serde_json::to_string(&rec).unwrap()).unwrap();
        let fwd = Chain::read(&path, false, &l).unwrap();
        let p = fwd.apply([0.0, 0.0, 0.0]);
        assert!((p[0] - 1.0).abs() < 1e-6 && (p[1] - 5.0).abs() < 1e-6, "{p:?}");
        let back = Chain::read(&path, true, &l).unwrap().apply(p);
        assert!(back.iter().all(|v| v.abs() < 1e-5), "{back:?}");
        let numeric = fwd.inverse(30, &l).unwrap().apply(p);
        assert!(numeric.iter().all(|v| v.abs() < 1e-4), "{numeric:?}");
        let evil = ChainRecord { forward: vec![step("../etc/passwd", false)], ..rec };
        std::fs::write(&path, serde_json::to_string(&evil).unwrap()).unwrap();
        assert!(Chain::read(&path, false, &l).is_err());
    }
}
