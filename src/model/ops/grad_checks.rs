//! Finite-difference checks of backward passes: the analytic gradient candle's autograd returns for
//! `L = Σ f(inputs) · r` (r fixed random weights) against central differences `(L(θ+h) − L(θ−h)) / 2h` on a few
//! entries of each checked input, with the relative error of the worst entry reported.
//!
//! The analytic side always runs in f32 (the CPU kernels under test). The numeric side runs either in f64 —
//! inputs cast to f64, which sends every op down its composed candle path, so the differences are free of f32
//! rounding and independent of the kernels — or in f32 (the same kernels) where a closure cannot run in f64.
//! Used by the ops' unit tests and by tests/model_grad.rs.

use candle_core::{DType, Result, Tensor, Var};
use rand::{Rng, SeedableRng};

/// A CPU f32 tensor of uniform values in `[lo, hi)` from `seed` (the random inputs of the gradient checks).
pub fn uniform(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Result<Tensor> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.iter().product()).map(|_| r.random_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

/// The dtype the finite differences are evaluated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdPrecision {
    /// Inputs cast to f64 (composed candle ops; closure must accept f64 tensors).
    F64,
    /// Inputs kept f32 (the kernels themselves).
    F32,
}

/// How many entries to probe and how far to step.
#[derive(Debug, Clone, Copy)]
pub struct FdOptions {
    /// Entries checked per input (all of them when the input is smaller).
    pub probes: usize,
    /// Central-difference step.
    pub step: f64,
    pub precision: FdPrecision,
    pub seed: u64,
}

impl FdOptions {
    /// f64 differences with step 1e-4, 6 probes per input.
    pub fn f64() -> Self {
        FdOptions { probes: 6, step: 1e-4, precision: FdPrecision::F64, seed: 7 }
    }

    /// f32 differences with step 1e-2, 6 probes per input.
    pub fn f32() -> Self {
        FdOptions { probes: 6, step: 1e-2, precision: FdPrecision::F32, seed: 7 }
    }
}

/// One probed entry.
#[derive(Debug, Clone, Copy)]
pub struct FdEntry {
    pub input: usize,
    pub index: usize,
    pub analytic: f64,
    pub numeric: f64,
    pub rel: f64,
    /// Rounding bound of the numeric estimate (f32 differences of a whole network): an |analytic − numeric|
    /// below it cannot be told from rounding. 0 where the differences carry no such bound.
    pub noise: f64,
}

impl FdEntry {
    /// How far past the tolerance the entry is (≥ 1: it fails): its relative error over `tol`, unless the
    /// absolute difference lies within the rounding bound, which no gradient error can be told from.
    pub fn excess(&self, tol: f64) -> f64 {
        let rel = self.rel / tol;
        if self.noise > 0.0 {
            rel.min((self.analytic - self.numeric).abs() / self.noise)
        } else {
            rel
        }
    }
}

/// All probed entries; [`FdReport::worst`] is the one with the largest relative error.
#[derive(Debug, Clone, Default)]
pub struct FdReport {
    pub entries: Vec<FdEntry>,
}

impl FdReport {
    pub fn worst(&self) -> Option<FdEntry> {
        self.entries.iter().copied().max_by(|a, b| a.rel.total_cmp(&b.rel))
    }

    /// The entry furthest past `tol` (see [`FdEntry::excess`]).
    pub fn worst_against(&self, tol: f64) -> Option<FdEntry> {
        self.entries.iter().copied().max_by(|a, b| a.excess(tol).total_cmp(&b.excess(tol)))
    }

    /// The largest relative error (0 when nothing was probed).
    pub fn worst_rel(&self) -> f64 {
        self.worst().map_or(0.0, |e| e.rel)
    }
}

