//! NIfTI-1 single-file (`.nii`, `.nii.gz`) reading and writing, plus the JSON sidecar.
//!
//! Reading takes the data in stored voxel order (no reorientation: the model was trained that way, SPEC §6),
//! applies `scl_slope`/`scl_inter`, and takes the affine from the sform when `sform_code > 0`, else the qform,
//! else the pixel dimensions. Writing stores float32 data with the same affine as **both** sform and qform
//! (code 1, scanner-anatomical) — the qform is the nearest rigid+scale quaternion form of the affine.
//! Files are written to a temporary name and renamed, so a crash never leaves half a file under the final name.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array3, ShapeBuilder};

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
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NiftiError + '_ {
    move |source| NiftiError::Io { path: path.to_path_buf(), source }
}

fn is_gz(path: &Path) -> bool {
    path.to_string_lossy().to_ascii_lowercase().ends_with(".gz")
}

/// Read a 3-D NIfTI-1 volume (a 4-D file with one volume is accepted; more volumes are an error).
pub fn read_nifti(path: &Path) -> Result<Volume, NiftiError> {
    let raw = std::fs::read(path).map_err(io_err(path))?;
    let bytes = if is_gz(path) || raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(io_err(path))?;
        out
    } else {
        raw
    };
    parse_nifti(path, &bytes)
}

fn fmt_err(path: &Path, reason: impl Into<String>) -> NiftiError {
    NiftiError::Format { path: path.to_path_buf(), reason: reason.into() }
}

