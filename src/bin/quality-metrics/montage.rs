//! Pictures side by side: PNGs of any heights placed left to right on a black strip (for an interpolation row).

use image::{GenericImage, RgbaImage};

/// The images left to right, top-aligned, on black.
pub fn side_by_side(images: &[RgbaImage]) -> Result<RgbaImage, image::ImageError> {
    let width: u32 = images.iter().map(|i| i.width()).sum();
    let height = images.iter().map(|i| i.height()).max().unwrap_or(0);
    let mut out = RgbaImage::from_pixel(width.max(1), height.max(1), image::Rgba([0, 0, 0, 255]));
    let mut x = 0;
    for i in images {
        out.copy_from(i, x, 0)?;
        x += i.width();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_add_and_heights_take_the_max() {
        let a = RgbaImage::from_pixel(3, 2, image::Rgba([255, 0, 0, 255]));
        let b = RgbaImage::from_pixel(4, 5, image::Rgba([0, 255, 0, 255]));
        let m = side_by_side(&[a, b]).unwrap();
        assert_eq!((m.width(), m.height()), (7, 5));
        assert_eq!(m.get_pixel(0, 0)[0], 255);
        assert_eq!(m.get_pixel(3, 4)[1], 255);
        assert_eq!(m.get_pixel(0, 4)[3], 255);
        assert_eq!(m.get_pixel(0, 4)[0], 0);
    }
}
