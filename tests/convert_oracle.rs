//! Oracle tests: every series of shared/testdata/synthetic/{roundtrip,transfer_syntaxes} converts to its truth
//! (world-space rule of shared/testdata/README.md), reject cases are refused with the right reason, and the
//! output agrees with dcm2niix run here on the same files. dcm2niix must succeed on every `ok` case except the
//! ones its validation report (`<corpus>_VALIDATION_dcm2niix.md`, "dcm2niix outputs: none") says it refuses;
//! with the validated dcm2niix version those must be refused (non-zero exit, no output).
//!
//! A missing tool or data file goes through `common::require` (`tool`, `shared_data`, `python_modules`), which
//! fails the test under `LDAE_REQUIRE_ALL=1` (CI) and only skips, loudly, without it.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ldae::config::ConvertConfig;
use ldae::dicom::convert_paths;
use ldae::nifti::read_nifti;

/// The dcm2niix this machine has, and what its validation report says about the corpus.
struct Peer {
    /// `dcm2niix -v`'s version string (e.g. `v1.0.20220720`).
    version: String,
    /// The version the validation report was made with.
    validated: String,
    /// Cases that validated version refuses (writes no volume for).
    refuses: Vec<String>,
}

impl Peer {
    fn new(report: &str) -> Peer {
        let out = Command::new("dcm2niix").arg("-v").output().expect("dcm2niix -v");
        let version = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim().to_string();
        let validated = report
            .lines()
            .find_map(|l| l.strip_prefix("dcm2niix: ")?.split("version ").nth(1)?.split_whitespace().next())
            .expect("validation report names its dcm2niix version")
            .to_string();
        let mut refuses = Vec::new();
        let mut case = "";
        for l in report.lines() {
            if let Some(c) = l.strip_prefix("## ") {
                case = c.trim();
            } else if l.trim() == "- dcm2niix outputs: none" {
                refuses.push(case.to_string());
            }
        }
        Peer { version, validated, refuses }
    }
}

/// Check one case folder; returns a description of each failure.
fn check_case(dir: &Path, peer: &Peer) -> Vec<String> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
    let expect = std::fs::read_to_string(dir.join("expect.txt")).unwrap_or_default();
    let verdict = expect.split([':', ' ', '\n']).next().unwrap_or("").to_string();
    let files = dicom_files(dir);
    let report = convert_paths(&files, &ConvertConfig::default());
    let mut fails = Vec::new();
    let truth_paths = truths(dir);
    match verdict.as_str() {
        "reject" => {
            if !report.converted.is_empty() {
                fails.push(format!("{name}: must be rejected, {} volume(s) written", report.converted.len()));
            }
            let want = if name.contains("missing") {
                "missing_slices"
            } else if name.contains("nonuniform") {
                "nonuniform_spacing"
            } else {
                "gantry_tilt"
            };
            if !report.rejected.iter().any(|r| r.reason.code() == want) {
                fails.push(format!("{name}: expected a {want} rejection, got {:?}", report.rejected));
            }
            return fails;
        }
        "ok" => {
            if !report.rejected.is_empty() {
                fails.push(format!("{name}: unexpected rejections {:?}", report.rejected));
            }
            if report.converted.len() != truth_paths.len() {
                fails.push(format!("{name}: {} volumes for {} truths", report.converted.len(), truth_paths.len()));
            }
        }
        // Never one mixed volume: either refused with a reason, or split into volumes that each equal a
        // different truth (a part may be dropped), so at most one output per truth.
        "split_or_reject" => {
            if report.converted.is_empty() && report.rejected.is_empty() {
                fails.push(format!("{name}: neither split nor rejected"));
            }
            if report.converted.len() > truth_paths.len() {
                fails.push(format!("{name}: {} volumes for {} truths", report.converted.len(), truth_paths.len()));
            }
        }
        other => fails.push(format!("{name}: unknown expect verdict {other:?}")),
    }
    let tol = tolerance(&expect);
    let truth_vols: Vec<_> = truth_paths.iter().map(|p| read_nifti(p).expect("truth")).collect();
    // Every output must equal exactly one truth; for `ok`, every truth must be produced.
    let mut matched = vec![false; truth_vols.len()];
    for c in &report.converted {
        let hit = truth_vols.iter().enumerate().find_map(|(t, tv)| {
            let d = compare(&c.volume, tv).ok()?;
            check(&d, &tol).ok().map(|_| t)
        });
        match hit {
            Some(t) if matched[t] => fails.push(format!("{name}: two outputs equal truth {t}")),
            Some(t) => matched[t] = true,
            None => {
                let why: Vec<String> = truth_vols
                    .iter()
                    .map(|tv| match compare(&c.volume, tv) {
                        Ok(d) => check(&d, &tol).err().unwrap_or_default(),
                        Err(e) => e,
                    })
                    .collect();
                fails.push(format!("{name}: output {} matches no truth: {why:?}", c.file_stem));
            }
        }
    }
    // Lossy cases: also within 8 grey levels of what dcmtk (IJG) decodes.
    if let Some(reference) = std::fs::read_dir(dir).ok().and_then(|rd| {
        rd.filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.to_string_lossy().contains("_reference_dcmtk"))
    }) {
        let rv = read_nifti(&reference).expect("reference");
        for c in &report.converted {
            match compare(&c.volume, &rv) {
                Ok(d) if d.max_abs <= 8.0 && d.affine <= 1e-3 => {}
                Ok(d) => fails.push(format!("{name}: {:.1} grey levels from the dcmtk decode (limit 8)", d.max_abs)),
                Err(e) => fails.push(format!("{name}: vs dcmtk decode: {e}")),
            }
        }
    }
    if verdict == "ok" && matched.iter().any(|m| !m) {
        fails.push(format!("{name}: truths not produced: {matched:?}"));
    }
    if verdict == "ok" {
        let work = tempfile::tempdir().expect("tempdir");
        let theirs = run_dcm2niix(&files, work.path());
        let expect_refusal = peer.refuses.contains(&name);
        let refused = !theirs.success || theirs.outputs.is_empty();
        if refused {
            if !expect_refusal {
                fails.push(format!(
                    "{name}: dcm2niix {} refused it (exit ok: {}, {} outputs): {}",
                    peer.version,
                    theirs.success,
                    theirs.outputs.len(),
                    theirs.messages.trim()
                ));
            } else if theirs.success || !theirs.outputs.is_empty() {
                fails.push(format!("{name}: dcm2niix refused it but exited 0 or wrote {:?}", theirs.outputs));
            }
        } else if expect_refusal && peer.version == peer.validated {
            fails.push(format!(
                "{name}: dcm2niix {} was validated to refuse it, but wrote {:?}",
                peer.version, theirs.outputs
            ));
        } else {
            for c in &report.converted {
                let agree = theirs.outputs.iter().any(|p| {
                    let v = read_nifti(p).expect("dcm2niix nifti");
                    compare(&c.volume, &v).ok().is_some_and(|d| {
                        let lossy = tol.max_abs.is_some();
                        // Lossy: two IDCTs may differ by a few grey levels (README: ≤ 8 between decoders).
                        d.affine <= 1e-3 && if lossy { d.max_abs <= 8.0 } else { d.max_rel <= 1e-4 }
                    })
                });
                if !agree {
                    fails.push(format!(
                        "{name}: {} disagrees with every dcm2niix output {:?}",
                        c.file_stem, theirs.outputs
                    ));
                }
            }
        }
    }
    fails
}

