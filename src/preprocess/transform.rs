//! [`Transform`]: the only way geometry moves between spaces — a 4×4 affine in RAS+ mm that maps points of the
//! space `from` to the space `to`, with its inverse, composition, our JSON form and the ITK/ANTs text form.
//!
//! Convention (the same as ITK's and elastix's registration output): a registration of a native scan (moving) to
//! the template (fixed) yields a transform **from `template` to `native`**: it takes a template point to the
//! native point that matches it, which is what resampling the native scan onto the template grid needs.
//!
//! ITK text (`#Insight Transform File V1.0`, `AffineTransform_double_3_3`, also written by ANTs as `.txt`) is in
//! LPS: `y = M (x - c) + c + t` with `Parameters: M (row-major, 9) t (3)` and `FixedParameters: c`. Converting
//! from RAS flips the first two axes: `M_lps = F M_ras F`, `offset_lps = F offset_ras`, `F = diag(-1,-1,1)`.
//! elastix's `TransformParameters.0.txt` of an `AffineTransform` uses the same parameters and
//! `CenterOfRotationPoint` (LPS) and is read by [`Transform::from_elastix`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PreprocessError;
use crate::volume::{Affine, Volume};

/// The name of the template space.
pub const TEMPLATE_SPACE: &str = "template";
/// The name of a subject's native (scanner) space.
pub const NATIVE_SPACE: &str = "native";

/// A 4×4 affine in RAS+ mm mapping points of `from` to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    pub from: String,
    pub to: String,
    pub matrix: Affine,
}

fn fmt(path: &Path, reason: impl Into<String>) -> PreprocessError {
    PreprocessError::TransformFormat { path: path.to_path_buf(), reason: reason.into() }
}

/// `F · m · F` with `F = diag(-1,-1,1,1)`: RAS ↔ LPS for a world → world matrix (its own inverse).
pub fn flip_ras_lps(m: &Affine) -> Affine {
    let f = [-1.0, -1.0, 1.0, 1.0];
    let mut out = *m;
    for (r, row) in out.0.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v *= f[r] * f[c];
        }
    }
    out
}

impl Transform {
    /// Mean and maximum distance (mm) between where `self` and `other` send the centres of the mask's voxels
    /// (value > 0.5), sampling the voxels with `(i + j + k) % stride == 0`: the accuracy of a registration
    /// against a known transform. NaN when the sample holds no voxel, so a check on it fails rather than passes.
    pub fn displacement_over(&self, other: &Transform, mask: &Volume, stride: usize) -> (f64, f64) {
        let stride = stride.max(1);
        mean_max_distance(mask.data.indexed_iter().filter(|((i, j, k), v)| **v > 0.5 && (i + j + k) % stride == 0).map(
            |((i, j, k), _)| {
                let p = mask.affine.apply([i as f64, j as f64, k as f64]);
                (self.apply(p), other.apply(p))
            },
        ))
    }

    /// The identity from `from` to `to`.
    pub fn identity(from: &str, to: &str) -> Self {
        Transform { from: from.into(), to: to.into(), matrix: Affine::identity() }
    }

