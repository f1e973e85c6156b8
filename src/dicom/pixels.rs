//! Pixel decoding: one file's frames (or mosaic tiles) → `f32` slices with Rescale Slope/Intercept applied.
//!
//! Native (uncompressed, little-endian) pixel data is read straight from the byte range the header scan found
//! ([`InstanceHeader::native_pixels`]): one positioned read, no second parse of the file. Other native data is
//! read from the parsed element; encapsulated data goes through
//! dicom-pixeldata's codecs (RLE, JPEG baseline/lossless, JPEG 2000 via OpenJPEG), except 12-bit JPEG extended
//! (which those codecs cannot read) and JPEG-LS (so that no C++ library is needed), which ldae decodes itself:
//! [`super::jpeg12`], [`super::jpegls`]. Stored values are masked to
//! BitsStored and sign-extended when PixelRepresentation is 1. Each returned slice is row-major (column index
//! fastest), which is the `(i, j)` order of a [`crate::volume::Volume`] slice.

use std::path::Path;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::codestream::{self, Expect};
use super::read::{one_line, InstanceHeader};
use super::DicomError;
use crate::limits::Limits;

/// JPEG Extended (Process 2 & 4): 8- or 12-bit lossy JPEG.
pub const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// Transfer syntaxes whose pixel data ldae decodes itself (whatever the codec registry says).
pub fn own_decoder(ts_uid: &str) -> bool {
    ts_uid == JPEG_EXTENDED
        || ts_uid == super::jpegls::JPEG_LS_LOSSLESS
        || ts_uid == super::jpegls::JPEG_LS_NEAR_LOSSLESS
}

/// What to cut out of a file: a frame, optionally one mosaic tile `(index, tiles per side)`, and its rescale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceRequest {
    pub frame: u32,
    pub tile: Option<(u32, u32)>,
    pub slope: f64,
    pub intercept: f64,
}

/// Layout of the stored samples.
#[derive(Debug, Clone, Copy)]
struct Format {
    rows: usize,
    cols: usize,
    frames: usize,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
}

impl Format {
    fn from_header(h: &InstanceHeader) -> Result<Format, DicomError> {
        let unsupported = |reason: String| DicomError::UnsupportedPixels { path: h.path.clone(), reason };
        let spp = h.samples_per_pixel.unwrap_or(1);
        if spp != 1 {
            return Err(unsupported(format!("{spp} samples per pixel (colour); a volume holds one")));
        }
        if let Some(pi) = &h.photometric_interpretation {
            if !pi.starts_with("MONOCHROME") {
                return Err(unsupported(format!("photometric interpretation {pi}")));
            }
        }
        let bits_allocated = h.bits_allocated.unwrap_or(16);
        if !matches!(bits_allocated, 8 | 16 | 32) {
            return Err(unsupported(format!("BitsAllocated {bits_allocated}")));
        }
        let bits_stored = h.bits_stored.unwrap_or(bits_allocated).clamp(1, bits_allocated);
        Ok(Format {
            rows: h.rows.unwrap_or(0) as usize,
            cols: h.columns.unwrap_or(0) as usize,
            frames: h.number_of_frames.max(1) as usize,
            bits_allocated,
            bits_stored,
            signed: h.pixel_representation == Some(1),
        })
    }

    fn frame_len(&self) -> usize {
        self.rows * self.cols
    }

    /// A stored sample → its value (masked to BitsStored, sign-extended).
    #[inline]
    fn value(&self, raw: u32) -> f64 {
        let bs = self.bits_stored as u32;
        let masked = if bs >= 32 { raw } else { raw & ((1u32 << bs) - 1) };
        if self.signed && bs < 32 && masked & (1u32 << (bs - 1)) != 0 {
            masked as i64 as f64 - (1i64 << bs) as f64
        } else if self.signed && bs >= 32 {
            masked as i32 as f64
        } else {
            masked as f64
        }
    }
}

