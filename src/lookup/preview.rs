//! Preview pictures of a volume: three orthogonal slices through its centre, as one labelled PNG.
//!
//! The slices are planes of **world space** (RAS+ mm) through the world position of the volume's centre voxel,
//! sampled through the inverse affine with trilinear interpolation onto square display pixels, so the picture is
//! upright and correctly sided whatever the acquisition orientation or axis order. Display convention:
//! **radiological** — the patient's right is on the image's left in the axial and coronal views; the sagittal
//! view has anterior on the left; superior (or anterior, axial) is at the top. Each panel carries its side
//! letters (R/L/A/P/S/I), the picture carries a label line, and a synthetic scan carries a red SYNTHETIC banner.
//! The intensity window is the 0.5th–99.5th percentile of the volume's (non-background) values.

use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage};
use thiserror::Error;

use super::font::{draw_text, text_width, GLYPH_H};
use crate::Volume;

/// Longest side of one panel in display pixels (bounds the allocation whatever the affine claims).
pub const PANEL_MAX: usize = 256;
/// Small volumes are magnified until their longest panel side reaches this.
pub const PANEL_MIN: usize = 128;
/// Colour of the SYNTHETIC banner (tests look for it).
pub const BANNER_RGB: [u8; 3] = [200, 0, 0];
/// Colour of the side letters.
pub const LETTER_RGB: [u8; 3] = [255, 220, 0];

const MARGIN: usize = 20;
const BANNER_H: usize = 30;
const LABEL_H: usize = 24;
const BACKGROUND: [u8; 3] = [24, 24, 24];
const WINDOW_SAMPLES: usize = 1 << 20;

/// Why no preview could be drawn.
#[derive(Debug, Error)]
pub enum PreviewError {
    #[error("the volume is empty (shape {0:?})")]
    Empty([usize; 3]),
    #[error("the volume's affine is singular or not finite, so its orientation is unknown")]
    BadAffine,
    #[error("encoding the PNG: {0}")]
    Png(#[from] image::ImageError),
}

/// One of the three orthogonal views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Axial,
    Coronal,
    Sagittal,
}

impl View {
    /// All three, in display order.
    pub const ALL: [View; 3] = [View::Axial, View::Coronal, View::Sagittal];

    /// The side letters at the image's left, right, top and bottom edges (radiological convention).
    pub fn sides(self) -> [&'static str; 4] {
        match self {
            View::Axial => ["R", "L", "A", "P"],
            View::Coronal => ["R", "L", "S", "I"],
            View::Sagittal => ["A", "P", "S", "I"],
        }
    }

    /// Upper-case name drawn above the panel.
    pub fn name(self) -> &'static str {
        match self {
            View::Axial => "AXIAL",
            View::Coronal => "CORONAL",
            View::Sagittal => "SAGITTAL",
        }
    }

    /// (world axis along image columns, world axis along image rows, world axis normal to the plane).
    /// Columns and rows both run towards decreasing world coordinates (R→L, A→P, S→I).
    fn axes(self) -> (usize, usize, usize) {
        match self {
            View::Axial => (0, 1, 2),
            View::Coronal => (0, 2, 1),
            View::Sagittal => (1, 2, 0),
        }
    }
}

/// One resampled slice: grey levels 0–255 (after windowing), row-major, `width × height`.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub view: View,
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Panel {
    /// Grey level at column `x`, row `y`.
    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }
}

/// The three windowed mid-slices of `volume` (axial, coronal, sagittal).
pub fn render_views(volume: &Volume) -> Result<[Panel; 3], PreviewError> {
    let shape = volume.shape();
    if shape.contains(&0) {
        return Err(PreviewError::Empty(shape));
    }
    let a = &volume.affine;
    if a.0.iter().flatten().any(|v| !v.is_finite()) {
        return Err(PreviewError::BadAffine);
    }
    let inv = a.inverse().ok_or(PreviewError::BadAffine)?;
    // World bounding box of the grid (voxel edges) and the world centre.
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for corner in 0..8 {
        let v = [0, 1, 2].map(|d| if corner & (1 << d) != 0 { shape[d] as f64 - 0.5 } else { -0.5 });
        let w = a.apply(v);
        for d in 0..3 {
            lo[d] = lo[d].min(w[d]);
            hi[d] = hi[d].max(w[d]);
        }
    }
    let centre = a.apply([0, 1, 2].map(|d| (shape[d] as f64 - 1.0) / 2.0));
    let extent = [0, 1, 2].map(|d| hi[d] - lo[d]);
    let longest = extent.iter().cloned().fold(0.0, f64::max);
    let min_vox = a.voxel_sizes().iter().cloned().fold(f64::INFINITY, f64::min);
    let px = min_vox.max(longest / PANEL_MAX as f64).min(longest / PANEL_MIN as f64);
    if !(px.is_finite() && px > 0.0) {
        return Err(PreviewError::BadAffine);
    }
    let (win_lo, win_hi) = window(volume);
    let scale = 255.0 / (win_hi - win_lo);
    Ok(View::ALL.map(|view| {
        let (cu, cv, cn) = view.axes();
        let side = |d: usize| ((extent[d] / px).round() as usize).clamp(1, PANEL_MAX);
        let (width, height) = (side(cu), side(cv));
        let mut pixels = vec![0u8; width * height];
        for y in 0..height {
            for x in 0..width {
                let mut w = [0.0; 3];
                w[cu] = hi[cu] - (x as f64 + 0.5) * px;
                w[cv] = hi[cv] - (y as f64 + 0.5) * px;
                w[cn] = centre[cn];
                if let Some(v) = sample(volume, inv.apply(w)) {
                    pixels[y * width + x] = ((v - win_lo) * scale).clamp(0.0, 255.0).round() as u8;
                }
            }
        }
        Panel { view, width, height, pixels }
    }))
}