    /// Map a point of `from` to `to`.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        self.matrix.apply(p)
    }

    /// The inverse (from `to` back to `from`); `None` if the matrix is singular.
    pub fn inverse(&self) -> Option<Transform> {
        Some(Transform { from: self.to.clone(), to: self.from.clone(), matrix: self.matrix.inverse()? })
    }

    /// `other ∘ self`: first `self` (from → to), then `other` (to → other.to).
    pub fn then(&self, other: &Transform) -> Transform {
        Transform { from: self.from.clone(), to: other.to.clone(), matrix: other.matrix.matmul(&self.matrix) }
    }

    /// Our JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse our JSON form.
    pub fn from_json(path: &Path, text: &str) -> Result<Self, PreprocessError> {
        let t: Transform = serde_json::from_str(text).map_err(|e| fmt(path, e.to_string()))?;
        t.check(path)?;
        Ok(t)
    }

    fn check(&self, path: &Path) -> Result<(), PreprocessError> {
        let m = &self.matrix.0;
        if m.iter().flatten().any(|v| !v.is_finite()) || m[3] != [0.0, 0.0, 0.0, 1.0] {
            return Err(fmt(path, "matrix has non-finite values or a last row other than 0 0 0 1"));
        }
        if self.matrix.inverse().is_none() {
            return Err(fmt(path, "matrix is singular"));
        }
        Ok(())
    }

    /// ITK/ANTs affine text (LPS, centre 0). The space names are not part of the format.
    pub fn to_itk_text(&self) -> String {
        let m = flip_ras_lps(&self.matrix).0;
        let mut params: Vec<String> = Vec::with_capacity(12);
        for row in m.iter().take(3) {
            for v in row.iter().take(3) {
                params.push(format!("{v:.17e}"));
            }
        }
        for row in m.iter().take(3) {
            params.push(format!("{:.17e}", row[3]));
        }
        format!(
            "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n\
             Parameters: {}\nFixedParameters: 0 0 0\n",
            params.join(" ")
        )
    }

    /// Parse ITK/ANTs affine text (`AffineTransform_{double,float}_3_3` or `MatrixOffsetTransformBase_*_3_3`,
    /// one transform). `from`/`to` name the spaces (ITK files do not).
    pub fn from_itk_text(path: &Path, text: &str, from: &str, to: &str) -> Result<Self, PreprocessError> {
        if !text.trim_start().starts_with("#Insight Transform File") {
            return Err(fmt(path, "missing the '#Insight Transform File' header"));
        }
        let mut kind = None;
        let mut params: Option<Vec<f64>> = None;
        let mut fixed: Option<Vec<f64>> = None;
        let nums = |s: &str| -> Result<Vec<f64>, PreprocessError> {
            s.split_whitespace()
                .map(|w| w.parse::<f64>().map_err(|_| fmt(path, format!("{w:?} is not a number"))))
                .collect()
        };
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Transform:") {
                if kind.is_some() {
                    return Err(fmt(path, "more than one transform (only a single affine is supported)"));
                }
                kind = Some(rest.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("Parameters:") {
                params = Some(nums(rest)?);
            } else if let Some(rest) = line.strip_prefix("FixedParameters:") {
                fixed = Some(nums(rest)?);
            }
        }
        let kind = kind.ok_or_else(|| fmt(path, "no 'Transform:' line"))?;
        let ok_kinds = ["AffineTransform_double_3_3", "AffineTransform_float_3_3"];
        if !ok_kinds.contains(&kind.as_str()) && !kind.starts_with("MatrixOffsetTransformBase_") {
            return Err(fmt(path, format!("transform type {kind} is not a 3-D affine")));
        }
        let p = params.ok_or_else(|| fmt(path, "no 'Parameters:' line"))?;
        if p.len() != 12 {
            return Err(fmt(path, format!("{} parameters, expected 12", p.len())));
        }
        let c = fixed.unwrap_or_else(|| vec![0.0; 3]);
        if c.len() != 3 {
            return Err(fmt(path, format!("{} fixed parameters, expected 3", c.len())));
        }
        let lps = matrix_from_itk(&p, [c[0], c[1], c[2]]);
        let t = Transform { from: from.into(), to: to.into(), matrix: flip_ras_lps(&lps) };
        t.check(path)?;
        Ok(t)
    }

    /// Read an elastix `TransformParameters.*.txt` of an `AffineTransform` (LPS, fixed → moving).
    pub fn from_elastix(path: &Path, text: &str, from: &str, to: &str) -> Result<Self, PreprocessError> {
        let field = |name: &str| -> Option<&str> {
            text.lines().map(str::trim).find_map(|l| l.strip_prefix(&format!("({name} "))?.strip_suffix(')'))
        };
        let kind = field("Transform").ok_or_else(|| fmt(path, "no (Transform ...) entry"))?;
        if kind.trim_matches('"') != "AffineTransform" {
            return Err(fmt(path, format!("elastix transform {kind} is not AffineTransform")));
        }
        let nums = |s: &str| -> Result<Vec<f64>, PreprocessError> {
            s.split_whitespace()
                .map(|w| w.parse::<f64>().map_err(|_| fmt(path, format!("{w:?} is not a number"))))
                .collect()
        };
        let p = nums(field("TransformParameters").ok_or_else(|| fmt(path, "no TransformParameters"))?)?;
        let c = nums(field("CenterOfRotationPoint").unwrap_or("0 0 0"))?;
        if p.len() != 12 || c.len() != 3 {
            return Err(fmt(path, "expected 12 TransformParameters and 3 CenterOfRotationPoint values"));
        }
        let t = Transform {
            from: from.into(),
            to: to.into(),
            matrix: flip_ras_lps(&matrix_from_itk(&p, [c[0], c[1], c[2]])),
        };
        t.check(path)?;
        Ok(t)
    }

    /// Read a transform file: ITK text if it starts with `#Insight`, else our JSON.
    pub fn read(path: &Path) -> Result<Self, PreprocessError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PreprocessError::Io { path: path.to_path_buf(), source })?;
        if text.trim_start().starts_with("#Insight") {
            Self::from_itk_text(path, &text, TEMPLATE_SPACE, NATIVE_SPACE)
        } else {
            Self::from_json(path, &text)
        }
    }

    /// Write ITK text when the file name ends in `.txt` or `.tfm`, our JSON otherwise (atomically).
    pub fn write(&self, path: &Path) -> Result<(), PreprocessError> {
        let name = path.to_string_lossy().to_ascii_lowercase();
        let text = if name.ends_with(".txt") || name.ends_with(".tfm") { self.to_itk_text() } else { self.to_json() };
        crate::nifti::write_atomic(path, text.as_bytes())
            .map_err(|source| PreprocessError::Io { path: path.to_path_buf(), source })
    }
}