fn run_corpus(sub: &str) {
    let Some(root) = shared_data(&format!("testdata/synthetic/{sub}")) else { return };
    let Some(report) = shared_data(&format!("testdata/synthetic/{sub}_VALIDATION_dcm2niix.md")) else { return };
    if !tool("dcm2niix", &["-h"]) {
        return;
    }
    let peer = Peer::new(&std::fs::read_to_string(report).expect("validation report"));
    assert!(!peer.refuses.is_empty() || sub == "roundtrip", "no refusals parsed from the {sub} report");
    let mut dirs: Vec<_> = std::fs::read_dir(&root).expect("corpus").filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.retain(|d| d.is_dir());
    dirs.sort();
    assert!(dirs.len() >= 11, "corpus {sub} has only {} cases", dirs.len());
    let fails: Vec<String> = dirs.iter().flat_map(|d| check_case(d, &peer)).collect();
    assert!(fails.is_empty(), "{} failure(s):\n{}", fails.len(), fails.join("\n"));
}

#[test]
fn roundtrip_cases_match_truth_and_dcm2niix() {
    run_corpus("roundtrip");
}

#[test]
fn transfer_syntax_cases_match_truth_and_dcm2niix() {
    run_corpus("transfer_syntaxes");
}

#[test]
fn resample_gaps_fills_the_missing_slice_and_marks_it() {
    let Some(root) = shared_data("testdata/synthetic/roundtrip") else { return };
    let cfg = ConvertConfig { resample_gaps: true, ..ConvertConfig::default() };
    let report = convert_paths(&dicom_files(&root.join("missing_slice")), &cfg);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.converted.len(), 1);
    let c = &report.converted[0];
    assert_eq!(c.volume.shape(), [48, 60, 46]);
    let w = c.sidecar["Warnings"].to_string();
    assert!(w.contains("RESAMPLED: 1 missing slice"), "{w}");
    let d = &c.volume.data;
    for (i, j) in [(10, 10), (24, 30), (30, 40)] {
        let mid = 0.5 * (d[[i, j, 23]] + d[[i, j, 25]]);
        assert!((d[[i, j, 24]] - mid).abs() < 1e-3, "slice 24 is the mean of its neighbours");
    }
    // Same grid as the complete axial series.
    let axial = read_nifti(&root.join("axial/axial_truth.nii.gz")).expect("truth");
    assert!(c.volume.affine.max_abs_diff(&axial.affine) < 1e-3, "{:?} vs {:?}", c.volume.affine, axial.affine);
    // Non-uniform spacing is still refused.
    let nonu = convert_paths(&dicom_files(&root.join("nonuniform_spacing")), &cfg);
    assert!(nonu.converted.is_empty() && nonu.rejected.iter().any(|r| r.reason.code() == "nonuniform_spacing"));
}