/// Samples of all frames, as stored.
enum Samples<'a> {
    U16(&'a [u16]),
    I16(&'a [i16]),
    Bytes(std::borrow::Cow<'a, [u8]>),
    U32(&'a [u32]),
    I32(&'a [i32]),
}

impl Samples<'_> {
    fn len(&self, bits: u16) -> usize {
        match self {
            Samples::U16(v) => v.len(),
            Samples::I16(v) => v.len(),
            Samples::U32(v) => v.len(),
            Samples::I32(v) => v.len(),
            Samples::Bytes(b) => b.len() / (bits as usize / 8),
        }
    }

    #[inline]
    fn raw(&self, bits: u16, i: usize) -> u32 {
        match self {
            Samples::U16(v) => v[i] as u32,
            Samples::I16(v) => v[i] as u16 as u32,
            Samples::U32(v) => v[i],
            Samples::I32(v) => v[i] as u32,
            Samples::Bytes(b) => match bits {
                8 => b[i] as u32,
                16 => u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32,
                _ => u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]),
            },
        }
    }
}

/// Open the whole file (pixels included), after the pre-scan has bounded it ([`super::guard`]).
pub fn open_full(path: &Path, limits: &Limits) -> Result<DefaultDicomObject, DicomError> {
    let file = super::prefix::HeadFile::open(path)?;
    let scan = super::guard::scan_open(&file, path, limits)?;
    // No value is larger than the file, unless deflated (then bounded by max_inflated_bytes, walked by the scan).
    let cap = if scan.deflated { limits.max_inflated_bytes } else { file.size().saturating_add(16 << 20) };
    super::read::parse_opened(&file, &scan, path, cap, None)
}

/// Check, without decoding, that every frame codestream of an encapsulated file agrees with its header (see
/// [`codestream`]); native (uncompressed) files are already bounded by the header scan. The daemon's intake runs
/// this after the header so that a file whose compressed frames lie is quarantined as a file, instead of failing
/// its whole series at conversion. It parses the whole file (bounded by the pre-scan), never a codec.
pub fn check_codestreams(h: &InstanceHeader, limits: &Limits) -> Result<(), DicomError> {
    let encapsulated = TransferSyntaxRegistry.get(&h.transfer_syntax).is_some_and(|ts| ts.is_encapsulated_pixel_data());
    if !encapsulated {
        return Ok(());
    }
    let obj = open_full(&h.path, limits)?;
    let fmt = Format::from_header(h)?;
    match obj.get(tags::PIXEL_DATA).map(|px| px.value()) {
        None => Err(DicomError::NoPixelData { path: h.path.clone() }),
        Some(Value::PixelSequence(seq)) => {
            let expect = Expect {
                rows: fmt.rows,
                cols: fmt.cols,
                samples: h.samples_per_pixel.unwrap_or(1) as usize,
                bits_allocated: fmt.bits_allocated as usize,
            };
            codestream::check(&h.transfer_syntax, seq.fragments(), &expect)
                .map_err(|reason| DicomError::Decode { path: h.path.clone(), reason })
        }
        Some(_) => Err(DicomError::Decode {
            path: h.path.clone(),
            reason: "encapsulated transfer syntax but Pixel Data is not a fragment sequence".into(),
        }),
    }
}

/// Decode the requested slices of one file; each is `rows × cols` (the tile's size for mosaic tiles).
pub fn decode_slices(
    h: &InstanceHeader,
    requests: &[SliceRequest],
    limits: &Limits,
) -> Result<Vec<Vec<f32>>, DicomError> {
    let fmt = Format::from_header(h)?;
    let len = slice_len(&fmt, requests);
    let mut out: Vec<Vec<f32>> = requests.iter().map(|_| vec![0f32; len]).collect();
    let mut dsts: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[..]).collect();
    decode_slices_into(h, requests, &mut dsts, limits)?;
    Ok(out)
}