/// `y = M (x - c) + c + t` as one 4×4 matrix (whatever world convention the numbers are in).
fn matrix_from_itk(p: &[f64], c: [f64; 3]) -> Affine {
    let mut m = Affine::identity();
    for r in 0..3 {
        for k in 0..3 {
            m.0[r][k] = p[r * 3 + k];
        }
        m.0[r][3] = p[9 + r] + c[r] - (0..3).map(|k| p[r * 3 + k] * c[k]).sum::<f64>();
    }
    m
}

/// Mean and maximum Euclidean distance over pairs of points; (NaN, NaN) when there are none.
pub fn mean_max_distance(pairs: impl Iterator<Item = ([f64; 3], [f64; 3])>) -> (f64, f64) {
    let (mut sum, mut max, mut n) = (0.0f64, 0.0f64, 0usize);
    for (a, b) in pairs {
        let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
        sum += d;
        max = max.max(d);
        n += 1;
    }
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    (sum / n as f64, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transform {
        let m = Affine::from_columns([0.98, 0.1, -0.05], [-0.12, 1.05, 0.02], [0.03, -0.04, 0.93], [12.5, -7.25, 3.0]);
        Transform { from: TEMPLATE_SPACE.into(), to: NATIVE_SPACE.into(), matrix: m }
    }

    #[test]
    fn itk_text_round_trips() {
        let t = sample();
        let text = t.to_itk_text();
        let back = Transform::from_itk_text(Path::new("t.txt"), &text, TEMPLATE_SPACE, NATIVE_SPACE).unwrap();
        assert!(back.matrix.max_abs_diff(&t.matrix) < 1e-12);
    }

    #[test]
    fn itk_lps_convention_and_centre() {
        // A pure LPS translation of (+1, +2, +3) with a centre that must not matter for a translation,
        // is RAS (-1, -2, +3).
        let text = "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n\
                    Parameters: 1 0 0 0 1 0 0 0 1 1 2 3\nFixedParameters: 10 20 30\n";
        let t = Transform::from_itk_text(Path::new("a.txt"), text, "a", "b").unwrap();
        assert_eq!(t.apply([0.0, 0.0, 0.0]), [-1.0, -2.0, 3.0]);
        // A scaling about an LPS centre c keeps c fixed: c_lps = (10, 20, 30) = RAS (-10, -20, 30).
        let text = text.replace("1 0 0 0 1 0 0 0 1 1 2 3", "2 0 0 0 2 0 0 0 2 0 0 0");
        let t = Transform::from_itk_text(Path::new("a.txt"), &text, "a", "b").unwrap();
        let p = t.apply([-10.0, -20.0, 30.0]);
        assert!((p[0] + 10.0).abs() < 1e-12 && (p[1] + 20.0).abs() < 1e-12 && (p[2] - 30.0).abs() < 1e-12);
    }

    #[test]
    fn elastix_parameters_are_read() {
        let text = "(Transform \"AffineTransform\")\n(NumberOfParameters 12)\n\
                    (TransformParameters 1 0 0 0 1 0 0 0 1 -4 5 6)\n(CenterOfRotationPoint 1 2 3)\n";
        let t = Transform::from_elastix(Path::new("TransformParameters.0.txt"), text, "template", "native").unwrap();
        assert_eq!(t.apply([0.0, 0.0, 0.0]), [4.0, -5.0, 6.0]);
    }

    #[test]
    fn inverse_and_json_round_trip() {
        let t = sample();
        let inv = t.inverse().unwrap();
        assert_eq!(inv.from, NATIVE_SPACE);
        let id = t.then(&inv);
        assert!(id.matrix.max_abs_diff(&Affine::identity()) < 1e-12);
        let back = Transform::from_json(Path::new("t.json"), &t.to_json()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn bad_text_is_a_clear_error() {
        let p = Path::new("bad.txt");
        for text in [
            "hello",
            "#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\nParameters: 1\n",
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 2 x\n",
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 0 0 0 0 0 0 0 0 0 0 0 0\n",
        ] {
            let e = Transform::from_itk_text(p, text, "a", "b").unwrap_err().to_string();
            assert!(e.starts_with("bad.txt"), "{e}");
        }
        assert!(Transform::from_json(p, "{\"from\":1}").is_err());
    }
}
