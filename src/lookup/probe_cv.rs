//! k-fold cross-validation of a probe grouped by patient, and its metrics.
//!
//! Folds: the distinct patients are sorted, shuffled by a SplitMix64 stream from the seed (stable across
//! versions and platforms), then each goes to the fold holding the fewest rows so far (ties: lowest fold). No
//! patient is in two folds. In every fold the z-score is fitted on the training rows only.
//!
//! Metrics per fold: ROC-AUC (ties count ½), accuracy and MCC at probability 0.5 for classes; MAE, RMSE and R²
//! for numbers. Summaries are the mean and the population standard deviation (`numpy.std`) over the folds where
//! the metric is defined (AUC needs both classes in the test fold).

use super::probe::{fit_logistic, fit_ridge, sigmoid, Linear, ProbeError, ZScore};

/// What a probe predicts.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Positive-class flags (logistic regression).
    Classes(Vec<bool>),
    /// A number per row (ridge regression).
    Number(Vec<f64>),
}

/// Fold index per row.
pub fn group_folds(groups: &[String], k: usize, seed: u64) -> Vec<usize> {
    let mut ids: Vec<&String> = groups.iter().collect();
    ids.sort();
    ids.dedup();
    let mut state = seed;
    for i in (1..ids.len()).rev() {
        let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    let mut size = vec![0usize; k.max(1)];
    let mut fold_of = std::collections::HashMap::new();
    for id in ids {
        let rows = groups.iter().filter(|g| *g == id).count();
        let f = (0..size.len()).min_by_key(|&f| (size[f], f)).unwrap_or(0);
        size[f] += rows;
        fold_of.insert(id, f);
    }
    groups.iter().map(|g| fold_of.get(g).copied().unwrap_or(0)).collect()
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// ROC-AUC of `score` for `y` (None when one class is absent).
pub fn roc_auc(score: &[f64], y: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank = vec![0.0; score.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        idx[i..=j].iter().for_each(|&t| rank[t] = r);
        i = j + 1;
    }
    let np = y.iter().filter(|&&v| v).count() as f64;
    let nn = y.len() as f64 - np;
    if np == 0.0 || nn == 0.0 {
        return None;
    }
    let sum: f64 = rank.iter().zip(y).filter(|(_, &v)| v).map(|(r, _)| r).sum();
    Some((sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// Matthews correlation coefficient (0 when a marginal is empty, as scikit-learn does).
pub fn mcc(pred: &[bool], y: &[bool]) -> f64 {
    let (mut tp, mut tn, mut fp, mut fn_) = (0f64, 0f64, 0f64, 0f64);
    for (&p, &t) in pred.iter().zip(y) {
        match (p, t) {
            (true, true) => tp += 1.0,
            (false, false) => tn += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
        }
    }
    let d = (tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_);
    if d == 0.0 {
        0.0
    } else {
        (tp * tn - fp * fn_) / d.sqrt()
    }
}

/// Mean and population std of the defined values.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    /// Folds where the metric was defined.
    pub folds: usize,
}

fn spread(v: &[Option<f64>]) -> Option<Spread> {
    let d: Vec<f64> = v.iter().flatten().copied().collect();
    if d.is_empty() {
        return None;
    }
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let std = (d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    Some(Spread { mean, std, folds: d.len() })
}

/// One fold's metrics, by name (`roc_auc`, `accuracy`, `mcc` or `mae`, `rmse`, `r2`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FoldMetrics {
    pub fold: usize,
    pub n_test: usize,
    pub metrics: Vec<(String, Option<f64>)>,
}

/// Cross-validation result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CvReport {
    pub folds: Vec<FoldMetrics>,
    pub summary: Vec<(String, Option<Spread>)>,
    /// Fold index of every row (so a reference implementation can use the same split).
    pub fold_of_row: Vec<usize>,
}

/// A z-score and a linear model fitted on `x` (n × e, raw y_sem).
pub fn fit_probe(x: &[f64], e: usize, target: &Target, lambda: f64) -> Result<(ZScore, Linear), ProbeError> {
    let z = ZScore::fit(x, e)?;
    let xz = z.apply(x);
    let m = match target {
        Target::Classes(y) => fit_logistic(&xz, e, y, lambda)?,
        Target::Number(y) => fit_ridge(&xz, e, y, lambda)?,
    };
    Ok((z, m))
}

/// Grouped k-fold cross-validation (see the module doc).
pub fn cross_validate(
    x: &[f64],
    e: usize,
    target: &Target,
    groups: &[String],
    k: usize,
    lambda: f64,
    seed: u64,
) -> Result<CvReport, ProbeError> {
    let n = groups.len();
    if x.len() != n * e {
        return Err(ProbeError::Shape { expected: n * e, got: x.len() });
    }
    let fold_of_row = group_folds(groups, k, seed);
    let mut folds = Vec::new();
    for f in 0..k {
        let test: Vec<usize> = (0..n).filter(|&i| fold_of_row[i] == f).collect();
        let train: Vec<usize> = (0..n).filter(|&i| fold_of_row[i] != f).collect();
        if test.is_empty() {
            continue;
        }
        let rows = |ix: &[usize]| -> Vec<f64> { ix.iter().flat_map(|&i| x[i * e..(i + 1) * e].to_vec()).collect() };
        let (xtr, xte) = (rows(&train), rows(&test));
        let metrics = match target {
            Target::Classes(y) => {
                let ytr: Vec<bool> = train.iter().map(|&i| y[i]).collect();
                let yte: Vec<bool> = test.iter().map(|&i| y[i]).collect();
                let (z, m) = fit_probe(&xtr, e, &Target::Classes(ytr), lambda)?;
                let s = m.decision(&z.apply(&xte));
                let pred: Vec<bool> = s.iter().map(|&t| sigmoid(t) > 0.5).collect();
                let acc = pred.iter().zip(&yte).filter(|(p, t)| p == t).count() as f64 / yte.len() as f64;
                vec![
                    ("roc_auc".to_string(), roc_auc(&s, &yte)),
                    ("accuracy".to_string(), Some(acc)),
                    ("mcc".to_string(), Some(mcc(&pred, &yte))),
                ]
            }
            Target::Number(y) => {
                let ytr: Vec<f64> = train.iter().map(|&i| y[i]).collect();
                let yte: Vec<f64> = test.iter().map(|&i| y[i]).collect();
                let (z, m) = fit_probe(&xtr, e, &Target::Number(ytr), lambda)?;
                let p = m.decision(&z.apply(&xte));
                let nt = yte.len() as f64;
                let mae = p.iter().zip(&yte).map(|(a, b)| (a - b).abs()).sum::<f64>() / nt;
                let sse = p.iter().zip(&yte).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
                let ym = yte.iter().sum::<f64>() / nt;
                let sst = yte.iter().map(|b| (b - ym) * (b - ym)).sum::<f64>();
                let r2 = (sst > 0.0).then(|| 1.0 - sse / sst);
                vec![
                    ("mae".to_string(), Some(mae)),
                    ("rmse".to_string(), Some((sse / nt).sqrt())),
                    ("r2".to_string(), r2),
                ]
            }
        };
        folds.push(FoldMetrics { fold: f, n_test: test.len(), metrics });
    }
    let names: Vec<String> = folds.first().map(|f| f.metrics.iter().map(|m| m.0.clone()).collect()).unwrap_or_default();
    let summary = names
        .iter()
        .enumerate()
        .map(|(j, name)| (name.clone(), spread(&folds.iter().map(|f| f.metrics[j].1).collect::<Vec<_>>())))
        .collect();
    Ok(CvReport { folds, summary, fold_of_row })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_never_split_a_patient_and_are_deterministic() {
        let groups: Vec<String> = (0..30).map(|i| format!("P{}", i % 7)).collect();
        let a = group_folds(&groups, 3, 42);
        assert_eq!(a, group_folds(&groups, 3, 42));
        for (i, g) in groups.iter().enumerate() {
            for (j, h) in groups.iter().enumerate() {
                if g == h {
                    assert_eq!(a[i], a[j]);
                }
            }
        }
        let mut counts = [0; 3];
        a.iter().for_each(|&f| counts[f] += 1);
        assert!(counts.iter().all(|&c| c >= 8), "{counts:?}");
        assert_ne!(a, group_folds(&groups, 3, 7), "another seed, another split (for this data)");
    }

    #[test]
    fn auc_and_mcc_known_values() {
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.5, 0.6], &[true, true]), None);
        assert_eq!(mcc(&[true, false, true, false], &[true, false, true, false]), 1.0);
        assert_eq!(mcc(&[true, true], &[true, false]), 0.0);
        // tp=2 tn=1 fp=1 fn=0: (2−0)/sqrt(3·2·2·1)
        let m = mcc(&[true, true, true, false], &[true, true, false, false]);
        assert!((m - 2.0 / 12f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn cv_on_a_separable_class_and_a_linear_number() {
        // 10 patients × 3 rows, 4 features; the class is the sign of feature 0, the number is 3·x1 + 10.
        let n = 30;
        let x: Vec<f64> = (0..n * 4).map(|i| (((i * 7919) % 101) as f64 - 50.0) / 25.0).collect();
        let groups: Vec<String> = (0..n).map(|i| format!("P{}", i / 3)).collect();
        let yc: Vec<bool> = (0..n).map(|i| x[i * 4] > 0.0).collect();
        let rep = cross_validate(&x, 4, &Target::Classes(yc), &groups, 5, 1e-3, 1).unwrap();
        let get = |r: &CvReport, k: &str| r.summary.iter().find(|s| s.0 == k).and_then(|s| s.1).unwrap();
        assert!(get(&rep, "accuracy").mean > 0.9, "{rep:?}");
        let yn: Vec<f64> = (0..n).map(|i| 3.0 * x[i * 4 + 1] + 10.0).collect();
        let rep = cross_validate(&x, 4, &Target::Number(yn), &groups, 5, 1e-8, 1).unwrap();
        assert!(get(&rep, "mae").mean < 1e-5, "{rep:?}");
        assert!((get(&rep, "r2").mean - 1.0).abs() < 1e-8);
        assert_eq!(rep.folds.len(), 5);
    }
}
