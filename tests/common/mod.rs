//! Helpers shared by the tests: data and tool lookup with `require` (require.rs), the converter comparison
//! rule of shared/testdata/README.md, and running dcm2niix.
#![allow(dead_code, clippy::needless_range_loop)]

use std::path::{Path, PathBuf};

use ldae::Volume;

mod measure;
pub mod orthanc;
pub mod postgres;
mod require;
#[allow(unused_imports)]
pub use measure::*;
#[allow(unused_imports)]
pub use require::*;

/// The shipped default template (weights/templates): MNI ICBM152 2009a and its brain mask.
pub fn shipped_template() -> ldae::preprocess::template::Template {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/templates");
    ldae::preprocess::template::Template::load(
        &dir.join("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
        &dir.join("mni152_brain_mask_nilearn_res1.nii.gz"),
    )
    .expect("the shipped template (weights/templates) loads")
}

/// Small data shipped with the crate.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dicom")
}

/// How far one volume is from another after the index mapping.
#[derive(Debug, Clone, Copy)]
pub struct Diff {
    pub affine: f64,
    pub max_abs: f64,
    pub max_rel: f64,
    pub rmse: f64,
}

/// Compare `out` with `truth` by the corpus rule: `inv(A_truth)·A_out` must be a signed permutation plus an
/// integer shift mapping out's grid onto truth's grid; then affines (element-wise) and voxels (index by index).
pub fn compare(out: &Volume, truth: &Volume) -> Result<Diff, String> {
    let inv = truth.affine.inverse().ok_or("truth affine is singular")?;
    let m = inv.matmul(&out.affine);
    let mut perm = [[0i64; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            let v = m.0[r][c];
            let rv = v.round();
            if (v - rv).abs() > 1e-4 || rv.abs() > 1.0 {
                return Err(format!("inv(A_truth)·A_out is not a signed permutation: {:?}", m.0));
            }
            perm[r][c] = rv as i64;
        }
    }
    for r in 0..3 {
        if perm[r].iter().map(|v| v.abs()).sum::<i64>() != 1 || (0..3).map(|c| perm[c][r].abs()).sum::<i64>() != 1 {
            return Err(format!("not a permutation: {perm:?}"));
        }
    }
    let mut shift = [0i64; 3];
    for r in 0..3 {
        let t = m.0[r][3];
        if (t - t.round()).abs() > 1e-3 {
            return Err(format!("translation {t} is not an integer voxel shift"));
        }
        shift[r] = t.round() as i64;
    }
    // Affine agreement: A_out vs A_truth · (perm, shift), element-wise.
    let mut exact = ldae::Affine::identity();
    for r in 0..3 {
        for c in 0..3 {
            exact.0[r][c] = perm[r][c] as f64;
        }
        exact.0[r][3] = shift[r] as f64;
    }
    let affine = truth.affine.matmul(&exact).max_abs_diff(&out.affine);
    let so = out.shape();
    let st = truth.shape();
    let (mut max_abs, mut max_rel, mut sum2) = (0f64, 0f64, 0f64);
    for k in 0..so[2] {
        for j in 0..so[1] {
            for i in 0..so[0] {
                let p = [i as i64, j as i64, k as i64];
                let mut q = [0i64; 3];
                for r in 0..3 {
                    q[r] = (0..3).map(|c| perm[r][c] * p[c]).sum::<i64>() + shift[r];
                    if q[r] < 0 || q[r] >= st[r] as i64 {
                        return Err(format!("shape mismatch: out {so:?} maps outside truth {st:?}"));
                    }
                }
                let a = out.data[[i, j, k]] as f64;
                let b = truth.data[[q[0] as usize, q[1] as usize, q[2] as usize]] as f64;
                let d = (a - b).abs();
                max_abs = max_abs.max(d);
                max_rel = max_rel.max(d / b.abs().max(1.0));
                sum2 += d * d;
            }
        }
    }
    if so.iter().product::<usize>() != st.iter().product::<usize>() {
        return Err(format!("shape mismatch: out {so:?}, truth {st:?}"));
    }
    let n = so.iter().product::<usize>().max(1) as f64;
    Ok(Diff { affine, max_abs, max_rel, rmse: (sum2 / n).sqrt() })
}

/// Tolerances of one case, from its `expect.txt`.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub max_abs: Option<f64>,
    pub rmse: Option<f64>,
}

/// Lossless: 1e-4 relative. Lossy: `max|value - truth| <= A and RMSE(value - truth) <= B` from expect.txt.
pub fn tolerance(expect: &str) -> Tolerance {
    let num_after = |key: &str| -> Option<f64> {
        let i = expect.find(key)? + key.len();
        let rest = expect[i..].trim_start_matches([' ', '<', '=']);
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    Tolerance { max_abs: num_after("max|value - truth|"), rmse: num_after("RMSE(value - truth)") }
}

/// Check a diff against the rule (affine ≤ 1e-3 mm; voxels ≤ 1e-4 relative, or the lossy limits).
pub fn check(d: &Diff, tol: &Tolerance) -> Result<(), String> {
    if d.affine > 1e-3 {
        return Err(format!("affine differs by {} mm", d.affine));
    }
    match (tol.max_abs, tol.rmse) {
        (Some(a), Some(r)) => {
            if d.max_abs > a || d.rmse > r {
                return Err(format!("lossy: max {} (limit {a}), rmse {} (limit {r})", d.max_abs, d.rmse));
            }
        }
        _ => {
            if d.max_rel > 1e-4 {
                return Err(format!("voxels differ: max abs {}, max rel {}", d.max_abs, d.max_rel));
            }
        }
    }
    Ok(())
}

/// The DICOM files of a case folder (everything but truths, references and expect.txt).
pub fn dicom_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read case dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_file()
                && !n.ends_with(".nii.gz")
                && !n.ends_with(".txt")
                && !n.ends_with(".md")
                && !n.ends_with(".json")
        })
        .collect();
    v.sort();
    v
}

/// Truth volumes of a case folder.
pub fn truths(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read case dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("_truth")))
        .collect();
    v.sort();
    v
}

/// What dcm2niix did with one folder: its exit status, the .nii files it wrote, and what it said.
pub struct Dcm2niix {
    pub success: bool,
    pub outputs: Vec<PathBuf>,
    pub messages: String,
}

/// Run dcm2niix on a folder of DICOM files (copied so that truths are not in it).
pub fn run_dcm2niix(files: &[PathBuf], work: &Path) -> Dcm2niix {
    let input = work.join("in");
    let out = work.join("out");
    std::fs::create_dir_all(&input).expect("mkdir");
    std::fs::create_dir_all(&out).expect("mkdir");
    for (n, f) in files.iter().enumerate() {
        std::fs::copy(f, input.join(format!("f{n:05}.dcm"))).expect("copy");
    }
    let o = std::process::Command::new("dcm2niix")
        .args(["-z", "n", "-b", "n", "-f", "%s_%e_%k", "-o"])
        .arg(&out)
        .arg(&input)
        .output()
        .expect("run dcm2niix");
    let mut outputs: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("read out")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "nii"))
        .collect();
    outputs.sort();
    let messages = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    Dcm2niix { success: o.status.success(), outputs, messages }
}
