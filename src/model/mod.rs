//! The LDAE model (Lozupone et al., 2025), ported from shared SPEC.md: AutoencoderKL (3-D), semantic encoder
//! (ConvNeXt over axial slices + attention pooling), ShiftUNet denoiser, DDIM sampling/inversion,
//! interpolation and manipulation; weights loading (`.pth` and safetensors); 3-D ops on CPU and CUDA.

pub mod autoencoder;
pub mod codes;
pub mod config;
pub mod convnext;
pub mod ddim;
pub mod error;
pub mod interp;
pub mod keyset;
pub mod ldae;
pub mod manifest;
pub mod ops;
pub mod pickle;
pub mod semantic;
pub mod tensor_volume;
pub mod train;
pub mod unet;
pub mod weights;