/// Relative error with a floor: `|a − n| / max(|a|, |n|, floor)`, the floor (a small fraction of the input's
/// largest gradient) keeping near-zero entries from reporting pure rounding as a large error.
fn rel_err(a: f64, n: f64, floor: f64) -> f64 {
    (a - n).abs() / a.abs().max(n.abs()).max(floor).max(f64::MIN_POSITIVE)
}

/// Check d(Σ f(inputs)·r)/d inputs[i] for every `i` in `check` (the other inputs are held constant).
/// `inputs` are f32 tensors; `f` must run on f32 tensors and, for [`FdPrecision::F64`], on f64 ones.
pub fn fd_check<F>(inputs: &[Tensor], check: &[usize], f: F, opts: FdOptions) -> Result<FdReport>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    // Analytic side: the checked inputs become variables.
    let vars: Vec<Option<Var>> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| if check.contains(&i) { Var::from_tensor(t).map(Some) } else { Ok(None) })
        .collect::<Result<_>>()?;
    let tracked: Vec<Tensor> =
        vars.iter().zip(inputs).map(|(v, t)| v.as_ref().map_or_else(|| t.clone(), |v| v.as_tensor().clone())).collect();
    let out = f(&tracked)?;
    let weights: Vec<f64> = (0..out.elem_count()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let r = Tensor::from_vec(weights.iter().map(|&v| v as f32).collect::<Vec<_>>(), out.shape(), out.device())?;
    let grads = out.mul(&r)?.sum_all()?.backward()?;

    let dtype = match opts.precision {
        FdPrecision::F64 => DType::F64,
        FdPrecision::F32 => DType::F32,
    };
    let base: Vec<Tensor> = inputs.iter().map(|t| t.to_dtype(dtype)).collect::<Result<_>>()?;
    let loss = |xs: &[Tensor]| -> Result<f64> {
        let o = f(xs)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        if o.len() != weights.len() {
            candle_core::bail!("fd_check: output changed size ({} vs {})", o.len(), weights.len());
        }
        Ok(o.iter().zip(&weights).map(|(a, b)| a * b).sum())
    };

    let mut report = FdReport::default();
    for &i in check {
        let var = vars[i].as_ref().ok_or_else(|| candle_core::Error::Msg("fd_check: unknown input".into()))?;
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
            None => candle_core::bail!("fd_check: no gradient reached input {i}"),
        };
        let floor = 1e-3 * analytic.iter().fold(0f64, |m, v| m.max(v.abs()));
        let values = base[i].flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let n = values.len();
        let picks: Vec<usize> = if n <= opts.probes {
            (0..n).collect()
        } else {
            (0..opts.probes).map(|_| rng.random_range(0..n)).collect()
        };
        // The stepped values as the evaluation dtype holds them (f32 rounds the step).
        let held = |v: f64| if dtype == DType::F32 { v as f32 as f64 } else { v };
        for j in picks {
            let at = |value: f64| -> Result<f64> {
                let mut v = values.clone();
                v[j] = value;
                let t = Tensor::from_vec(v, base[i].shape(), base[i].device())?.to_dtype(dtype)?;
                let mut xs = base.clone();
                xs[i] = t;
                loss(&xs)
            };
            let (hi, lo) = (held(values[j] + opts.step), held(values[j] - opts.step));
            let numeric = (at(hi)? - at(lo)?) / (hi - lo);
            let a = analytic[j];
            report.entries.push(FdEntry {
                input: i,
                index: j,
                analytic: a,
                numeric,
                rel: rel_err(a, numeric, floor),
                noise: 0.0,
            });
        }
    }
    Ok(report)
}

/// One entry of a variable to probe: `vars[var]`, flat element `index`.
#[derive(Debug, Clone, Copy)]
pub struct VarProbe {
    pub var: usize,
    pub index: usize,
}

