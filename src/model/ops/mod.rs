//! Tensor operations candle lacks (conv3d, 3-D nearest upsampling, pooling, fast depthwise conv2d), on CPU and
//! under the `cuda` feature.

pub mod depthwise;
pub mod layer_norm;
