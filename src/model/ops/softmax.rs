//! Softmax over the last axis for the networks' attention. candle-nn's fast `softmax_last_dim` kernel records
//! no backward, so a tracked input (training) takes candle-nn's composed softmax (max-shifted exp over its
//! sum), which autograd differentiates; untracked inference keeps the fast kernel.

use candle_core::{Result, Tensor, D};

/// Softmax over the last axis, differentiable when `x` is tracked.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

#[cfg(test)]
mod tests {
    use super::super::grad_checks::{fd_check, FdOptions};
    use super::*;
    use candle_core::{Device, Var};

    /// Both paths agree, and the tracked path's gradient matches f64 central differences.
    #[test]
    fn tracked_softmax_is_differentiable() {
        let x = Tensor::randn(0f32, 2.0, (3, 7), &Device::Cpu).expect("x");
        let fast = softmax_last_dim(&x).expect("fast");
        let v = Var::from_tensor(&x).expect("var");
        let tracked = softmax_last_dim(v.as_tensor()).expect("tracked");
        let d: f32 = (fast - &tracked).and_then(|d| d.abs()?.max_all()?.to_scalar()).expect("diff");
        assert!(d < 1e-6, "{d}");
        let e =
            fd_check(&[x], &[0], |t: &[Tensor]| softmax_last_dim(&t[0]), FdOptions { probes: 21, ..FdOptions::f64() })
                .expect("fd")
                .worst_rel();
        assert!(e < 1e-4, "{e}");
    }
}