/// In-place variant for whole networks whose parameters are [`Var`]s: `f` runs the network (reading the vars)
/// and returns its output. Every probe is stepped in place (f32, the kernels themselves), then restored;
/// `FdEntry::input` is the probe's `var`.
pub fn fd_check_vars<F>(vars: &[Var], probes: &[VarProbe], f: F, step: f64, seed: u64) -> Result<FdReport>
where
    F: Fn() -> Result<Tensor>,
{
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let out = f()?;
    let weights: Vec<f64> = (0..out.elem_count()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let r = Tensor::from_vec(weights.iter().map(|&v| v as f32).collect::<Vec<_>>(), out.shape(), out.device())?;
    let grads = out.mul(&r)?.sum_all()?.backward()?;
    // Σ|o·r|: an f32 evaluation of the loss is off by up to about ε·Σ|o·r|, so a difference quotient over a
    // step Δ carries that much over Δ of pure rounding (each entry's `noise`).
    let magnitude: f64 = out
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .iter()
        .zip(&weights)
        .map(|(o, w)| (o * w).abs())
        .sum();
    let loss = || -> Result<f64> {
        let o = f()?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        Ok(o.iter().zip(&weights).map(|(a, b)| a * b).sum())
    };
    // A var the output does not depend on gets no gradient: zeros, which the differences must confirm.
    let mut analytics: Vec<Vec<f64>> = Vec::with_capacity(probes.len());
    for pr in probes {
        let var = vars.get(pr.var).ok_or_else(|| candle_core::Error::Msg("fd_check_vars: unknown var".into()))?;
        analytics.push(match grads.get(var.as_tensor()) {
            Some(g) => g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
            None => vec![0.0; var.elem_count()],
        });
    }
    let max_abs = |v: &[f64]| v.iter().fold(0f64, |m, x| m.max(x.abs()));
    let global = analytics.iter().map(|a| max_abs(a)).fold(0f64, f64::max);
    let mut report = FdReport::default();
    for (pr, analytic) in probes.iter().zip(&analytics) {
        let var = &vars[pr.var];
        let own = max_abs(analytic);
        let scale_floor = 1e-3 * if own > 0.0 { own } else { global };
        // A deep copy: `set` writes into the var's storage in place.
        let original = var.as_tensor().copy()?;
        let values = original.flatten_all()?.to_vec1::<f32>()?;
        let x0 = *values.get(pr.index).ok_or_else(|| candle_core::Error::Msg("fd_check_vars: index".into()))?;
        let at = |value: f32| -> Result<f64> {
            let mut v = values.clone();
            v[pr.index] = value;
            var.set(&Tensor::from_vec(v, original.shape(), original.device())?)?;
            loss()
        };
        let (hi, lo) = ((x0 as f64 + step) as f32, (x0 as f64 - step) as f32);
        let numeric = (at(hi)? - at(lo)?) / (hi as f64 - lo as f64);
        var.set(&original)?;
        let a = analytic[pr.index];
        report.entries.push(FdEntry {
            input: pr.var,
            index: pr.index,
            analytic: a,
            numeric,
            rel: rel_err(a, numeric, scale_floor),
            noise: f32::EPSILON as f64 * magnitude / (hi as f64 - lo as f64),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A closure whose f32 and f64 paths disagree (slope 2 vs 3) must report a large error: the check can fail.
    #[test]
    fn catches_a_wrong_gradient() {
        let x = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).expect("x");
        let f = |t: &[Tensor]| if t[0].dtype() == DType::F64 { t[0].affine(3.0, 0.0) } else { t[0].affine(2.0, 0.0) };
        let rep = fd_check(std::slice::from_ref(&x), &[0], f, FdOptions::f64()).expect("check");
        assert_eq!(rep.entries.len(), 3);
        assert!((rep.worst_rel() - 1.0 / 3.0).abs() < 1e-6, "{:?}", rep.worst());
        let ok = fd_check(&[x], &[0], |t: &[Tensor]| t[0].sqr(), FdOptions::f32()).expect("check");
        assert!(ok.worst_rel() < 1e-4, "{:?}", ok.worst());
    }
}
