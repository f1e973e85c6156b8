//! Diffusion schedule and shifted DDIM (SPEC §5): the DDPM tables in float64 stored as float32, the DDIM tables
//! re-derived from the float32 `abar` by the reference's mixed float32/float64 route, and the deterministic
//! shifted DDIM step used for sampling (x_T → z0) and inversion (z0 → x_T), with the x0 clamp to [-1, 1].

use candle_core::{Result, Tensor};

use super::config::TimestepsArgs;

/// The DDPM schedule (float32 tables, computed in float64).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub betas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
    pub sqrt_alphas_cumprod: Vec<f32>,
    pub sqrt_one_minus_alphas_cumprod: Vec<f32>,
    /// `-sqrt(alpha)(1-abar_prev)/sqrt(1-abar)` (training only).
    pub shift_coef: Vec<f32>,
    /// `snr^0.1/(1+snr)` (training only).
    pub loss_weight: Vec<f32>,
}

/// numpy's `linspace(start, stop, n)` in float64.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = stop;
    v
}

impl Schedule {
    pub fn new(args: &TimestepsArgs) -> std::result::Result<Self, String> {
        let t = args.timesteps;
        let betas: Vec<f64> = match args.betas_type.as_str() {
            "linear" => linspace(1e-4, 0.02, t),
            "cosine" => {
                let f = |x: f64| ((x / t as f64 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..t).map(|i| (1.0 - f((i + 1) as f64) / f(i as f64)).min(0.999)).collect()
            }
            other => return Err(format!("betas_type {other:?} (linear or cosine)")),
        };
        let mut abar = Vec::with_capacity(t);
        let mut acc = 1f64;
        for b in &betas {
            acc *= 1.0 - b;
            abar.push(acc);
        }
        let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let shift_coef = (0..t)
            .map(|i| {
                let prev = if i == 0 { 1.0 } else { abar[i - 1] };
                -(1.0 - betas[i]).sqrt() * (1.0 - prev) / (1.0 - abar[i]).sqrt()
            })
            .collect();
        let loss_weight = abar
            .iter()
            .map(|a| {
                let snr = a / (1.0 - a);
                snr.powf(0.1) / (1.0 + snr)
            })
            .collect();
        Ok(Schedule {
            sqrt_alphas_cumprod: f32s(abar.iter().map(|a| a.sqrt()).collect()),
            sqrt_one_minus_alphas_cumprod: f32s(abar.iter().map(|a| (1.0 - a).sqrt()).collect()),
            shift_coef: f32s(shift_coef),
            loss_weight: f32s(loss_weight),
            betas: f32s(betas),
            alphas_cumprod: f32s(abar),
        })
    }

    pub fn timesteps(&self) -> usize {
        self.betas.len()
    }
}

/// The DDIM tables for `ddimN` (N + 1 entries, DDIM index j = 0..N).
#[derive(Debug, Clone)]
pub struct DdimTables {
    /// DDPM index fed to the network for each DDIM index.
    pub timestep_map: Vec<i64>,
    /// `abar'` in float64.
    pub alphas_cumprod_f64: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f32>,
    pub alphas_cumprod_next: Vec<f32>,
    pub sqrt_one_minus_alphas_cumprod: Vec<f32>,
    pub sqrt_recip_alphas_cumprod: Vec<f32>,
    pub sqrt_recip_alphas_cumprod_m1: Vec<f32>,
}

impl DdimTables {
    /// Tables for `steps` DDIM steps over `schedule`.
    pub fn new(schedule: &Schedule, steps: usize) -> std::result::Result<Self, String> {
        let t = schedule.timesteps();
        if steps == 0 || steps >= t {
            return Err(format!("DDIM steps must be between 1 and {} (got {steps})", t - 1));
        }
        let mut map: Vec<i64> = linspace(0.0, (t - 1) as f64, steps + 1).into_iter().map(|v| v as i64).collect();
        map.dedup();
        if map.len() != steps + 1 {
            return Err(format!("{steps} DDIM steps give repeated timesteps over {t}"));
        }
        let a = &schedule.alphas_cumprod;
        let mut betas = Vec::with_capacity(map.len());
        let mut last = 1f32;
        for (j, &ti) in map.iter().enumerate() {
            let cur = a[ti as usize];
            // float32 division, float64 subtraction (numpy 1.26 scalar promotion).
            let ratio = if j == 0 { cur as f64 } else { (cur / last) as f64 };
            betas.push(1.0 - ratio);
            last = cur;
        }
        let mut abar = Vec::with_capacity(betas.len());
        let mut acc = 1f64;
        for b in &betas {
            acc *= 1.0 - b;
            abar.push(acc);
        }
        let n = abar.len();
        let prev: Vec<f64> = std::iter::once(1.0).chain(abar[..n - 1].iter().copied()).collect();
        let next: Vec<f64> = abar[1..].iter().copied().chain(std::iter::once(0.0)).collect();
        let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        Ok(DdimTables {
            timestep_map: map,
            alphas_cumprod_prev: f(prev),
            alphas_cumprod_next: f(next),
            sqrt_one_minus_alphas_cumprod: f(abar.iter().map(|a| (1.0 - a).sqrt()).collect()),
            sqrt_recip_alphas_cumprod: f(abar.iter().map(|a| (1.0 / a).sqrt()).collect()),
            sqrt_recip_alphas_cumprod_m1: f(abar.iter().map(|a| (1.0 / a - 1.0).sqrt()).collect()),
            alphas_cumprod_f64: abar,
        })
    }

