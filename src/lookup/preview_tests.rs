//! Tests of `preview.rs`: sides land where the radiological convention puts them, for any affine.

use ndarray::Array3;

use super::*;
use crate::Affine;

/// A volume on `affine`/`shape` whose value is 1000 within 6 mm of each world offset in `blobs` (relative to the
/// world position of the centre voxel) and 100 elsewhere.
fn blob_volume(affine: Affine, shape: [usize; 3], blobs: &[[f64; 3]]) -> Volume {
    let centre = affine.apply([0, 1, 2].map(|d| (shape[d] as f64 - 1.0) / 2.0));
    let data = Array3::from_shape_fn((shape[0], shape[1], shape[2]), |(i, j, k)| {
        let w = affine.apply([i as f64, j as f64, k as f64]);
        let near = blobs.iter().any(|b| (0..3).map(|d| (w[d] - centre[d] - b[d]).powi(2)).sum::<f64>() < 36.0);
        if near {
            1000.0
        } else {
            100.0
        }
    });
    Volume::new(data, affine)
}

/// Centroid (x, y) of the bright pixels as fractions of the panel's width and height.
fn bright_centroid(p: &Panel) -> (f64, f64) {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for y in 0..p.height {
        for x in 0..p.width {
            if p.at(x, y) > 200 {
                sx += x as f64 + 0.5;
                sy += y as f64 + 0.5;
                n += 1.0;
            }
        }
    }
    assert!(n > 0.0, "{:?}: no bright pixel", p.view);
    (sx / n / p.width as f64, sy / n / p.height as f64)
}

/// One blob in each mid-plane, each in a different quadrant of its view:
/// axial: patient right (+x) and posterior (−y) → image left, bottom;
/// coronal: patient left (−x) and superior (+z) → image right, top;
/// sagittal: anterior (+y) and inferior (−z) → image left, bottom.
const BLOBS: [[f64; 3]; 3] = [[30.0, -20.0, 0.0], [-30.0, 0.0, 25.0], [0.0, 20.0, -25.0]];
const EXPECTED: [(bool, bool); 3] = [(true, false), (false, true), (true, false)];

fn check_orientation(affine: Affine, shape: [usize; 3]) {
    let v = blob_volume(affine, shape, &BLOBS);
    let panels = render_views(&v).expect("renders");
    for (p, (left, top)) in panels.iter().zip(EXPECTED) {
        let (cx, cy) = bright_centroid(p);
        assert_eq!(cx < 0.5, left, "{:?}: centroid x {cx:.2} (affine {affine:?})", p.view);
        assert_eq!(cy < 0.5, top, "{:?}: centroid y {cy:.2} (affine {affine:?})", p.view);
        // The blob is 30 or 20–25 mm off centre: well off the middle, not smeared across it.
        assert!((cx - 0.5).abs() > 0.15 || (cy - 0.5).abs() > 0.15, "{:?}: ({cx:.2}, {cy:.2})", p.view);
    }
}

#[test]
fn ras_axes_one_mm() {
    check_orientation(Affine::from_spacing_origin([1.0; 3], [-40.0; 3]), [80, 80, 80]);
}

#[test]
fn permuted_flipped_anisotropic_axes() {
    // i runs posterior (2 mm), j superior (1.5 mm), k towards the patient's left (1.2 mm): a sagittal-like
    // acquisition stored in an LPS-ish order.
    let a = Affine::from_columns([0.0, -2.0, 0.0], [0.0, 0.0, 1.5], [-1.2, 0.0, 0.0], [50.0, 45.0, -45.0]);
    check_orientation(a, [45, 60, 70]);
}

#[test]
fn oblique_axes() {
    let (c, s) = (20f64.to_radians().cos(), 20f64.to_radians().sin());
    let a = Affine::from_columns([c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0], [-30.0, -50.0, -40.0]);
    check_orientation(a, [80, 80, 80]);
}

#[test]
fn panels_are_isotropic_and_bounded() {
    // 1 × 1 × 3 mm voxels: the axial panel is square in mm and so in pixels; panels stay within the bounds.
    let a = Affine::from_spacing_origin([1.0, 1.0, 3.0], [0.0; 3]);
    let p = render_views(&blob_volume(a, [90, 90, 30], &[])).expect("renders");
    assert_eq!(p[0].width, p[0].height);
    assert_eq!(p[1].width, p[1].height);
    let huge = Affine::from_spacing_origin([1e6, 1.0, 1.0], [0.0; 3]);
    let p = render_views(&blob_volume(huge, [4, 4, 4], &[])).expect("renders");
    assert!(p.iter().all(|p| p.width <= PANEL_MAX && p.height <= PANEL_MAX));
    let tiny = render_views(&blob_volume(Affine::identity(), [8, 8, 8], &[])).expect("renders");
    assert!(tiny.iter().all(|p| p.width >= PANEL_MIN));
}

fn count(img: &RgbImage, rgb: [u8; 3], rows: std::ops::Range<u32>) -> usize {
    img.enumerate_pixels().filter(|(_, y, p)| rows.contains(y) && p.0 == rgb).count()
}

#[test]
fn synthetic_banner_is_drawn_only_for_synthetic_scans() {
    let v = blob_volume(Affine::from_spacing_origin([2.0; 3], [-40.0; 3]), [40, 40, 40], &BLOBS);
    let syn = preview_image(&v, "P001 2020-01-02", true).expect("renders");
    let acq = preview_image(&v, "P001 2020-01-02", false).expect("renders");
    let banner_rows = 0..BANNER_H as u32;
    let red = count(&syn, BANNER_RGB, banner_rows.clone());
    let white = count(&syn, [255; 3], banner_rows);
    assert!(red > syn.width() as usize * BANNER_H / 2, "red banner pixels: {red}");
    assert!(white > 100, "SYNTHETIC text pixels: {white}");
    assert_eq!(count(&acq, BANNER_RGB, 0..acq.height()), 0);
    assert_eq!(syn.height(), acq.height() + BANNER_H as u32);
    // Side letters are drawn in both.
    assert!(count(&acq, LETTER_RGB, 0..acq.height()) > 6 * 20);
}

#[test]
fn png_round_trips() {
    let v = blob_volume(Affine::identity(), [20, 20, 20], &[]);
    let png = preview_png(&v, "x", false).expect("encodes");
    let back = image::load_from_memory(&png).expect("decodes").to_rgb8();
    assert_eq!(back, preview_image(&v, "x", false).expect("renders"));
}

#[test]
fn bad_volumes_are_errors_not_panics() {
    let empty = Volume::new(Array3::zeros((0, 4, 4)), Affine::identity());
    assert!(matches!(render_views(&empty), Err(PreviewError::Empty(_))));
    let flat = Affine::from_columns([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0; 3]);
    assert!(matches!(render_views(&blob_volume(flat, [4, 4, 4], &[])), Err(PreviewError::BadAffine)));
    let mut nan = Affine::identity();
    nan.0[0][3] = f64::NAN;
    assert!(matches!(render_views(&Volume::new(Array3::zeros((4, 4, 4)), nan)), Err(PreviewError::BadAffine)));
    // Constant, NaN-filled and single-slice volumes still draw.
    let mut v = Volume::new(Array3::from_elem((5, 5, 1), f32::NAN), Affine::identity());
    assert!(preview_png(&v, "", true).is_ok());
    v.data.fill(7.0);
    assert!(preview_png(&v, "", false).is_ok());
}