/// Parse NIfTI-1 bytes already in memory (`path` is used in errors only).
pub fn parse_nifti(path: &Path, b: &[u8]) -> Result<Volume, NiftiError> {
    if b.len() < 348 {
        return Err(fmt_err(path, format!("{} bytes, shorter than the 348-byte header", b.len())));
    }
    let le = match i32::from_le_bytes([b[0], b[1], b[2], b[3]]) {
        348 => true,
        _ if i32::from_be_bytes([b[0], b[1], b[2], b[3]]) == 348 => false,
        _ => return Err(fmt_err(path, "sizeof_hdr is not 348")),
    };
    let i16_at =
        |o: usize| if le { i16::from_le_bytes([b[o], b[o + 1]]) } else { i16::from_be_bytes([b[o], b[o + 1]]) };
    let f32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            f32::from_le_bytes(a)
        } else {
            f32::from_be_bytes(a)
        }
    };
    let magic = &b[344..348];
    if magic != b"n+1\0" && magic != b"ni1\0" {
        return Err(fmt_err(path, "magic is not n+1/ni1"));
    }
    let ndim = i16_at(40);
    if !(1..=7).contains(&ndim) {
        return Err(fmt_err(path, format!("dim[0] = {ndim}")));
    }
    let mut dims = [1usize; 7];
    for (d, slot) in dims.iter_mut().enumerate().take(ndim as usize) {
        let v = i16_at(42 + 2 * d);
        if v < 1 {
            return Err(fmt_err(path, format!("dim[{}] = {v}", d + 1)));
        }
        *slot = v as usize;
    }
    if dims[3..].iter().product::<usize>() != 1 {
        return Err(fmt_err(
            path,
            format!("{} volumes in the file; ldae reads one 3-D volume", dims[3..].iter().product::<usize>()),
        ));
    }
    let datatype = i16_at(70);
    let vox_offset = f32_at(108);
    let slope = f32_at(112);
    let inter = f32_at(116);
    let pixdim: Vec<f64> = (0..8).map(|d| f32_at(76 + 4 * d) as f64).collect();
    let qform_code = i16_at(252);
    let sform_code = i16_at(254);
    let (ni, nj, nk) = (dims[0], dims[1], dims[2]);
    let n = ni * nj * nk;
    let offset = if vox_offset.is_finite() && vox_offset >= 348.0 { vox_offset as usize } else { 352 };
    type Conv = fn(&[u8], bool) -> f32;
    let (size, conv): (usize, Conv) = match datatype {
        2 => (1, |x, _| x[0] as f32),
        256 => (1, |x, _| x[0] as i8 as f32),
        4 => (2, |x, le| if le { i16::from_le_bytes([x[0], x[1]]) } else { i16::from_be_bytes([x[0], x[1]]) } as f32),
        512 => (2, |x, le| if le { u16::from_le_bytes([x[0], x[1]]) } else { u16::from_be_bytes([x[0], x[1]]) } as f32),
        8 => (4, |x, le| {
            let a = [x[0], x[1], x[2], x[3]];
            (if le { i32::from_le_bytes(a) } else { i32::from_be_bytes(a) }) as f32
        }),
        768 => (4, |x, le| {
            let a = [x[0], x[1], x[2], x[3]];
            (if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }) as f32
        }),
        16 => (4, |x, le| {
            let a = [x[0], x[1], x[2], x[3]];
            if le {
                f32::from_le_bytes(a)
            } else {
                f32::from_be_bytes(a)
            }
        }),
        64 => (8, |x, le| {
            let a = [x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]];
            (if le { f64::from_le_bytes(a) } else { f64::from_be_bytes(a) }) as f32
        }),
        code => return Err(NiftiError::Datatype { path: path.to_path_buf(), code }),
    };
    let need = offset + n * size;
    if b.len() < need {
        return Err(fmt_err(
            path,
            format!(
                "truncated: {} data bytes expected after offset {offset}, {} present",
                n * size,
                b.len().saturating_sub(offset)
            ),
        ));
    }
    let apply_scale = slope.is_finite() && slope != 0.0 && !(slope == 1.0 && inter == 0.0);
    let (s, i0) = (slope, if inter.is_finite() { inter } else { 0.0 });
    let values: Vec<f32> = b[offset..need]
        .chunks_exact(size)
        .map(|x| {
            let v = conv(x, le);
            if apply_scale {
                v * s + i0
            } else {
                v
            }
        })
        .collect();
    // NIfTI stores i fastest: Fortran order for an (i, j, k) array.
    let data = Array3::from_shape_vec((ni, nj, nk).f(), values)
        .map_err(|e| fmt_err(path, e.to_string()))?
        .as_standard_layout()
        .to_owned();
    let affine = if sform_code > 0 {
        let mut a = Affine::identity();
        for r in 0..3 {
            for c in 0..4 {
                a.0[r][c] = f32_at(280 + 16 * r + 4 * c) as f64;
            }
        }
        a
    } else if qform_code > 0 {
        let qb = f32_at(256) as f64;
        let qc = f32_at(260) as f64;
        let qd = f32_at(264) as f64;
        let off = [f32_at(268) as f64, f32_at(272) as f64, f32_at(276) as f64];
        let qfac = if pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        quatern_to_affine(qb, qc, qd, off, [pixdim[1], pixdim[2], pixdim[3]], qfac)
    } else {
        Affine::from_spacing_origin([pixdim[1].abs(), pixdim[2].abs(), pixdim[3].abs()], [0.0; 3])
    };
    let mut vol = Volume::new(data, affine);
    vol.provenance.source = path.display().to_string();
    Ok(vol)
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
    let cross = [e0[1] * e1[2] - e0[2] * e1[1], e0[2] * e1[0] - e0[0] * e1[2], e0[0] * e1[1] - e0[1] * e1[0]];
    let qfac = if dot(cross, cols[2]) < 0.0 { -1.0 } else { 1.0 };
    let e2 = [cross[0], cross[1], cross[2]];
    // r = [e0 e1 e2] as columns.
    let r = [[e0[0], e1[0], e2[0]], [e0[1], e1[1], e2[1]], [e0[2], e1[2], e2[2]]];
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (mut qa, mut qb, mut qc, mut qd);
    if trace > 0.5 {
        qa = 0.5 * trace.sqrt();
        qb = 0.25 * (r[2][1] - r[1][2]) / qa;
        qc = 0.25 * (r[0][2] - r[2][0]) / qa;
        qd = 0.25 * (r[1][0] - r[0][1]) / qa;
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            qb = 0.5 * xd.sqrt();
            qc = 0.25 * (r[0][1] + r[1][0]) / qb;
            qd = 0.25 * (r[0][2] + r[2][0]) / qb;
            qa = 0.25 * (r[2][1] - r[1][2]) / qb;
        } else if yd > 1.0 {
            qc = 0.5 * yd.sqrt();
            qb = 0.25 * (r[0][1] + r[1][0]) / qc;
            qd = 0.25 * (r[1][2] + r[2][1]) / qc;
            qa = 0.25 * (r[0][2] - r[2][0]) / qc;
        } else {
            qd = 0.5 * zd.sqrt();
            qb = 0.25 * (r[0][2] + r[2][0]) / qd;
            qc = 0.25 * (r[1][2] + r[2][1]) / qd;
            qa = 0.25 * (r[1][0] - r[0][1]) / qd;
        }
        if qa < 0.0 {
            qb = -qb;
            qc = -qc;
            qd = -qd;
            qa = -qa;
        }
    }
    let _ = qa;
    (qb, qc, qd, qfac, sizes)
}

