//! Tensor operations candle lacks (conv3d, 3-D nearest upsampling, pooling, fast depthwise conv2d, channel
//! LayerNorm), on CPU and under the `cuda` feature. GroupNorm on 5-D tensors uses candle-nn's (faster than
//! PyTorch on CPU, notes/rust-stack.md).

pub mod conv3d;
pub mod depthwise;
pub mod layer_norm;
pub mod resample;

pub use conv3d::{conv3d, Conv3d, Conv3dParams};
pub use resample::{avg_pool_hw, upsample_nearest3d, upsample_nearest_hw};
pub mod fused;
