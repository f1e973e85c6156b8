//! Between volumes and the model's tensors: a `Volume` as a `[1, 1, X, Y, Z]` float32 tensor and back (the
//! layout the autoencoder reads and writes, `i` slowest, like the NIfTI array).

use candle_core::{DType, Device, Tensor};
use ndarray::Array3;

use super::error::ModelError;
use crate::volume::{Affine, Volume};

/// `v` as a `[1, 1, X, Y, Z]` f32 tensor on the CPU.
pub fn volume_tensor(v: &Volume) -> Result<Tensor, ModelError> {
    let [x, y, z] = v.shape();
    let data: Vec<f32> = v.data.as_standard_layout().iter().copied().collect();
    Tensor::from_vec(data, (1, 1, x, y, z), &Device::Cpu).map_err(ModelError::candle("volume to tensor"))
}

/// A `[1, 1, X, Y, Z]` tensor (any device, any float dtype) as a volume with `affine`.
pub fn tensor_volume(t: &Tensor, affine: &Affine) -> Result<Volume, ModelError> {
    let (_, _, x, y, z) = t.dims5().map_err(ModelError::candle("tensor to volume"))?;
    let data = t
        .to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(ModelError::candle("tensor to volume"))?;
    let arr =
        Array3::from_shape_vec((x, y, z), data).map_err(|e| ModelError::BadInput(format!("tensor to volume: {e}")))?;
    Ok(Volume::new(arr, *affine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_index_order() {
        let data = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
        let v = Volume::new(data, Affine::from_spacing_origin([2.0; 3], [1.0, 2.0, 3.0]));
        let t = volume_tensor(&v).unwrap();
        assert_eq!(t.dims(), &[1, 1, 2, 3, 4]);
        let flat = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat[0..5], [0.0, 1.0, 2.0, 3.0, 10.0]);
        let back = tensor_volume(&t, &v.affine).unwrap();
        assert_eq!(back.data, v.data);
        assert_eq!(back.affine, v.affine);
    }
}
