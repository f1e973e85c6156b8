//! The header's claims against each other, the Pixel Data actually stored and the [`Limits`]: checked when the
//! header is read, before any pixel buffer is sized from them.
//!
//! Rows, Columns, NumberOfFrames and the mosaic tile count are bounded by `max_dim`, `max_voxels` and
//! `max_frames`; Rows × Columns × frames × samples × BitsAllocated must fit in the native Pixel Data, and
//! encapsulated Pixel Data must hold at least one fragment per frame (and an offset table, when present, with one
//! entry per frame). A file that fails is refused on its own, naming the claim.

use super::guard::{PixelExtent, Scan};
use super::read::InstanceHeader;
use super::DicomError;
use crate::limits::Limits;

/// Check an image header's claims (see the module doc).
pub fn check(h: &InstanceHeader, scan: &Scan, limits: &Limits) -> Result<(), DicomError> {
    let path = || h.path.clone();
    let inconsistent = |reason: String| DicomError::Inconsistent { path: path(), reason };
    let limit = |source| DicomError::Limit { path: path(), source };
    let (rows, cols) = (h.rows.unwrap_or(0) as u64, h.columns.unwrap_or(0) as u64);
    if rows == 0 || cols == 0 {
        return Err(inconsistent(format!("{cols}x{rows} pixels")));
    }
    Limits::check("Rows", rows, limits.max_dim as u64).map_err(limit)?;
    Limits::check("Columns", cols, limits.max_dim as u64).map_err(limit)?;
    let frames = h.number_of_frames.max(1) as u64;
    Limits::check("NumberOfFrames", frames, limits.max_frames).map_err(limit)?;
    let voxels = limits.voxels(&[cols, rows, frames]).map_err(limit)?;
    if let Some(n) = h.mosaic_images {
        Limits::check("NumberOfImagesInMosaic", n as u64, limits.max_frames).map_err(limit)?;
    }
    let bits = h.bits_allocated.unwrap_or(0) as u64;
    if bits == 0 || bits > 64 {
        return Err(inconsistent(format!("BitsAllocated {bits}")));
    }
    if let Some(stored) = h.bits_stored {
        if stored as u64 > bits || stored == 0 {
            return Err(inconsistent(format!("BitsStored {stored} with BitsAllocated {bits}")));
        }
    }
    let spp = h.samples_per_pixel.unwrap_or(1) as u64;
    if spp == 0 || spp > 4 {
        return Err(inconsistent(format!("SamplesPerPixel {spp}")));
    }
    match scan.pixel_data {
        Some(PixelExtent::Native { bytes, .. }) => {
            // voxels ≤ max_voxels, spp ≤ 4, bits ≤ 64: no overflow in u64.
            let need = (voxels * spp * bits).div_ceil(8);
            if bytes < need {
                return Err(inconsistent(format!(
                    "Pixel Data holds {bytes} bytes but {cols}x{rows}, {frames} frame(s) of {bits}-bit samples \
                     need {need}"
                )));
            }
        }
        Some(PixelExtent::Encapsulated { fragments, offsets }) => {
            if fragments < frames {
                return Err(inconsistent(format!("{fragments} Pixel Data fragment(s) for {frames} frame(s)")));
            }
            if offsets != 0 && offsets != frames {
                return Err(inconsistent(format!("Basic Offset Table has {offsets} entries for {frames} frame(s)")));
            }
        }
        None => {}
    }
    Ok(())
}