/// Pixels per returned slice: the frame's, or a mosaic tile's.
fn slice_len(fmt: &Format, requests: &[SliceRequest]) -> usize {
    match requests.first().and_then(|r| r.tile) {
        Some((_, m)) => (fmt.rows / m.max(1) as usize) * (fmt.cols / m.max(1) as usize),
        None => fmt.frame_len(),
    }
}

/// Decode the requested slices of one file straight into `dsts` (one per request, each exactly the slice's
/// size: `rows × cols`, or a mosaic tile's): the converter hands out the volume's own planes, so no slice is
/// allocated or copied on the way.
pub fn decode_slices_into(
    h: &InstanceHeader,
    requests: &[SliceRequest],
    dsts: &mut [&mut [f32]],
    limits: &Limits,
) -> Result<(), DicomError> {
    if requests.len() != dsts.len() {
        return Err(DicomError::Decode {
            path: h.path.clone(),
            reason: format!("{} slices requested into {} planes", requests.len(), dsts.len()),
        });
    }
    if let Some(native) = h.native_pixels {
        let fmt = Format::from_header(h)?;
        return with_native(h, native, |bytes| {
            cut_into(h, &fmt, &Samples::Bytes(std::borrow::Cow::Borrowed(bytes)), requests, dsts)
        })?;
    }
    let obj = open_full(&h.path, limits)?;
    decode_slices_from_into(&obj, h, requests, dsts)
}

/// Largest read buffer a decoding thread keeps between files (a bigger file gets a buffer of its own).
const KEPT_BUFFER: usize = 16 << 20;

