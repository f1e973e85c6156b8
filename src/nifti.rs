//! NIfTI-1 single-file (`.nii`, `.nii.gz`) reading and writing through the `nifti` crate, plus the JSON sidecar.
//!
//! Reading takes the data in stored voxel order (no reorientation: the model was trained that way, SPEC §6),
//! applies `scl_slope`/`scl_inter`, and takes the affine from the sform when `sform_code > 0`, else the qform,
//! else the pixel dimensions. Writing ([`crate::nifti_write`]) stores int16 when every value is whole (as
//! dcm2niix does), float32 otherwise, with the same affine as **both** sform and qform (code 1,
//! scanner-anatomical) — the qform is the nearest rigid+scale quaternion form of the affine.
//! Files are written to a temporary name and renamed, so a crash never leaves half a file under the final name.
//!
//! The crate parses the header (both byte orders) and converts every datatype to f32 with the scaling. This
//! adapter keeps, by measurement:
//! - **the checks before anything is allocated** ([`check_header`]): dims (each, negative, product) against
//!   [`Limits`], datatype vs bitpix (the crate sizes the data by `bitpix` but decodes by `datatype`, and a file
//!   whose two disagree panics inside it: "Inconsistent raw data size"), `vox_offset` against the file size,
//!   the claimed data against the file size (`.nii`) or `max_inflated_bytes` (`.nii.gz`, streamed: only the
//!   claimed bytes are ever inflated — the old reader inflated a gzip bomb whole);
//! - **seeking to `vox_offset` ourselves**: the crate's object reader starts the data right after byte 352
//!   when the extension flag is 0, whatever `vox_offset` says (its object.rs; tests/nifti_nibabel.rs reads a
//!   file padded to `vox_offset = 400`), and its extension loop trusts `esize` (`esize = 0` pushes one empty
//!   extension per 8 bytes up to the end of the file); ldae ignores extensions, so it never parses them;
//! - **the quaternion math**: the crate's qform reader and writer need its `nalgebra_affine` feature
//!   (nalgebra + simba), its reader panics on a negative pixdim or a qfac other than ±1, and `set_affine` zeroes
//!   the qform; [`quatern_to_affine`]/[`affine_to_quatern`] are the NIfTI-1 formulas (60 lines);
//! - the temporary name + fsync + rename.

use crate::io::read_up_to;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array3, ShapeBuilder};
use nifti::{InMemNiftiVolume, IntoNdArray, NiftiHeader, NiftiType};

use crate::limits::{LimitExceeded, Limits};
use crate::volume::{Affine, Volume};

/// What can go wrong reading or writing a NIfTI file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a NIfTI-1 file ({reason})")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: unsupported NIfTI datatype code {code}")]
    Datatype { path: PathBuf, code: i16 },
    #[error("{path}: {source}")]
    Limit { path: PathBuf, source: LimitExceeded },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NiftiError + '_ {
    move |source| NiftiError::Io { path: path.to_path_buf(), source }
}

fn fmt_err(path: &Path, reason: impl Into<String>) -> NiftiError {
    NiftiError::Format { path: path.to_path_buf(), reason: reason.into() }
}

fn is_gz(path: &Path) -> bool {
    path.to_string_lossy().to_ascii_lowercase().ends_with(".gz")
}

/// Read a 3-D NIfTI-1 volume (a 4-D file with one volume is accepted; more volumes are an error), with the
/// default [`Limits`].
pub fn read_nifti(path: &Path) -> Result<Volume, NiftiError> {
    read_nifti_limited(path, &Limits::default())
}

/// [`read_nifti`] with explicit bounds (the configuration's `[limits]`).
pub fn read_nifti_limited(path: &Path, limits: &Limits) -> Result<Volume, NiftiError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut r, &mut magic).map_err(io_err(path))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    if is_gz(path) || magic == [0x1f, 0x8b] {
        let gz = flate2::read::MultiGzDecoder::new(head.chain(r));
        read_stream(path, gz, None, Some(len), limits)
    } else {
        read_stream(path, head.chain(r), Some(len), None, limits)
    }
}

/// Parse NIfTI-1 bytes already in memory (`path` is used in errors only), with the default [`Limits`].
pub fn parse_nifti(path: &Path, b: &[u8]) -> Result<Volume, NiftiError> {
    read_stream(path, b, Some(b.len() as u64), None, &Limits::default())
}

/// What [`check_header`] found: where the data starts, how many bytes it has, the grid, and the affine.
struct Plan {
    offset: u64,
    data_bytes: u64,
    shape: [usize; 3],
    affine: Affine,
}

