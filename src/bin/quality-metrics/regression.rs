//! Scores of a numeric prediction: R² against the truth's own mean, mean absolute error, and the chance baseline
//! (the error of always predicting a constant, the training mean).

/// Prediction quality on held-out rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scores {
    pub n: usize,
    pub r2: f64,
    pub mae: f64,
    /// MAE of predicting `baseline` for every row.
    pub chance_mae: f64,
    /// Pearson correlation of prediction and truth.
    pub pearson: f64,
}

/// Score `pred` against `truth`; `baseline` is the constant a predictor without information would give.
pub fn scores(pred: &[f64], truth: &[f64], baseline: f64) -> Option<Scores> {
    let n = pred.len();
    if n < 2 || n != truth.len() {
        return None;
    }
    let mean = truth.iter().sum::<f64>() / n as f64;
    let pmean = pred.iter().sum::<f64>() / n as f64;
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let ss_res: f64 = pred.iter().zip(truth).map(|(p, t)| (t - p).powi(2)).sum();
    let cov: f64 = pred.iter().zip(truth).map(|(p, t)| (p - pmean) * (t - mean)).sum();
    let ss_p: f64 = pred.iter().map(|p| (p - pmean).powi(2)).sum();
    Some(Scores {
        n,
        r2: if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { f64::NAN },
        mae: pred.iter().zip(truth).map(|(p, t)| (t - p).abs()).sum::<f64>() / n as f64,
        chance_mae: truth.iter().map(|t| (t - baseline).abs()).sum::<f64>() / n as f64,
        pearson: if ss_tot > 0.0 && ss_p > 0.0 { cov / (ss_tot * ss_p).sqrt() } else { f64::NAN },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_constant_predictions() {
        let t = [1.0, 2.0, 3.0, 4.0];
        let s = scores(&t, &t, 2.5).unwrap();
        assert!((s.r2 - 1.0).abs() < 1e-12 && s.mae == 0.0 && (s.chance_mae - 1.0).abs() < 1e-12);
        let c = scores(&[2.5; 4], &t, 2.5).unwrap();
        assert!(c.r2.abs() < 1e-12 && (c.mae - 1.0).abs() < 1e-12);
        assert!(scores(&[1.0], &[1.0], 0.0).is_none());
    }
}