    /// Number of DDIM steps N.
    pub fn steps(&self) -> usize {
        self.timestep_map.len() - 1
    }

    /// The DDPM timestep the network sees at DDIM index `j`.
    pub fn model_t(&self, j: usize) -> f32 {
        self.timestep_map[j] as f32
    }

    /// x0 prediction (shift applied, clamped to [-1,1]) and the noise re-derived from it, at DDIM index `j`.
    fn x0_and_eps(&self, x: &Tensor, eps: &Tensor, shift: &Tensor, j: usize) -> Result<(Tensor, Tensor)> {
        let eps = (eps - (shift * self.sqrt_one_minus_alphas_cumprod[j] as f64)?)?;
        let rx = (x * self.sqrt_recip_alphas_cumprod[j] as f64)?;
        let m1 = self.sqrt_recip_alphas_cumprod_m1[j] as f64;
        let x0 = (&rx - (eps * m1)?)?.clamp(-1f32, 1f32)?;
        let eps2 = ((rx - &x0)? / m1)?;
        Ok((x0, eps2))
    }

    /// One sampling step at DDIM index `j` (j = N..1): x_j → x_{j-1}.
    pub fn sample_step(&self, x: &Tensor, eps: &Tensor, shift: &Tensor, j: usize) -> Result<Tensor> {
        let (x0, e) = self.x0_and_eps(x, eps, shift, j)?;
        let a = self.alphas_cumprod_prev[j];
        (x0 * a.sqrt() as f64)? + (e * (1f32 - a).sqrt() as f64)?
    }

    /// One inversion step at DDIM index `j` (j = 0..N-1): x_j → x_{j+1}.
    pub fn invert_step(&self, x: &Tensor, eps: &Tensor, shift: &Tensor, j: usize) -> Result<Tensor> {
        let (x0, e) = self.x0_and_eps(x, eps, shift, j)?;
        let a = self.alphas_cumprod_next[j];
        (x0 * a.sqrt() as f64)? + (e * (1f32 - a).sqrt() as f64)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_map_matches_spec_examples() {
        let s = Schedule::new(&TimestepsArgs { timesteps: 1000, betas_type: "linear".into() }).unwrap();
        assert_eq!(DdimTables::new(&s, 5).unwrap().timestep_map, vec![0, 199, 399, 599, 799, 999]);
        let m = DdimTables::new(&s, 100).unwrap().timestep_map;
        assert_eq!(&m[..4], &[0, 9, 19, 29]);
        assert_eq!(*m.last().unwrap(), 999);
        assert!((s.alphas_cumprod[0] - 0.9999).abs() < 1e-7);
        assert!(DdimTables::new(&s, 0).is_err());
        assert!(DdimTables::new(&s, 1000).is_err());
    }
}