/// Read from a stream positioned at byte 0 of the (inflated) file; `len` is its size when known (`.nii`).
/// `gz_len` is the compressed size when the stream is inflated.
fn read_stream(
    path: &Path,
    mut src: impl Read,
    len: Option<u64>,
    gz_len: Option<u64>,
    limits: &Limits,
) -> Result<Volume, NiftiError> {
    let mut raw = [0u8; 348];
    let n = read_up_to(&mut src, &mut raw).map_err(io_err(path))?;
    if n < 348 {
        return Err(fmt_err(path, format!("{n} bytes, shorter than the 348-byte header")));
    }
    let mut header = NiftiHeader::from_reader(&raw[..]).map_err(|e| match e {
        nifti::NiftiError::InvalidFormat => fmt_err(path, "magic is not n+1"),
        other => fmt_err(path, other.to_string()),
    })?;
    let plan = check_header(path, &mut header, len, gz_len, limits)?;
    // Skip extensions and padding up to vox_offset (bounded: offset ≤ the file size or max_inflated_bytes).
    let skip = plan.offset - 348;
    let skipped = std::io::copy(&mut (&mut src).take(skip), &mut std::io::sink()).map_err(io_err(path))?;
    let truncated = |present: u64| {
        fmt_err(
            path,
            format!(
                "truncated: {} data bytes expected after offset {}, {present} present",
                plan.data_bytes, plan.offset
            ),
        )
    };
    if skipped < skip {
        return Err(truncated(0));
    }
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        InMemNiftiVolume::from_reader((&mut src).take(plan.data_bytes), &header).and_then(|v| v.into_ndarray::<f32>())
    }))
    .map_err(|_| fmt_err(path, "the nifti crate could not decode this file (it panicked)"))?;
    let data = decoded.map_err(|e| match e {
        nifti::NiftiError::IncompatibleLength(got, _) => truncated(got as u64),
        nifti::NiftiError::Io(source) => NiftiError::Io { path: path.to_path_buf(), source },
        other => fmt_err(path, other.to_string()),
    })?;
    if gz_len.is_some() {
        // Read on to the gzip trailer (bounded: a bomb's tail is not inflated) so its CRC and length are checked.
        std::io::copy(&mut src.take(1 << 16), &mut std::io::sink())
            .map_err(|e| fmt_err(path, format!("truncated or corrupt gzip stream after the image data: {e}")))?;
    }
    // The crate hands back the file's own (Fortran, i fastest) order; ldae's arrays are (i, j, k) standard.
    let (values, _) = data.into_raw_vec_and_offset();
    let [ni, nj, nk] = plan.shape;
    let data = Array3::from_shape_vec((ni, nj, nk).f(), values)
        .map_err(|e| fmt_err(path, e.to_string()))?
        .as_standard_layout()
        .to_owned();
    let mut vol = Volume::new(data, plan.affine);
    vol.provenance.source = path.display().to_string();
    Ok(vol)
}

/// The datatypes ldae reads, with their sizes in bytes.
fn datatype_size(code: i16) -> Option<u64> {
    use NiftiType as T;
    let t = NiftiHeader { datatype: code, ..NiftiHeader::default() }.data_type().ok()?;
    Some(match t {
        T::Uint8 | T::Int8 => 1,
        T::Int16 | T::Uint16 => 2,
        T::Int32 | T::Uint32 | T::Float32 => 4,
        T::Int64 | T::Uint64 | T::Float64 => 8,
        _ => return None,
    })
}

