//! The shipped `[select]` and `[qc]` defaults against the project's longitudinal test series (two simulated
//! subjects, seven sessions: axial, sagittal, anisotropic, oblique 3-D T1): every session is converted, selected,
//! registered to the shipped template, and passes the QC gate. Reads `testdata/longitudinal/dicom` through
//! tests/common `shared_data` (tests/data/shared has all seven sessions); without it the test skips loudly, or
//! fails when `LDAE_REQUIRE_ALL=1`.

mod common;

use std::path::{Path, PathBuf};

use ldae::config::Config;
use ldae::dicom::convert::convert_paths;
use ldae::dicom::select::select_series;
use ldae::model::config::ModelConfig;
use ldae::preprocess::pipeline::preprocess_volume;
use ldae::preprocess::template::Template;

#[test]
fn defaults_select_every_longitudinal_session_and_its_registration_passes_qc() {
    // tests/data/shared holds all seven sessions' DICOM (see its PROVENANCE.md).
    let Some(root) = common::shared_data("testdata/longitudinal/dicom") else { return };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = Config::load(&repo.join("config/ldae.toml")).expect("shipped config");
    let template = Template::load(&repo.join(&cfg.preprocess.template), &repo.join(&cfg.preprocess.template_mask))
        .expect("shipped template");
    let model = ModelConfig::load(&repo.join("weights/demo/config.json")).expect("demo model config");
    let mut sessions: Vec<PathBuf> = Vec::new();
    for sub in std::fs::read_dir(&root).expect("dicom/").flatten() {
        sessions.extend(std::fs::read_dir(sub.path()).expect("subject").flatten().map(|e| e.path()));
    }
    sessions.sort();
    assert_eq!(sessions.len(), 7);
    for dir in sessions {
        let report = convert_paths(std::slice::from_ref(&dir), &cfg.convert);
        assert_eq!(report.converted.len(), 1, "{}: {:?}", dir.display(), report.rejected);
        let c = &report.converted[0];
        select_series(&cfg.select, &c.acquisition, &c.volume).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let out = preprocess_volume(&c.volume, &template, &model, &cfg.preprocess).expect("preprocess");
        println!("{}: MI {:.3}, brain coverage {:.3}", dir.display(), out.mi, out.brain_coverage);
        assert_eq!(cfg.qc.review_reason(out.mi, out.brain_coverage), None, "{}", dir.display());
    }
}
