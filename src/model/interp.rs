//! Latent arithmetic of SPEC §5: lerp of y_sem, slerp of x_T over the whole flattened tensor, and the attribute
//! manipulation of y_sem along a direction in normalised space.

use candle_core::{Result, Tensor};

/// `(1-α)·a + α·b`.
pub fn lerp(a: &Tensor, b: &Tensor, alpha: f32) -> Result<Tensor> {
    (a * (1f32 - alpha) as f64)? + (b * alpha as f64)?
}

/// `θ = arccos(a·b / (‖a‖‖b‖))` over the flattened tensors, in float32.
pub fn theta(a: &Tensor, b: &Tensor) -> Result<f32> {
    let af = a.flatten_all()?;
    let bf = b.flatten_all()?;
    let dot = (&af * &bf)?.sum_all()?.to_scalar::<f32>()?;
    let na = af.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    let nb = bf.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    Ok((dot / (na * nb)).acos())
}

/// Spherical interpolation `a·sin((1-α)θ)/sin θ + b·sin(αθ)/sin θ`.
///
/// Guard (not in the reference, which returns NaN/huge values there): when `sin θ < 1e-6` (identical, parallel or
/// antiparallel inputs) or θ is NaN (a cosine rounding past ±1), this falls back to [`lerp`].
pub fn slerp(a: &Tensor, b: &Tensor, alpha: f32) -> Result<Tensor> {
    let th = theta(a, b)?;
    let s = th.sin();
    if !th.is_finite() || s.abs() < 1e-6 {
        return lerp(a, b, alpha);
    }
    (a * (((1f32 - alpha) * th).sin() / s) as f64)? + (b * ((alpha * th).sin() / s) as f64)?
}

/// Move `y [B,E]` by `scale·sqrt(E)` along the unit `direction [1,E]` in the space normalised by per-dimension
/// `mean`/`std` (`[E]` each), and map back: `((y-mean)/std + scale·sqrt(E)·d/max(‖d‖,1e-12))·std + mean`.
pub fn manipulate_y(y: &Tensor, mean: &Tensor, std: &Tensor, direction: &Tensor, scale: f32) -> Result<Tensor> {
    let e = y.dim(1)?;
    let mean = mean.reshape((1, e))?;
    let std = std.reshape((1, e))?;
    let d = direction.reshape((1, e))?;
    let norm = d.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?.max(1e-12);
    let yn = y.broadcast_sub(&mean)?.broadcast_div(&std)?;
    let step = (d * (scale * (e as f32).sqrt() / norm) as f64)?;
    yn.broadcast_add(&step)?.broadcast_mul(&std)?.broadcast_add(&mean)
}

/// `(y - mean)/std`.
pub fn normalize_y(y: &Tensor, mean: &Tensor, std: &Tensor) -> Result<Tensor> {
    let e = y.dim(1)?;
    y.broadcast_sub(&mean.reshape((1, e))?)?.broadcast_div(&std.reshape((1, e))?)
}
