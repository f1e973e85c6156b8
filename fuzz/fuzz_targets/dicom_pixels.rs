//! Pixel decode: the header reader, then `ldae::dicom::pixels::decode_slices` on the frames (or mosaic tiles)
//! the header claims — the same calls the converter makes once a stack has passed its geometry checks. The number
//! of slices asked for is capped so one input stays fast; the claimed frame count itself is left as the file says.
#![no_main]

use ldae::dicom::pixels::{decode_slices, SliceRequest};
use libfuzzer_sys::fuzz_target;

/// At most this many slices requested per input (the first ones and the last one).
const MAX_REQUESTS: u32 = 8;

fuzz_target!(|data: &[u8]| {
    let path = ldae_fuzz::scratch_file("input.dcm", data);
    let Ok(h) = ldae::dicom::read_header(&path) else { return };
    let slope = h.frames.first().map_or(1.0, |f| f.rescale_slope);
    let intercept = h.frames.first().map_or(0.0, |f| f.rescale_intercept);
    let req = |frame: u32, tile: Option<(u32, u32)>| SliceRequest { frame, tile, slope, intercept };
    let mut requests = Vec::new();
    match h.mosaic_images.filter(|_| h.is_mosaic()) {
        Some(n) if n > 0 => {
            let side = (f64::from(n)).sqrt().ceil() as u32;
            requests.extend((0..n.min(MAX_REQUESTS)).map(|i| req(0, Some((i, side)))));
            requests.push(req(0, Some((n - 1, side))));
        }
        _ => {
            let frames = h.number_of_frames.max(1);
            requests.extend((0..frames.min(MAX_REQUESTS)).map(|f| req(f, None)));
            requests.push(req(frames - 1, None));
        }
    }
    let _ = decode_slices(&h, &requests, &ldae::limits::Limits::default());
});
