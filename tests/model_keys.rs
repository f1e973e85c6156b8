//! The paper configuration's key sets: building each network at `ModelConfig::paper()` against a recording
//! VarBuilder must request exactly the keys and shapes of the published checkpoints (tests/data/model/keys/*.tsv,
//! copied from shared/ldae/keys).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ldae::model::config::ModelConfig;
use ldae::model::keyset::{expected_keys, KeySet, WeightsFile};

fn tsv(name: &str) -> KeySet {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/model/keys").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut m = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert_eq!(f[2], "float32", "{line}");
        let shape = f[1].split(',').map(|s| s.parse::<usize>().expect("dim")).collect();
        assert!(m.insert(f[0].to_string(), shape).is_none(), "duplicate {line}");
    }
    m
}

fn assert_same(file: WeightsFile, tsv_name: &str) {
    let want = tsv(tsv_name);
    let got = expected_keys(&ModelConfig::paper(), file).expect("build at paper size");
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let shapes: Vec<_> = want.iter().filter(|(k, s)| got.get(*k).is_some_and(|g| g != *s)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && shapes.is_empty(),
        "{tsv_name}: missing {missing:?}\nextra {extra:?}\nshapes {shapes:?}"
    );
    assert_eq!(got, want);
}

#[test]
fn encoder_keys_match_published_checkpoint() {
    assert_same(WeightsFile::Encoder, "encoder.tsv");
    let n = tsv("encoder.tsv").len();
    assert_eq!(n, 699, "SPEC §7: 699 encoder keys");
}

#[test]
fn autoencoder_keys_match_published_checkpoint() {
    assert_same(WeightsFile::Autoencoder, "autoencoderkl.tsv");
    assert_eq!(tsv("autoencoderkl.tsv").len(), 162, "SPEC §7: 162 AEKL keys");
}

#[test]
fn decoder_keys_match_published_checkpoint() {
    assert_same(WeightsFile::Decoder, "decoder.tsv");
    let want = tsv("decoder.tsv");
    assert_eq!(want.len(), 530, "SPEC §7: 530 ShiftUNet keys");
    let elements: usize = want.values().map(|s| s.iter().product::<usize>()).sum();
    assert_eq!(elements, 865_339_142, "SPEC §7 element count");
}
