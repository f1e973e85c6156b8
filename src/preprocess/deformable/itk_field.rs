//! Displacement fields as ITK and ANTs read and write them: a NIfTI-1 file with `dim = [5, nx, ny, nz, 1, 3]`,
//! intent `NIFTI_INTENT_VECTOR` (1007), float32 components stored one after another (x fastest within each), on
//! the field's grid (qform and sform in RAS as usual), and vectors in ITK's **LPS** physical space: the RAS
//! displacement `(x, y, z)` is written `(−x, −y, z)`. The transform is `T(p) = p + d(p)` for a point `p` of the
//! field's (fixed) space, which is ldae's [`Field`] convention too.

use std::io::Read;
use std::path::Path;

use ndarray::Array3;

use super::field::Field;
use crate::limits::Limits;
use crate::nifti::{affine_to_quatern, quatern_to_affine, write_atomic};
use crate::preprocess::resample::Grid;
use crate::preprocess::PreprocessError;
use crate::volume::Affine;

const HEADER: usize = 348;
const OFFSET: usize = 352;
const INTENT_VECTOR: i16 = 1007;

fn bad(path: &Path, reason: impl Into<String>) -> PreprocessError {
    PreprocessError::TransformFormat { path: path.to_path_buf(), reason: reason.into() }
}

fn put<const N: usize>(h: &mut [u8], at: usize, b: [u8; N]) {
    h[at..at + N].copy_from_slice(&b);
}

/// The NIfTI bytes (uncompressed) of a field.
pub fn field_bytes(f: &Field) -> Vec<u8> {
    let [nx, ny, nz] = f.grid.shape;
    let n = nx * ny * nz;
    let mut out = vec![0u8; OFFSET + 3 * n * 4];
    let h = &mut out[..HEADER];
    put(h, 0, 348i32.to_le_bytes());
    for (d, v) in [5i16, nx as i16, ny as i16, nz as i16, 1, 3, 1, 1].iter().enumerate() {
        put(h, 40 + 2 * d, v.to_le_bytes());
    }
    put(h, 68, INTENT_VECTOR.to_le_bytes());
    put(h, 70, 16i16.to_le_bytes()); // float32
    put(h, 72, 32i16.to_le_bytes());
    let (b, c, d, qfac, sizes) = affine_to_quatern(&f.grid.affine);
    for (i, v) in [qfac, sizes[0], sizes[1], sizes[2], 1.0, 1.0, 1.0, 1.0].iter().enumerate() {
        put(h, 76 + 4 * i, (*v as f32).to_le_bytes());
    }
    put(h, 108, (OFFSET as f32).to_le_bytes());
    put(h, 112, 1f32.to_le_bytes());
    h[123] = 2; // mm
    let desc = b"ldae displacement field (ITK LPS vectors)";
    h[148..148 + desc.len()].copy_from_slice(desc);
    put(h, 252, 1i16.to_le_bytes());
    put(h, 254, 1i16.to_le_bytes());
    let o = f.grid.affine.origin();
    for (i, v) in [b, c, d, o[0], o[1], o[2]].iter().enumerate() {
        put(h, 256 + 4 * i, (*v as f32).to_le_bytes());
    }
    for r in 0..3 {
        for c in 0..4 {
            put(h, 280 + 16 * r + 4 * c, (f.grid.affine.0[r][c] as f32).to_le_bytes());
        }
    }
    let intent = b"vector";
    h[328..328 + intent.len()].copy_from_slice(intent);
    h[344..348].copy_from_slice(b"n+1\0");
    let sign = [-1.0f32, -1.0, 1.0];
    let mut at = OFFSET;
    for (c, comp) in f.comp.iter().enumerate() {
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    out[at..at + 4].copy_from_slice(&(sign[c] * comp[[i, j, k]]).to_le_bytes());
                    at += 4;
                }
            }
        }
    }
    out
}

/// Write a field as ITK NIfTI (gzip-compressed when the name ends in `.gz`), atomically.
pub fn write_field(path: &Path, f: &Field) -> Result<(), PreprocessError> {
    let raw = field_bytes(f);
    let bytes = if path.to_string_lossy().to_ascii_lowercase().ends_with(".gz") {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&raw)
            .and_then(|_| e.finish())
            .map_err(|source| PreprocessError::Io { path: path.into(), source })?
    } else {
        raw
    };
    write_atomic(path, &bytes).map_err(|source| PreprocessError::Io { path: path.to_path_buf(), source })
}

/// Read an ITK/ANTs displacement field NIfTI (float32 or float64, little-endian), bounded by `limits`.
pub fn read_field(path: &Path, limits: &Limits) -> Result<Field, PreprocessError> {
    let io = |source| PreprocessError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let cap = limits.max_inflated_bytes;
    let mut raw = Vec::new();
    let mut head = [0u8; 2];
    let mut r = std::io::BufReader::new(file);
    let got = r.read(&mut head).map_err(io)?;
    let chained = std::io::Cursor::new(head[..got].to_vec()).chain(r);
    if got == 2 && head == [0x1f, 0x8b] {
        flate2::read::MultiGzDecoder::new(chained).take(cap + 1).read_to_end(&mut raw).map_err(io)?;
    } else {
        chained.take(cap + 1).read_to_end(&mut raw).map_err(io)?;
    }
    if raw.len() as u64 > cap {
        return Err(bad(path, format!("inflates to more than the limit of {cap} bytes")));
    }
    parse_field(path, &raw, limits)
}

