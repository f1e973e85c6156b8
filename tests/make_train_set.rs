//! `make-train-set` end to end: the real binary on the shipped MNI 2009a template (weights/templates), at 4 mm
//! so that it takes seconds. Checks that a seed fixes every byte, that the volumes are model inputs exactly as
//! `ldae preprocess` lays them out (shape, grid, [0, 1]), that the labels describe the files, and that the age
//! variable drives atrophy: the dark (CSF) fraction of the ventricle region grows with age.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use ldae::nifti::read_nifti;
use ldae::preprocess::mask::apply_mask;
use ldae::preprocess::model_input::model_input;
use ldae::Volume;

mod common;

const PIXDIM: &str = "4";
const SHAPE: [usize; 3] = [48, 56, 48];

fn generate(dir: &Path, seed: u64, extra: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_make-train-set"))
        .args(["--pixdim", PIXDIM, "--shape", "48,56,48", "--subjects", "4", "--sessions", "3"])
        .args(["--seed", &seed.to_string(), "-o"])
        .arg(dir)
        .args(extra)
        .output()
        .expect("make-train-set runs");
    assert!(out.status.success(), "make-train-set failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Every file of a folder by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect()
}

struct Row {
    id: String,
    subject: String,
    session: usize,
    age: f64,
    split: String,
    file: String,
}

fn labels(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,subject,session,age,atrophy,split,file"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 7, "{l}");
            Row {
                id: f[0].into(),
                subject: f[1].into(),
                session: f[2].parse().unwrap(),
                age: f[3].parse().unwrap(),
                split: f[5].into(),
                file: f[6].into(),
            }
        })
        .collect()
}

/// Fraction of brain voxels in the ventricle region (MNI x ±16, y −30…+15, z 0…22 mm) among the darkest 15 % of
/// the brain: a rank, so the scanner's monotone contrast changes do not move it.
fn ventricle_csf_fraction(v: &Volume) -> f64 {
    let inv = v.affine.inverse().unwrap();
    let mut brain: Vec<f32> = v.data.iter().copied().filter(|x| *x > 0.0).collect();
    brain.sort_by(|a, b| a.total_cmp(b));
    let dark = brain[brain.len() * 15 / 100];
    let (mut n, mut d) = (0usize, 0usize);
    let lo = inv.apply([-16.0, -30.0, 0.0]);
    let hi = inv.apply([16.0, 15.0, 22.0]);
    for ((i, j, k), &x) in v.data.indexed_iter() {
        let p = [i as f64, j as f64, k as f64];
        if (0..3).all(|a| p[a] >= lo[a].min(hi[a]) && p[a] <= lo[a].max(hi[a])) && x > 0.0 {
            n += 1;
            d += (x < dark) as usize;
        }
    }
    d as f64 / n as f64
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn same_seed_same_bytes_and_valid_model_inputs() {
    let (a, b, c) = (tmp(), tmp(), tmp());
    let out = generate(a.path(), 11, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("[12/12]"), "progress is reported on stderr");
    generate(b.path(), 11, &[]);
    generate(c.path(), 12, &[]);
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(fa.len(), 12 + 2, "12 volumes + labels.csv + labels.json: {:?}", fa.keys());
    assert_eq!(fa, fb, "same seed, same bytes");
    assert_ne!(fa["sub-001_ses-1.nii.gz"], fc["sub-001_ses-1.nii.gz"], "another seed, another volume");

    // The grid `ldae preprocess` gives a scan registered to this template at 4 mm.
    let template = common::shipped_template();
    let mut masked = template.t1.clone();
    apply_mask(&mut masked, &template.mask).unwrap();
    let reference = model_input(&masked, 4.0, SHAPE).unwrap();
    let rows = labels(a.path());
    let mut first: Option<Volume> = None;
    for r in &rows {
        let v = read_nifti(&a.path().join(&r.file)).unwrap();
        assert_eq!(v.shape(), SHAPE, "{}", r.file);
        assert!(v.affine.max_abs_diff(&reference.affine) < 1e-6, "{}: grid differs from ldae preprocess's", r.file);
        let (min, max) = v.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(v.data.iter().all(|x| x.is_finite()));
        assert_eq!((min, max), (0.0, 1.0), "{}: min-max scaled", r.file);
        // Outside the template brain mask the model input is 0, as after `template_mask`.
        let outside = v.data.iter().zip(reference.data.iter()).filter(|(_, m)| **m == 0.0).all(|(x, _)| *x == 0.0);
        assert!(outside, "{}: non-zero outside the template mask", r.file);
        // Volumes differ from each other (anatomy, age, scanner).
        if let Some(f) = &first {
            let d =
                v.data.iter().zip(f.data.iter()).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / v.data.len() as f64;
            assert!(d > 1e-3, "{} is nearly identical to the first volume ({d})", r.file);
        } else {
            first = Some(v);
        }
    }
}

#[test]
fn labels_match_the_files() {
    let a = tmp();
    generate(a.path(), 5, &["--split", "0.5,0.25"]);
    let rows = labels(a.path());
    assert_eq!(rows.len(), 12);
    let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "ids are unique");
    let mut split_of: HashMap<&str, &str> = HashMap::new();
    let mut last: HashMap<&str, (usize, f64)> = HashMap::new();
    for r in &rows {
        assert!(a.path().join(&r.file).is_file(), "{} exists", r.file);
        assert_eq!(r.file, format!("{}.nii.gz", r.id));
        assert_eq!(*split_of.entry(&r.subject).or_insert(&r.split), r.split, "one split per subject");
        if let Some((s, age)) = last.get(r.subject.as_str()) {
            assert_eq!(r.session, s + 1);
            assert!(r.age > *age, "{}: sessions at increasing ages", r.id);
        }
        assert!((50.0..100.0).contains(&r.age), "{}: age {}", r.id, r.age);
        last.insert(&r.subject, (r.session, r.age));
    }
    let count = |s: &str| split_of.values().filter(|v| **v == s).count();
    assert_eq!((count("train"), count("val"), count("test")), (2, 1, 1));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("labels.json")).unwrap()).unwrap();
    let scans = json["scans"].as_array().unwrap();
    assert_eq!(scans.len(), rows.len());
    for (j, r) in scans.iter().zip(&rows) {
        assert_eq!(j["id"], r.id.as_str());
        assert_eq!(j["split"], r.split.as_str());
        assert!((j["age"].as_f64().unwrap() - r.age).abs() < 1e-9);
    }
    assert_eq!(json["settings"]["seed"], 5);
}

