//! Tensor operations candle lacks (conv3d, 3-D nearest upsampling, pooling, fast depthwise conv2d, channel
//! LayerNorm, fused GroupNorm + SiLU), on CPU and under the `cuda` feature.

pub mod conv3d;
mod conv3d_grad;
mod conv3d_shifted;
pub mod depthwise;
mod depthwise_grad;
mod erf;
pub mod grad_checks;
pub mod group_norm;
pub mod layer_norm;
mod layer_norm_grad;
mod matmul;
pub mod resample;
pub mod softmax;

pub mod fused;
mod fused_grad;

pub use conv3d::{conv3d, Conv3d, Conv3dParams};
pub use group_norm::{group_norm, GroupNorm};
pub use resample::{avg_pool_hw, upsample_nearest3d, upsample_nearest_hw};

use candle_core::{CpuStorage, Layout, Result};

/// The f32 elements a custom op's CPU operand covers; `what` names the operand (`"depthwise_conv2d: weight"`)
/// in the error when it is not contiguous or not f32.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}