/// Parse field NIfTI bytes (see [`read_field`]).
pub fn parse_field(path: &Path, raw: &[u8], limits: &Limits) -> Result<Field, PreprocessError> {
    if raw.len() < HEADER {
        return Err(bad(path, format!("{} bytes, shorter than a NIfTI-1 header", raw.len())));
    }
    let i16at = |at: usize| i16::from_le_bytes([raw[at], raw[at + 1]]);
    let f32at = |at: usize| f32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as f64;
    if i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) != 348 || &raw[344..347] != b"n+1" {
        return Err(bad(path, "not a little-endian single-file NIfTI-1 (sizeof_hdr 348, magic n+1)"));
    }
    let dim: Vec<i64> = (0..8).map(|d| i16at(40 + 2 * d) as i64).collect();
    if dim[0] != 5 || dim[4] != 1 || dim[5] != 3 || dim[1..4].iter().any(|n| *n < 1) {
        return Err(bad(path, format!("dims {:?} are not a 3-D displacement field (5, nx, ny, nz, 1, 3)", &dim[..6])));
    }
    let dims = [dim[1] as u64, dim[2] as u64, dim[3] as u64];
    let n = limits.voxels(&dims).map_err(|e| bad(path, e.to_string()))? as usize;
    let size = match i16at(70) {
        16 => 4,
        64 => 8,
        t => return Err(bad(path, format!("datatype {t} (only float32 and float64 fields are read)"))),
    };
    let offset = f32at(108);
    if !(offset >= HEADER as f64 && offset.fract() == 0.0) {
        return Err(bad(path, format!("vox_offset {offset} is invalid")));
    }
    let offset = offset as usize;
    let need = offset.checked_add(3 * n * size).ok_or_else(|| bad(path, "size overflow"))?;
    if raw.len() < need {
        return Err(bad(path, format!("truncated: {need} bytes expected, {} present", raw.len())));
    }
    let affine = if i16at(254) > 0 {
        let mut a = Affine::identity();
        for r in 0..3 {
            for c in 0..4 {
                a.0[r][c] = f32at(280 + 16 * r + 4 * c);
            }
        }
        a
    } else if i16at(252) > 0 {
        let qfac = if f32at(76) < 0.0 { -1.0 } else { 1.0 };
        let off = [f32at(268), f32at(272), f32at(276)];
        quatern_to_affine(f32at(256), f32at(260), f32at(264), off, [f32at(80), f32at(84), f32at(88)], qfac)
    } else {
        Affine::from_spacing_origin([f32at(80).abs(), f32at(84).abs(), f32at(88).abs()], [0.0; 3])
    };
    if affine.0.iter().flatten().any(|v| !v.is_finite()) || affine.inverse().is_none() {
        return Err(bad(path, "the field's grid affine is singular or not finite"));
    }
    let shape = [dims[0] as usize, dims[1] as usize, dims[2] as usize];
    let grid = Grid { shape, affine };
    let mut f = Field::zeros(grid, limits)?;
    let sign = [-1.0f64, -1.0, 1.0];
    let data = &raw[offset..need];
    for (c, comp) in f.comp.iter_mut().enumerate() {
        let mut at = c * n * size;
        let mut values = Array3::<f32>::zeros(shape);
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    let v = if size == 4 {
                        f32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as f64
                    } else {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&data[at..at + 8]);
                        f64::from_le_bytes(b)
                    };
                    if !v.is_finite() {
                        return Err(bad(path, "the field holds a non-finite displacement"));
                    }
                    values[[i, j, k]] = (sign[c] * v) as f32;
                    at += size;
                }
            }
        }
        *comp = values;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_bad_files_are_errors() {
        let grid = Grid {
            shape: [4, 5, 3],
            affine: Affine::from_columns([-2.0, 0.0, 0.0], [0.0, 2.0, 0.1], [0.0, 0.0, 3.0], [10.0, -20.0, 5.0]),
        };
        let l = Limits::default();
        let f = Field::fill_with(grid, &l, |i, j, k| [i as f64, -(j as f64), 0.5 * k as f64]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("warp.nii.gz");
        write_field(&p, &f).unwrap();
        let back = read_field(&p, &l).unwrap();
        assert_eq!(back.comp, f.comp);
        assert!(back.grid.affine.max_abs_diff(&grid.affine) < 1e-5);
        // LPS on disk: the x component of voxel (1,0,0) is stored negated.
        let raw = field_bytes(&f);
        assert_eq!(f32::from_le_bytes(raw[OFFSET + 4..OFFSET + 8].try_into().unwrap()), -1.0);
        for (name, bytes) in [("short", raw[..100].to_vec()), ("truncated", raw[..raw.len() - 8].to_vec())] {
            let e = parse_field(Path::new(name), &bytes, &l).unwrap_err().to_string();
            assert!(e.starts_with(name), "{e}");
        }
        let mut huge = raw.clone();
        huge[42..44].copy_from_slice(&30000i16.to_le_bytes());
        assert!(parse_field(Path::new("huge"), &huge, &l).is_err());
    }
}