thread_local! {
    /// Each decoding thread's read buffer, reused across files so that it is neither allocated nor cleared per
    /// file (a series is hundreds of files of the same size).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` on the native Pixel Data value at the range the header scan found, after checking that the element
/// header in front of it is still Pixel Data with that length (the file may have changed since the scan). The
/// element header and the value are read with one positioned read; the range is checked against the file's
/// current size before anything is allocated (as the full parse was bounded). The file is read, not mapped: a
/// mapping of a file that another process truncates would kill the daemon with SIGBUS.
fn with_native<T>(
    h: &InstanceHeader,
    native: super::read::NativePixels,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, DicomError> {
    use std::os::unix::fs::FileExt;
    let path = &h.path;
    let io = |e: std::io::Error| DicomError::Io { path: path.clone(), source: e };
    let changed = |what: &str| DicomError::Inconsistent {
        path: path.clone(),
        reason: format!("the file changed since its header was read ({what})"),
    };
    let head = if native.explicit { 12 } else { 8 };
    let start = native.offset.checked_sub(head).ok_or_else(|| changed("Pixel Data offset"))?;
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let end = native.offset.checked_add(native.len).filter(|&e| e <= size).ok_or_else(|| changed("size"))?;
    let n = usize::try_from(end - start).map_err(|_| changed("size"))?;
    let read = |buf: &mut Vec<u8>| -> Result<(), DicomError> {
        if buf.len() < n {
            buf.resize(n, 0);
        }
        file.read_exact_at(&mut buf[..n], start).map_err(io)?;
        let elem = &buf[..head as usize];
        let len_at = if native.explicit { 8 } else { 4 };
        let ok_tag = elem[..4] == [0xE0, 0x7F, 0x10, 0x00];
        let ok_len = u32::from_le_bytes([elem[len_at], elem[len_at + 1], elem[len_at + 2], elem[len_at + 3]]) as u64
            == native.len;
        if !(ok_tag && ok_len) {
            return Err(changed("Pixel Data element"));
        }
        Ok(())
    };
    if n > KEPT_BUFFER {
        let mut own = Vec::new();
        read(&mut own)?;
        return Ok(f(&own[head as usize..n]));
    }
    crate::scratch::with(&READ_BUFFER, |buf| {
        read(buf)?;
        Ok(f(&buf[head as usize..n]))
    })
}

/// As [`decode_slices`], from an already parsed object.
pub fn decode_slices_from(
    obj: &DefaultDicomObject,
    h: &InstanceHeader,
    requests: &[SliceRequest],
) -> Result<Vec<Vec<f32>>, DicomError> {
    let fmt = Format::from_header(h)?;
    let len = slice_len(&fmt, requests);
    let mut out: Vec<Vec<f32>> = requests.iter().map(|_| vec![0f32; len]).collect();
    let mut dsts: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[..]).collect();
    decode_slices_from_into(obj, h, requests, &mut dsts)?;
    Ok(out)
}

/// As [`decode_slices_into`], from an already parsed object.
fn decode_slices_from_into(
    obj: &DefaultDicomObject,
    h: &InstanceHeader,
    requests: &[SliceRequest],
    dsts: &mut [&mut [f32]],
) -> Result<(), DicomError> {
    let path = &h.path;
    let fmt = Format::from_header(h)?;
    let Some(px) = obj.get(tags::PIXEL_DATA) else {
        return Err(DicomError::NoPixelData { path: path.clone() });
    };
    let ts_uid = obj.meta().transfer_syntax().trim_end_matches('\0').trim().to_string();
    let ts = TransferSyntaxRegistry
        .get(&ts_uid)
        .ok_or_else(|| DicomError::UnsupportedTransferSyntax { path: path.clone(), uid: ts_uid.clone() })?;
    let decoded;
    let samples = match px.value() {
        Value::Primitive(_) if ts.is_encapsulated_pixel_data() || ts.is_unsupported() => {
            return Err(DicomError::UnsupportedTransferSyntax { path: path.clone(), uid: ts_uid });
        }
        Value::Primitive(p) => match p {
            PrimitiveValue::U16(v) if fmt.bits_allocated == 16 => Samples::U16(v),
            PrimitiveValue::I16(v) if fmt.bits_allocated == 16 => Samples::I16(v),
            PrimitiveValue::U32(v) if fmt.bits_allocated == 32 => Samples::U32(v),
            PrimitiveValue::I32(v) if fmt.bits_allocated == 32 => Samples::I32(v),
            PrimitiveValue::U8(v) => Samples::Bytes(std::borrow::Cow::Borrowed(&v[..])),
            other => Samples::Bytes(std::borrow::Cow::Owned(other.to_bytes().into_owned())),
        },
        Value::PixelSequence(seq) => {
            // Codecs size their output from the codestream: it must agree with the header first.
            let expect = Expect {
                rows: fmt.rows,
                cols: fmt.cols,
                samples: h.samples_per_pixel.unwrap_or(1) as usize,
                bits_allocated: fmt.bits_allocated as usize,
            };
            codestream::check(&ts_uid, seq.fragments(), &expect)
                .map_err(|reason| DicomError::Decode { path: path.clone(), reason })?;
            if ts_uid == JPEG_EXTENDED && fmt.bits_stored > 8 {
                let frames = seq.fragments();
                decoded = super::jpeg12::decode_fragments(frames, fmt.frames, (fmt.rows, fmt.cols))
                    .map_err(|reason| DicomError::Decode { path: path.clone(), reason })?;
                Samples::Bytes(std::borrow::Cow::Borrowed(&decoded[..]))
            } else if own_decoder(&ts_uid) && ts_uid != JPEG_EXTENDED {
                let bytes = fmt.bits_allocated as usize / 8;
                decoded = super::jpegls::decode_fragments(seq.fragments(), fmt.frames, fmt.rows, fmt.cols, bytes)
                    .map_err(|reason| DicomError::Decode { path: path.clone(), reason })?;
                Samples::Bytes(std::borrow::Cow::Borrowed(&decoded[..]))
            } else {
                if !ts.can_decode_all() {
                    return Err(DicomError::UnsupportedTransferSyntax { path: path.clone(), uid: ts_uid });
                }
                let d = obj
                    .decode_pixel_data()
                    .map_err(|e| DicomError::Decode { path: path.clone(), reason: one_line(&e) })?;
                decoded = d.into_data();
                Samples::Bytes(std::borrow::Cow::Borrowed(&decoded[..]))
            }
        }
        Value::Sequence(_) => {
            return Err(DicomError::Decode { path: path.clone(), reason: "Pixel Data is a sequence".into() });
        }
    };
    cut_into(h, &fmt, &samples, requests, dsts)
}

/// One whole frame of 16-bit little-endian samples (the common case, without the per-sample dispatch). With
/// the identity rescale (the usual MR case) the multiply-add is skipped, so the loop stays a plain widening
/// conversion that the compiler vectorises.
fn frame16(b: &[u8], fmt: &Format, slope: f64, icpt: f64, dst: &mut [f32]) {
    let shift = 32 - fmt.bits_stored as u32;
    let pairs = b.chunks_exact(2).zip(dst.iter_mut());
    let raw = |s: &[u8]| u16::from_le_bytes([s[0], s[1]]) as u32;
    match (fmt.signed, slope == 1.0 && icpt == 0.0) {
        (true, true) => pairs.for_each(|(s, d)| *d = ((raw(s) << shift) as i32 >> shift) as f32),
        (false, true) => pairs.for_each(|(s, d)| *d = ((raw(s) << shift) >> shift) as f32),
        (true, false) => {
            pairs.for_each(|(s, d)| *d = ((((raw(s) << shift) as i32 >> shift) as f64) * slope + icpt) as f32)
        }
        (false, false) => pairs.for_each(|(s, d)| *d = ((((raw(s) << shift) >> shift) as f64) * slope + icpt) as f32),
    }
}

/// Cut the requested frames (or mosaic tiles) out of the samples into `dsts`, as f32 with the rescale applied.
fn cut_into(
    h: &InstanceHeader,
    fmt: &Format,
    samples: &Samples<'_>,
    requests: &[SliceRequest],
    dsts: &mut [&mut [f32]],
) -> Result<(), DicomError> {
    let path = &h.path;
    let frame_len = fmt.frame_len();
    let have = samples.len(fmt.bits_allocated);
    for (r, dst) in requests.iter().zip(dsts.iter_mut()) {
        let f = r.frame as usize;
        if f >= fmt.frames || (f + 1) * frame_len > have {
            return Err(DicomError::Decode {
                path: path.clone(),
                reason: format!(
                    "pixel data too short: frame {} of {}x{} needs {} samples, found {have}",
                    f + 1,
                    fmt.cols,
                    fmt.rows,
                    (f + 1) * frame_len
                ),
            });
        }
        let want = match r.tile {
            Some((_, m)) => (fmt.rows / m.max(1) as usize) * (fmt.cols / m.max(1) as usize),
            None => frame_len,
        };
        if dst.len() != want {
            return Err(DicomError::Decode {
                path: path.clone(),
                reason: format!("slice of {want} pixels does not fit a plane of {}", dst.len()),
            });
        }
        let base = f * frame_len;
        let (slope, icpt) = (r.slope, r.intercept);
        match (r.tile, samples) {
            (None, Samples::Bytes(b)) if fmt.bits_allocated == 16 => {
                frame16(&b[2 * base..2 * (base + frame_len)], fmt, slope, icpt, dst)
            }
            (None, _) => {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = (fmt.value(samples.raw(fmt.bits_allocated, base + i)) * slope + icpt) as f32;
                }
            }
            (Some((t, m)), _) => {
                let m = m.max(1) as usize;
                let (tr, tc) = (fmt.rows / m, fmt.cols / m);
                let (y0, x0) = ((t as usize / m) * tr, (t as usize % m) * tc);
                for y in 0..tr {
                    for x in 0..tc {
                        let raw = samples.raw(fmt.bits_allocated, base + (y0 + y) * fmt.cols + x0 + x);
                        dst[y * tc + x] = (fmt.value(raw) * slope + icpt) as f32;
                    }
                }
            }
        }
    }
    Ok(())
}