/// Every bound and consistency check, before the crate allocates anything. Also makes the scaling fields
/// safe for the crate (a non-finite slope or intercept is ignored, as before).
fn check_header(
    path: &Path,
    h: &mut NiftiHeader,
    len: Option<u64>,
    gz_len: Option<u64>,
    limits: &Limits,
) -> Result<Plan, NiftiError> {
    let lim = |source| NiftiError::Limit { path: path.to_path_buf(), source };
    if h.sizeof_hdr != 348 {
        return Err(fmt_err(path, "sizeof_hdr is not 348"));
    }
    if &h.magic != b"n+1\0" {
        return Err(fmt_err(path, "a header-only (.hdr/.img) NIfTI; ldae reads single-file .nii/.nii.gz"));
    }
    let ndim = h.dim[0] as i16;
    if !(1..=7).contains(&ndim) {
        return Err(fmt_err(path, format!("dim[0] = {ndim}")));
    }
    let mut dims = [1u64; 7];
    for (d, slot) in dims.iter_mut().enumerate().take(ndim as usize) {
        let v = h.dim[d + 1] as i16;
        if v < 1 {
            return Err(fmt_err(path, format!("dim[{}] = {v}", d + 1)));
        }
        *slot = v as u64;
    }
    let n = limits.voxels(&dims).map_err(lim)?;
    let volumes: u64 = dims[3..].iter().product();
    if volumes != 1 {
        return Err(fmt_err(path, format!("{volumes} volumes in the file; ldae reads one 3-D volume")));
    }
    let size = datatype_size(h.datatype).ok_or(NiftiError::Datatype { path: path.to_path_buf(), code: h.datatype })?;
    if h.bitpix as i64 != size as i64 * 8 {
        return Err(fmt_err(
            path,
            format!("bitpix {} does not match datatype {} ({} bits)", h.bitpix, h.datatype, size * 8),
        ));
    }
    let data_bytes = Limits::check("the image data (bytes)", n * size, limits.max_element_bytes).map_err(lim)?;
    let v = h.vox_offset;
    // As before: a missing or nonsensical offset (< 348, NaN) means the standard 352.
    let offset = if v.is_finite() && v >= 348.0 { v as u64 } else { 352 };
    match len {
        Some(len) => {
            if offset > len {
                return Err(fmt_err(path, format!("vox_offset {v} lies beyond the end of the {len}-byte file")));
            }
            if offset + data_bytes > len {
                return Err(fmt_err(
                    path,
                    format!(
                        "truncated: {data_bytes} data bytes expected after offset {offset}, {} present",
                        len - offset
                    ),
                ));
            }
        }
        None => {
            Limits::check("the inflated size (offset + data)", offset + data_bytes, limits.max_inflated_bytes)
                .map_err(lim)?;
            if let Some(gz_len) = gz_len {
                // Deflate inflates at most 1032:1; a claim beyond that cannot be in the file.
                let most = gz_len.saturating_mul(1032).saturating_add(1 << 16);
                if offset + data_bytes > most {
                    return Err(fmt_err(
                        path,
                        format!(
                            "truncated: offset {offset} + {data_bytes} data bytes claimed, more than a {gz_len}-byte \
                             gzip file can hold"
                        ),
                    ));
                }
            }
        }
    }
    if !(h.scl_slope.is_finite() && h.scl_slope != 0.0) || (h.scl_slope == 1.0 && h.scl_inter == 0.0) {
        h.scl_slope = 0.0; // the crate's "no scaling"
    }
    if !h.scl_inter.is_finite() {
        h.scl_inter = 0.0;
    }
    let affine = header_affine(h);
    if affine.0.iter().flatten().any(|x| !x.is_finite()) {
        let which = if h.sform_code > 0 {
            "sform"
        } else if h.qform_code > 0 {
            "qform"
        } else {
            "pixdim"
        };
        return Err(fmt_err(path, format!("the affine ({which}) has non-finite entries")));
    }
    Ok(Plan { offset, data_bytes, shape: [dims[0] as usize, dims[1] as usize, dims[2] as usize], affine })
}

/// The voxel → world affine: sform if coded, else qform, else the pixel sizes.
fn header_affine(h: &NiftiHeader) -> Affine {
    let p = |i: usize| h.pixdim[i] as f64;
    if h.sform_code > 0 {
        let mut a = Affine::identity();
        for (r, row) in [h.srow_x, h.srow_y, h.srow_z].iter().enumerate() {
            for (dst, &v) in a.0[r].iter_mut().zip(row) {
                *dst = v as f64;
            }
        }
        a
    } else if h.qform_code > 0 {
        let off = [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64];
        let qfac = if p(0) < 0.0 { -1.0 } else { 1.0 };
        quatern_to_affine(h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64, off, [p(1), p(2), p(3)], qfac)
    } else {
        Affine::from_spacing_origin([p(1).abs(), p(2).abs(), p(3).abs()], [0.0; 3])
    }
}

/// The affine described by a NIfTI quaternion (qform) — the standard NIfTI-1 formula.
pub fn quatern_to_affine(b: f64, c: f64, d: f64, offset: [f64; 3], pixdim: [f64; 3], qfac: f64) -> Affine {
    // As nifti1_io does: when 1 - (b²+c²+d²) is within float32 rounding of 0, the rotation is 180° and
    // (b, c, d) is renormalised instead of taking the square root of rounding noise.
    let s = b * b + c * c + d * d;
    let (a, b, c, d) = if 1.0 - s < 1e-7 {
        let n = s.sqrt();
        (0.0, b / n, c / n, d / n)
    } else {
        ((1.0 - s).sqrt(), b, c, d)
    };
    let r = [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ];
    let (x, y, z) = (pixdim[0].abs(), pixdim[1].abs(), pixdim[2].abs() * qfac);
    let mut m = Affine::identity();
    for row in 0..3 {
        m.0[row][0] = r[row][0] * x;
        m.0[row][1] = r[row][1] * y;
        m.0[row][2] = r[row][2] * z;
        m.0[row][3] = offset[row];
    }
    m
}