#[test]
fn ventricles_grow_with_age() {
    // Without scanner variation the only change between one subject's sessions is age: strictly monotone.
    let clean = tmp();
    generate(clean.path(), 3, &["--scanner", "0"]);
    let rows = labels(clean.path());
    let frac: Vec<f64> =
        rows.iter().map(|r| ventricle_csf_fraction(&read_nifti(&clean.path().join(&r.file)).unwrap())).collect();
    eprintln!("clean {frac:?} {:?}", rows.iter().map(|r| r.age).collect::<Vec<_>>());
    for (w, f) in rows.windows(2).zip(frac.windows(2)) {
        if w[0].subject == w[1].subject {
            assert!(f[1] > f[0], "{} → {}: ventricle CSF fraction {:.4} → {:.4}", w[0].id, w[1].id, f[0], f[1]);
        }
    }
    // With contrast, bias and noise on, the same set without atrophy (same seed: same anatomy, scanners and noise)
    // isolates what age does: more ventricle CSF in every volume, more at every later session.
    let (on, off) = (tmp(), tmp());
    generate(on.path(), 3, &[]);
    generate(off.path(), 3, &["--atrophy", "0"]);
    let gain: Vec<f64> = rows
        .iter()
        .map(|r| {
            ventricle_csf_fraction(&read_nifti(&on.path().join(&r.file)).unwrap())
                - ventricle_csf_fraction(&read_nifti(&off.path().join(&r.file)).unwrap())
        })
        .collect();
    eprintln!("gain {gain:?}");
    for (r, g) in rows.iter().zip(&gain) {
        assert!(*g > 0.0, "{}: atrophy added no ventricle CSF ({g:.4})", r.id);
    }
    // Between sessions two years apart the scanners' bias fields can outweigh the change; from first to last
    // session (3–8 years) they do not, and across the set the gain follows age closely.
    for s in 0..4 {
        let (g0, g2) = (gain[3 * s], gain[3 * s + 2]);
        assert!(
            g2 > g0,
            "{}: atrophy's ventricle CSF {g0:.4} → {g2:.4} from first to last session",
            rows[3 * s].subject
        );
    }
    let ages: Vec<f64> = rows.iter().map(|r| r.age).collect();
    let r = pearson(&ages, &gain);
    eprintln!("pearson {r}");
    assert!(r > 0.8, "correlation of age and atrophy's ventricle CSF {r:.3}");
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn bad_arguments_are_clear_errors() {
    let a = tmp();
    let run = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_make-train-set")).args(args).arg("-o").arg(a.path()).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let demo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/demo");
    let e = run(&["--model", demo.to_str().unwrap(), "--shape", "25,32,24"]);
    assert!(e.contains("divisible by 4"), "{e}");
    let e = run(&["--pixdim", "0", "--shape", "8,8,8"]);
    assert!(e.contains("--pixdim 0"), "{e}");
    let e = run(&["--pixdim", "4", "--shape", "8,8,8", "--subjects", "0"]);
    assert!(e.contains("at least 1"), "{e}");
    let e = run(&[
        "--pixdim",
        "4",
        "--shape",
        "8,8,8",
        "--template",
        "/nonexistent.nii.gz",
        "--template-mask",
        "/x.nii.gz",
    ]);
    assert!(e.contains("loading the template"), "{e}");
}
