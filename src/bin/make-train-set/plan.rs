//! The study design: which subjects, sessions and ages the set holds, which split each subject is in, the seed of
//! every random draw, and the labels files (CSV and JSON) that describe it.
//!
//! Ages: a subject's first session is at a uniform age in [`BASELINE_AGES`]; each later one 1.5–4 years after
//! the one before. The atrophy level is a fixed function of age ([`atrophy_of_age`]), so a model that sees the
//! volumes can only learn it from the anatomy. Splits are by subject (never one subject in two splits).

use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Range of baseline ages (years).
pub const BASELINE_AGES: std::ops::Range<f64> = 55.0..80.0;

/// Atrophy level of an age: 0 at 50 years, 1 at 90, linear, clamped to [0, 1.25] (ages stay below 100 here).
pub fn atrophy_of_age(age: f64) -> f64 {
    ((age - 50.0) / 40.0).clamp(0.0, 1.25)
}

/// Which part of the study a subject belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// One volume of the set.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    /// `sub-003_ses-2`: unique, and the file's stem.
    pub id: String,
    pub subject: String,
    /// 1-based.
    pub session: usize,
    /// Years, rounded to 0.01.
    pub age: f64,
    /// [`atrophy_of_age`] of `age`.
    pub atrophy: f64,
    pub split: Split,
    /// File name inside the output folder.
    pub file: String,
    /// Index of the subject's anatomy source in the settings' `sources` list.
    pub source: usize,
    #[serde(skip)]
    pub subject_index: usize,
}

/// The seed of one random draw: `purpose` (subject anatomy, session scanner, session noise) of subject `s`,
/// session `t`, mixed by SplitMix64 so that neighbouring indices give unrelated streams.
pub fn seed_for(seed: u64, purpose: u64, s: usize, t: usize) -> u64 {
    let mut z = seed;
    for v in [purpose, s as u64, t as u64] {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(v);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// What [`seed_for`] draws.
pub mod purpose {
    pub const PLAN: u64 = 1;
    pub const ANATOMY: u64 = 2;
    pub const SCANNER: u64 = 3;
    pub const NOISE: u64 = 4;
}

/// The scans of `subjects` × `sessions`, split `train`/`val` fractions by subject (the rest is test), each subject
/// made from one of `sources` source volumes (uniformly; always source 0 when there is one).
pub fn plan(seed: u64, subjects: usize, sessions: usize, sources: usize, train: f64, val: f64) -> Vec<Scan> {
    let mut order: Vec<usize> = (0..subjects).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed_for(seed, purpose::PLAN, 0, 0)));
    let n_train = ((subjects as f64 * train).round() as usize).min(subjects);
    let n_val = ((subjects as f64 * val).round() as usize).min(subjects - n_train);
    let mut split = vec![Split::Test; subjects];
    for (rank, &s) in order.iter().enumerate() {
        split[s] = if rank < n_train {
            Split::Train
        } else if rank < n_train + n_val {
            Split::Val
        } else {
            Split::Test
        };
    }
    let mut scans = Vec::with_capacity(subjects * sessions);
    for (s, &sp) in split.iter().enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed_for(seed, purpose::PLAN, s + 1, 0));
        let mut age: f64 = rng.random_range(BASELINE_AGES);
        let source = if sources > 1 { rng.random_range(0..sources) } else { 0 };
        let width = if subjects > 999 { 4 } else { 3 };
        let subject = format!("sub-{:0width$}", s + 1);
        for t in 0..sessions {
            if t > 0 {
                age += rng.random_range(1.5..4.0);
            }
            let age = (age * 100.0).round() / 100.0;
            let id = format!("{subject}_ses-{}", t + 1);
            scans.push(Scan {
                file: format!("{id}.nii.gz"),
                id,
                subject: subject.clone(),
                session: t + 1,
                age,
                atrophy: (atrophy_of_age(age) * 1e4).round() / 1e4,
                split: sp,
                source,
                subject_index: s,
            });
        }
    }
    scans
}

/// The labels as CSV: `id,subject,session,age,atrophy,split,file`.
pub fn labels_csv(scans: &[Scan]) -> String {
    let mut s = String::from("id,subject,session,age,atrophy,split,file\n");
    for x in scans {
        s.push_str(&format!(
            "{},{},{},{:.2},{:.4},{},{}\n",
            x.id,
            x.subject,
            x.session,
            x.age,
            x.atrophy,
            x.split.as_str(),
            x.file
        ));
    }
    s
}

/// Write `labels.csv` and `labels.json` (the scans plus the settings that made them) into `dir`.
pub fn write_labels(dir: &Path, scans: &[Scan], settings: &serde_json::Value) -> std::io::Result<()> {
    ldae::nifti::write_atomic(&dir.join("labels.csv"), labels_csv(scans).as_bytes())?;
    let json = serde_json::json!({ "settings": settings, "scans": scans });
    let text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
    ldae::nifti::write_atomic(&dir.join("labels.json"), format!("{text}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_by_subject_and_ages_increase() {
        let scans = plan(7, 20, 3, 2, 0.7, 0.15);
        assert_eq!(scans.len(), 60);
        let count = |sp| scans.iter().filter(|s| s.split == sp && s.session == 1).count();
        assert_eq!((count(Split::Train), count(Split::Val), count(Split::Test)), (14, 3, 3));
        assert!(scans.iter().any(|s| s.source == 1) && scans.iter().any(|s| s.source == 0));
        for w in scans.windows(2) {
            if w[0].subject == w[1].subject {
                assert!(w[1].age > w[0].age && w[1].split == w[0].split && w[1].source == w[0].source);
            }
        }
    }

    #[test]
    fn seeds_differ_by_every_argument() {
        let a = seed_for(1, 2, 3, 4);
        assert_ne!(a, seed_for(2, 2, 3, 4));
        assert_ne!(a, seed_for(1, 3, 3, 4));
        assert_ne!(a, seed_for(1, 2, 4, 4));
        assert_ne!(a, seed_for(1, 2, 3, 5));
    }
}