/// The qform parameters `(b, c, d, qfac, pixdim)` nearest to an affine: columns normalised, made orthogonal
/// (Gram–Schmidt), a reflection moved into `qfac`.
pub fn affine_to_quatern(a: &Affine) -> (f64, f64, f64, f64, [f64; 3]) {
    let sizes = a.voxel_sizes();
    let mut cols = [a.column(0), a.column(1), a.column(2)];
    for (c, col) in cols.iter_mut().enumerate() {
        let s = if sizes[c] > 0.0 { sizes[c] } else { 1.0 };
        for v in col.iter_mut() {
            *v /= s;
        }
    }
    let dot = |u: [f64; 3], v: [f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
    let norm = |u: [f64; 3]| {
        let n = dot(u, u).sqrt();
        if n > 0.0 {
            [u[0] / n, u[1] / n, u[2] / n]
        } else {
            u
        }
    };
    let e0 = norm(cols[0]);
    let p = dot(cols[1], e0);
    let e1 = norm([cols[1][0] - p * e0[0], cols[1][1] - p * e0[1], cols[1][2] - p * e0[2]]);
    let e2 = [e0[1] * e1[2] - e0[2] * e1[1], e0[2] * e1[0] - e0[0] * e1[2], e0[0] * e1[1] - e0[1] * e1[0]];
    let qfac = if dot(e2, cols[2]) < 0.0 { -1.0 } else { 1.0 };
    // r = [e0 e1 e2] as columns.
    let r = [[e0[0], e1[0], e2[0]], [e0[1], e1[1], e2[1]], [e0[2], e1[2], e2[2]]];
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (qb, qc, qd) = if trace > 0.5 {
        let qa = 0.5 * trace.sqrt();
        (0.25 * (r[2][1] - r[1][2]) / qa, 0.25 * (r[0][2] - r[2][0]) / qa, 0.25 * (r[1][0] - r[0][1]) / qa)
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        let (qa, qb, qc, qd) = if xd > 1.0 {
            let qb = 0.5 * xd.sqrt();
            (0.25 * (r[2][1] - r[1][2]) / qb, qb, 0.25 * (r[0][1] + r[1][0]) / qb, 0.25 * (r[0][2] + r[2][0]) / qb)
        } else if yd > 1.0 {
            let qc = 0.5 * yd.sqrt();
            (0.25 * (r[0][2] - r[2][0]) / qc, 0.25 * (r[0][1] + r[1][0]) / qc, qc, 0.25 * (r[1][2] + r[2][1]) / qc)
        } else {
            let qd = 0.5 * zd.sqrt();
            (0.25 * (r[1][0] - r[0][1]) / qd, 0.25 * (r[0][2] + r[2][0]) / qd, 0.25 * (r[1][2] + r[2][1]) / qd, qd)
        };
        if qa < 0.0 {
            (-qb, -qc, -qd)
        } else {
            (qb, qc, qd)
        }
    };
    (qb, qc, qd, qfac, sizes)
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Encode `vol` ([`crate::nifti_write`]), write it (gzip members in parallel when `gz`) to a temporary sibling
/// of `path`, optionally fsync it, and rename it.
fn write_encoded(path: &Path, vol: &Volume, description: &str, gz: bool, sync: bool) -> Result<(), NiftiError> {
    use std::io::Write;
    let [ni, nj, nk] = vol.shape();
    if [ni, nj, nk].iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(fmt_err(path, format!("cannot store a {ni}x{nj}x{nk} grid (NIfTI-1 dims are 1..=32767)")));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(path))?;
    let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".ldae-tmp-{}-{seq}.{}", std::process::id(), if gz { "nii.gz" } else { "nii" }));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if gz {
            crate::nifti_write::write_to(&mut f, vol, description, gz)?;
            f.flush()?;
        } else {
            crate::nifti_write::write_at(&f, vol, description)?;
        }
        if sync {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })()
    .map_err(io_err(path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Write a volume as NIfTI-1 (int16 when its values are whole, else float32; [`crate::nifti_write`]) (`.nii.gz` compressed when the name ends in `.gz`), atomically (fsync'd).
pub fn write_nifti(path: &Path, vol: &Volume) -> Result<(), NiftiError> {
    write_encoded(path, vol, &description(), is_gz(path), true)
}

/// [`write_nifti`] without the fsync, compressed or not as asked (`ldae convert` leaves flushing to the OS).
pub fn write_nifti_unsynced(path: &Path, vol: &Volume, gz: bool) -> Result<(), NiftiError> {
    write_encoded(path, vol, &description(), gz, false)
}

fn description() -> String {
    format!("ldae {}", crate::VERSION)
}

/// A volume as the bytes of an uncompressed `.nii` (int16/uint16/int32 when its values are whole, else float32).
pub fn nifti_bytes(vol: &Volume, description: &str) -> Vec<u8> {
    crate::nifti_write::encode(vol, description)
}

/// Write bytes to `path` through a temporary sibling and a rename (fsync'd), so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Write a JSON sidecar next to a volume, atomically and pretty-printed.
pub fn write_sidecar(path: &Path, value: &serde_json::Value) -> Result<(), NiftiError> {
    let text =
        serde_json::to_vec_pretty(value).map_err(|e| NiftiError::Io { path: path.to_path_buf(), source: e.into() })?;
    write_atomic(path, &text).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_is_exact_with_matching_qform() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = Array3::from_shape_fn((4, 5, 3), |(i, j, k)| (i * 100 + j * 10 + k) as f32 - 7.5);
        // An oblique, flipped affine (det < 0).
        let c = 20f64.to_radians().cos();
        let s = 20f64.to_radians().sin();
        let aff = Affine::from_columns(
            [-0.9 * c, 0.9 * s, 0.0],
            [0.8 * s, 0.8 * c, 0.0],
            [0.0, 0.0, 2.5],
            [90.0, -126.0, -72.0],
        );
        let vol = Volume::new(data.clone(), aff);
        for name in ["a.nii", "b.nii.gz"] {
            let p = dir.path().join(name);
            write_nifti(&p, &vol).expect("write");
            let back = read_nifti(&p).expect("read");
            assert_eq!(back.data, data);
            assert!(back.affine.max_abs_diff(&aff) < 1e-4, "sform");
            let bytes = nifti_bytes(&vol, "");
            let mut hdr = bytes.clone();
            hdr[254] = 0; // drop the sform: the reader must fall back to the qform
            hdr[255] = 0;
            let q = parse_nifti(&p, &hdr).expect("parse");
            assert!(q.affine.max_abs_diff(&aff) < 1e-4, "qform {:?} vs {:?}", q.affine, aff);
        }
    }

    #[test]
    fn every_storage_round_trips_through_the_parallel_file_writers() {
        // Several 1 MiB chunks per file, in every storage type, written by the positioned (.nii) and the
        // gzip-member (.nii.gz) writers: the file must read back exactly and equal the in-memory encoding.
        let dir = tempfile::tempdir().expect("tempdir");
        type Case = (&'static str, i16, fn(usize) -> f32);
        let cases: [Case; 4] = [
            ("i16", 4, |n| (n % 65_536) as f32 - 32_768.0),
            ("u16", 512, |n| (n % 65_536) as f32),
            ("i32", 8, |n| n as f32 * -3.0),
            ("f32", 16, |n| n as f32 * 0.25 - 1.0),
        ];
        for (name, code, f) in cases {
            let data = Array3::from_shape_fn((97, 101, 57), |(i, j, k)| f(i + 97 * j + 97 * 101 * k));
            let vol = Volume::new(data.clone(), Affine::identity());
            let plain = dir.path().join(format!("{name}.nii"));
            write_nifti_unsynced(&plain, &vol, false).expect("write .nii");
            let bytes = std::fs::read(&plain).expect("read back");
            assert_eq!(bytes, nifti_bytes(&vol, &description()), "{name}: file vs in-memory encoding");
            assert_eq!(i16::from_le_bytes([bytes[70], bytes[71]]), code, "{name}: datatype");
            assert_eq!(read_nifti(&plain).expect("read").data, data, "{name} .nii");
            let gz = dir.path().join(format!("{name}.nii.gz"));
            write_nifti_unsynced(&gz, &vol, true).expect("write .nii.gz");
            assert_eq!(read_nifti(&gz).expect("read").data, data, "{name} .nii.gz");
        }
    }

    #[test]
    fn truncated_and_garbage_are_errors_naming_the_file() {
        let p = Path::new("x.nii");
        let e = parse_nifti(p, &[0u8; 10]).unwrap_err().to_string();
        assert!(e.contains("x.nii") && e.contains("348"), "{e}");
        let vol = Volume::new(Array3::zeros((3, 3, 3)), Affine::identity());
        let mut b = nifti_bytes(&vol, "");
        b.truncate(b.len() - 5);
        let e = parse_nifti(p, &b).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