/// Serialise a volume as float32 NIfTI-1 bytes (uncompressed `.nii` layout, vox_offset 352).
pub fn nifti_bytes(vol: &Volume, description: &str) -> Vec<u8> {
    let [ni, nj, nk] = vol.shape();
    let mut h = vec![0u8; 352];
    let put_i16 = |h: &mut Vec<u8>, o: usize, v: i16| h[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, o: usize, v: f32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    put_i16(&mut h, 40, 3);
    put_i16(&mut h, 42, ni as i16);
    put_i16(&mut h, 44, nj as i16);
    put_i16(&mut h, 46, nk as i16);
    for d in 4..8 {
        put_i16(&mut h, 40 + 2 * d, 1);
    }
    put_i16(&mut h, 70, 16); // float32
    put_i16(&mut h, 72, 32); // bitpix
    let (qb, qc, qd, qfac, sizes) = affine_to_quatern(&vol.affine);
    put_f32(&mut h, 76, qfac as f32);
    for (d, s) in sizes.iter().enumerate() {
        put_f32(&mut h, 80 + 4 * d, *s as f32);
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 10 | 8; // xyzt_units: mm + s
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in vol.data.iter() {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if lo <= hi {
        put_f32(&mut h, 124, hi); // cal_max
        put_f32(&mut h, 128, lo); // cal_min
    }
    let desc = description.as_bytes();
    let n = desc.len().min(79);
    h[148..148 + n].copy_from_slice(&desc[..n]);
    put_i16(&mut h, 252, 1); // qform_code: scanner anatomical
    put_i16(&mut h, 254, 1); // sform_code
    put_f32(&mut h, 256, qb as f32);
    put_f32(&mut h, 260, qc as f32);
    put_f32(&mut h, 264, qd as f32);
    let o = vol.affine.origin();
    for (d, v) in o.iter().enumerate() {
        put_f32(&mut h, 268 + 4 * d, *v as f32);
    }
    for r in 0..3 {
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * r + 4 * c, vol.affine.0[r][c] as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.reserve(ni * nj * nk * 4);
    // i fastest on disk.
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                h.extend_from_slice(&vol.data[[i, j, k]].to_le_bytes());
            }
        }
    }
    h
}

/// Write a volume as float32 NIfTI-1 (`.nii.gz` compressed when the name ends in `.gz`), atomically.
pub fn write_nifti(path: &Path, vol: &Volume) -> Result<(), NiftiError> {
    let bytes = nifti_bytes(vol, &format!("ldae {}", crate::VERSION));
    let payload = if is_gz(path) {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).map_err(io_err(path))?;
        enc.finish().map_err(io_err(path))?
    } else {
        bytes
    };
    write_atomic(path, &payload).map_err(io_err(path))
}

/// Write bytes to `path` through a temporary sibling and a rename (fsync'd), so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
