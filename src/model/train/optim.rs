//! Adam (torch's `Adam` without weight decay: bias-corrected moments, `eps` added to the corrected root), the
//! global gradient-norm clip of `clip_grad_norm_`, gradient accumulation and the EMA of SPEC §1b
//! (`ema = decay * ema + (1 - decay) * param` after every optimiser step).
//!
//! State (moments, step count) is kept per parameter name so a checkpoint can save and restore it.

use std::collections::BTreeMap;

use candle_core::{backprop::GradStore, Tensor, Var};

use super::error::{Ctx, TrainError};

/// Adam's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// Adam over a fixed, named set of Vars.
#[derive(Debug)]
pub struct Adam {
    params: AdamParams,
    vars: Vec<(String, Var)>,
    /// First and second moments per parameter (zeros until the first step).
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    /// Optimiser steps taken.
    pub step: u64,
}

impl Adam {
    pub fn new(vars: Vec<(String, Var)>, params: AdamParams) -> Result<Self, TrainError> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (k, var) in &vars {
            m.insert(k.clone(), var.as_tensor().zeros_like().ctx("adam state")?);
            v.insert(k.clone(), var.as_tensor().zeros_like().ctx("adam state")?);
        }
        Ok(Adam { params, vars, m, v, step: 0 })
    }

    /// Set the learning rate of the next steps (a schedule's value).
    pub fn set_lr(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// The trained parameters, by name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update with the (already accumulated and clipped) gradients; parameters without a gradient are left
    /// as they are (their moments too).
    pub fn step(&mut self, grads: &Grads) -> Result<(), TrainError> {
        self.step += 1;
        let AdamParams { lr, beta1, beta2, eps } = self.params;
        let bc1 = 1.0 - beta1.powi(self.step.min(i32::MAX as u64) as i32);
        let bc2 = 1.0 - beta2.powi(self.step.min(i32::MAX as u64) as i32);
        for (k, var) in &self.vars {
            let Some(g) = grads.0.get(k) else { continue };
            let (Some(m), Some(v)) = (self.m.get(k), self.v.get(k)) else { continue };
            let m = ((m * beta1).ctx("adam")? + (g * (1.0 - beta1)).ctx("adam")?).ctx("adam")?;
            let v = ((v * beta2).ctx("adam")? + (g.sqr().ctx("adam")? * (1.0 - beta2)).ctx("adam")?).ctx("adam")?;
            let denom = ((&v / bc2).ctx("adam")?.sqrt().ctx("adam")? + eps).ctx("adam")?;
            let upd = ((&m / bc1).ctx("adam")?.div(&denom).ctx("adam")? * lr).ctx("adam")?;
            let new = (var.as_tensor() - upd).ctx("adam")?;
            var.set(&new).ctx("adam")?;
            self.m.insert(k.clone(), m);
            self.v.insert(k.clone(), v);
        }
        Ok(())
    }

    /// Moments as named tensors (`m.<name>`, `v.<name>`) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let m = self.m.iter().map(|(k, t)| (format!("m.{k}"), t.clone()));
        let v = self.v.iter().map(|(k, t)| (format!("v.{k}"), t.clone()));
        m.chain(v).collect()
    }

    /// Restore moments saved by [`state_tensors`](Self::state_tensors) and the step count.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, step: u64) -> Result<(), TrainError> {
        for (k, var) in &self.vars {
            for (prefix, store) in [("m.", &mut self.m), ("v.", &mut self.v)] {
                let name = format!("{prefix}{k}");
                let t = tensors
                    .get(&name)
                    .ok_or_else(|| TrainError::Unsupported(format!("checkpoint lacks the optimiser state {name}")))?;
                if t.dims() != var.as_tensor().dims() {
                    return Err(TrainError::Unsupported(format!(
                        "checkpoint's {name} is {:?}, the parameter {:?}",
                        t.dims(),
                        var.as_tensor().dims()
                    )));
                }
                store.insert(k.clone(), t.to_device(var.as_tensor().device()).ctx("adam state")?);
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Gradients by parameter name (summed over micro-batches).
#[derive(Debug, Default)]
pub struct Grads(pub BTreeMap<String, Tensor>);

impl Grads {
    /// Add the gradients of `vars` from one backward pass.
    pub fn accumulate(&mut self, vars: &[(String, Var)], store: &GradStore) -> Result<(), TrainError> {
        for (k, var) in vars {
            let Some(g) = store.get(var.as_tensor()) else { continue };
            let g = g.detach();
            let sum = match self.0.remove(k) {
                Some(prev) => (prev + g).ctx("accumulating gradients")?,
                None => g,
            };
            self.0.insert(k.clone(), sum);
        }
        Ok(())
    }

    /// The global L2 norm of all gradients.
    pub fn norm(&self) -> Result<f64, TrainError> {
        let mut s = 0f64;
        for g in self.0.values() {
            s += g.sqr().ctx("norm")?.sum_all().ctx("norm")?.to_scalar::<f32>().ctx("norm")? as f64;
        }
        Ok(s.sqrt())
    }

    /// `clip_grad_norm_(max)`: scale all gradients by `max / (norm + 1e-6)` when that is below 1. Returns the norm
    /// before clipping. `max = 0` disables clipping.
    pub fn clip(&mut self, max: f64) -> Result<f64, TrainError> {
        let n = self.norm()?;
        if max > 0.0 {
            let coef = max / (n + 1e-6);
            if coef < 1.0 {
                for g in self.0.values_mut() {
                    *g = (&*g * coef).ctx("clip")?;
                }
            }
        }
        Ok(n)
    }
}

/// Exponential moving averages of a set of Vars, by name.
#[derive(Debug)]
pub struct Ema {
    pub decay: f64,
    pub shadow: BTreeMap<String, Tensor>,
}

impl Ema {
    /// Start from the parameters' current values.
    /// (A deep copy: a Var's `set` writes into its storage in place, which a detached view would share.)
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self, TrainError> {
        let mut shadow = BTreeMap::new();
        for (k, v) in vars {
            shadow.insert(k.clone(), v.as_tensor().detach().copy().ctx("ema")?);
        }
        Ok(Ema { decay, shadow })
    }

    /// `ema = decay * ema + (1 - decay) * param`.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<(), TrainError> {
        for (k, v) in vars {
            if let Some(e) = self.shadow.get_mut(k) {
                *e = ((&*e * self.decay).ctx("ema")? + (v.as_tensor().detach() * (1.0 - self.decay)).ctx("ema")?)
                    .ctx("ema")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two Adam steps on f(p) = sum(p^2)/2 (gradient p), against the closed form of torch's update.
    #[test]
    fn adam_matches_the_hand_computed_update_and_clipping_scales() {
        let p = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let vars = vec![("p".to_string(), p.clone())];
        let hp = AdamParams { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut opt = Adam::new(vars.clone(), hp).unwrap();
        let mut want = [1.0f64, -2.0];
        let (mut m, mut v) = ([0f64; 2], [0f64; 2]);
        for step in 1..=2 {
            let loss = (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            let mut g = Grads::default();
            g.accumulate(&vars, &loss.backward().unwrap()).unwrap();
            opt.step(&g).unwrap();
            for i in 0..2 {
                let gi = want[i];
                m[i] = 0.9 * m[i] + 0.1 * gi;
                v[i] = 0.999 * v[i] + 0.001 * gi * gi;
                let mh = m[i] / (1.0 - 0.9f64.powi(step));
                let vh = v[i] / (1.0 - 0.999f64.powi(step));
                want[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = p.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - want[i]).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        let mut g = Grads::default();
        g.0.insert("p".into(), Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap());
        assert!((g.clip(1.0).unwrap() - 5.0).abs() < 1e-6);
        assert!((g.norm().unwrap() - 1.0).abs() < 1e-5);
        let mut e = Ema::new(&vars, 0.5).unwrap();
        let before = e.shadow["p"].to_vec1::<f32>().unwrap();
        p.set(&Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap()).unwrap();
        e.update(&vars).unwrap();
        let after = e.shadow["p"].to_vec1::<f32>().unwrap();
        assert!((after[0] - before[0] * 0.5).abs() < 1e-7 && (after[1] - before[1] * 0.5).abs() < 1e-7);
    }
}
