//! Nearest-neighbour ×2 upsampling and (1,2,2) average pooling on 5-D `[N,C,D,H,W]` tensors, built from
//! candle's broadcast/reshape (measured as fast as PyTorch in notes/rust-stack.md), so they run on any device.

use candle_core::{Result, Tensor};

/// Repeat every element twice along `axis` (nearest ×2 on that axis).
fn repeat2(x: &Tensor, axis: usize) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let up = x.unsqueeze(axis + 1)?;
    let mut b = up.dims().to_vec();
    b[axis + 1] = 2;
    let y = up.broadcast_as(b)?.contiguous()?;
    dims[axis] *= 2;
    y.reshape(dims)
}

/// `F.interpolate(scale_factor=2, mode="nearest")` on D, H and W (the AEKL's Upsample).
pub fn upsample_nearest3d(x: &Tensor) -> Result<Tensor> {
    x.dims5()?;
    repeat2(&repeat2(&repeat2(x, 4)?, 3)?, 2)
}

/// Nearest ×2 on H and W only, D unchanged (the ShiftUNet's Upsample in 3-D).
pub fn upsample_nearest_hw(x: &Tensor) -> Result<Tensor> {
    x.dims5()?;
    repeat2(&repeat2(x, 4)?, 3)
}

/// `AvgPool3d(kernel (1,2,2), stride (1,2,2))` (the ShiftUNet's Downsample); odd H/W drop the last row/column.
pub fn avg_pool_hw(x: &Tensor) -> Result<Tensor> {
    let (n, c, d, h, w) = x.dims5()?;
    let (h2, w2) = (h / 2, w / 2);
    if h2 == 0 || w2 == 0 {
        candle_core::bail!("avg_pool_hw: H×W {h}×{w} is too small to pool by 2");
    }
    let x = x.narrow(3, 0, h2 * 2)?.narrow(4, 0, w2 * 2)?;
    let x = x.reshape((n * c * d, h2, 2, w2, 2))?;
    (x.sum(4)?.sum(2)? * 0.25)?.reshape((n, c, d, h2, w2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn nearest_and_pool_move_the_right_elements() {
        let x = Tensor::arange(0f32, 8., &Device::Cpu).unwrap().reshape((1, 1, 2, 2, 2)).unwrap();
        let u = upsample_nearest3d(&x).unwrap();
        assert_eq!(u.dims(), &[1, 1, 4, 4, 4]);
        let v = u.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // out[z,y,x] = in[z/2,y/2,x/2]
        for z in 0..4 {
            for y in 0..4 {
                for xx in 0..4 {
                    assert_eq!(v[z * 16 + y * 4 + xx], ((z / 2) * 4 + (y / 2) * 2 + xx / 2) as f32);
                }
            }
        }
        let h = upsample_nearest_hw(&x).unwrap();
        assert_eq!(h.dims(), &[1, 1, 2, 4, 4]);
        let back = avg_pool_hw(&h).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let p = avg_pool_hw(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(p, vec![1.5, 5.5]);
    }
}