/// Trilinear interpolation at voxel coordinates `p`; `None` outside the grid (beyond half a voxel).
fn sample(volume: &Volume, p: [f64; 3]) -> Option<f64> {
    let shape = volume.shape();
    let mut base = [0usize; 3];
    let mut frac = [0.0f64; 3];
    for d in 0..3 {
        let n = shape[d] as f64;
        if !(p[d] >= -0.5 && p[d] <= n - 0.5) {
            return None;
        }
        let c = p[d].clamp(0.0, n - 1.0);
        let b = (c.floor() as usize).min(shape[d].saturating_sub(2));
        base[d] = b;
        frac[d] = if shape[d] == 1 { 0.0 } else { c - b as f64 };
    }
    let mut acc = 0.0;
    for corner in 0..8 {
        let mut wgt = 1.0;
        let mut idx = [0usize; 3];
        for d in 0..3 {
            let up = corner & (1 << d) != 0;
            if up && shape[d] == 1 {
                wgt = 0.0;
            }
            idx[d] = (base[d] + usize::from(up)).min(shape[d] - 1);
            wgt *= if up { frac[d] } else { 1.0 - frac[d] };
        }
        if wgt != 0.0 {
            let v = f64::from(volume.data[idx]);
            acc += wgt * if v.is_finite() { v } else { 0.0 };
        }
    }
    Some(acc)
}

/// Robust intensity window: 0.5th and 99.5th percentiles of a bounded sample of the finite values, taken over
/// the non-zero ones when at least 5 % are non-zero (a brain in a zero background). Never an empty window.
fn window(volume: &Volume) -> (f64, f64) {
    let total = volume.data.len();
    let stride = total.div_ceil(WINDOW_SAMPLES).max(1);
    let mut vals: Vec<f32> = volume.data.iter().step_by(stride).copied().filter(|v| v.is_finite()).collect();
    let nonzero = vals.iter().filter(|v| **v != 0.0).count();
    if nonzero * 20 >= vals.len() && nonzero > 0 {
        vals.retain(|v| *v != 0.0);
    }
    if vals.is_empty() {
        return (0.0, 1.0);
    }
    vals.sort_unstable_by(f32::total_cmp);
    let q = |f: f64| f64::from(vals[((vals.len() - 1) as f64 * f).round() as usize]);
    let (lo, hi) = (q(0.005), q(0.995));
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    }
}

/// The labelled three-view picture of `volume`.
pub fn preview_image(volume: &Volume, label: &str, synthetic: bool) -> Result<RgbImage, PreviewError> {
    let panels = render_views(volume)?;
    let cell_h = panels.iter().map(|p| p.height).max().unwrap_or(1) + 2 * MARGIN;
    let cells_w: usize = panels.iter().map(|p| p.width + 2 * MARGIN).sum();
    let banner_text = "SYNTHETIC";
    let width = cells_w.max(text_width(banner_text, 3) + 2 * MARGIN);
    let top = if synthetic { BANNER_H } else { 0 } + LABEL_H;
    let height = top + cell_h;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, Rgb(BACKGROUND));
    let put = |img: &mut RgbImage, x: usize, y: usize, c: [u8; 3]| {
        if x < width && y < height {
            img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    };
    if synthetic {
        for y in 0..BANNER_H {
            for x in 0..width {
                put(&mut img, x, y, BANNER_RGB);
            }
        }
        let tx = (width - text_width(banner_text, 3)) / 2;
        draw_text(banner_text, tx, (BANNER_H - GLYPH_H * 3) / 2, 3, |x, y| put(&mut img, x, y, [255; 3]));
    }
    // The label, cut to the picture's width.
    let max_chars = (width - 8) / (super::font::ADVANCE * 2);
    let label: String = label.chars().take(max_chars).collect();
    let label_y = top - LABEL_H + (LABEL_H - GLYPH_H * 2) / 2;
    draw_text(&label, 4, label_y, 2, |x, y| put(&mut img, x, y, [255; 3]));
    let mut x0 = 0;
    for p in &panels {
        let px0 = x0 + MARGIN;
        let py0 = top + (cell_h - p.height) / 2;
        for y in 0..p.height {
            for x in 0..p.width {
                let g = p.at(x, y);
                put(&mut img, px0 + x, py0 + y, [g, g, g]);
            }
        }
        let [left, right, up, down] = p.view.sides();
        let (lw, lh) = (text_width("R", 2), GLYPH_H * 2);
        let mid_y = py0 + p.height / 2 - lh / 2;
        let mid_x = px0 + p.width / 2 - lw / 2;
        let mut letter = |s: &str, x: usize, y: usize| draw_text(s, x, y, 2, |a, b| put(&mut img, a, b, LETTER_RGB));
        letter(left, px0 - MARGIN / 2 - lw / 2, mid_y);
        letter(right, px0 + p.width + MARGIN / 2 - lw / 2, mid_y);
        letter(up, mid_x, py0 - (MARGIN + lh) / 2);
        letter(down, mid_x, py0 + p.height + (MARGIN - lh) / 2);
        draw_text(p.view.name(), x0 + 2, top + 2, 1, |a, b| put(&mut img, a, b, [160; 3]));
        x0 += p.width + 2 * MARGIN;
    }
    Ok(img)
}

/// [`preview_image`] encoded as PNG bytes.
pub fn preview_png(volume: &Volume, label: &str, synthetic: bool) -> Result<Vec<u8>, PreviewError> {
    let img = preview_image(volume, label, synthetic)?;
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[cfg(test)]
#[path = "preview_tests.rs"]
mod tests;
