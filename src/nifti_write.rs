//! NIfTI-1 encoding for the writer in [`crate::nifti`]: the smallest exact storage type, the 348-byte header,
//! and parallel gzip.
//!
//! A volume whose values are all whole numbers is stored as int16 (uint16, int32 when the range needs it) with
//! `scl_slope = 1`, `scl_inter = 0` — what dcm2niix stores for a typical MR/CT series, at half the size of
//! float32; any other volume is stored as float32. Either way every reader (ldae's, nibabel, dcm2niix-style
//! tools) gets back exactly the f32 values written. The voxel conversion runs in parallel over chunks.
//!
//! `.nii.gz` output is a multi-member gzip file: the encoded bytes are cut into chunks of [`GZ_CHUNK`] bytes,
//! each compressed as its own gzip member on the rayon pool (RFC 1952 §2.2 allows any number of members, and
//! zlib's `gzread`, Python's `gzip`/nibabel and flate2's `MultiGzDecoder` read them all as one stream).

use flate2::write::GzEncoder;
use flate2::Compression;
use rayon::prelude::*;
use std::borrow::Cow;
use std::io::Write;

use crate::volume::Volume;

/// Uncompressed bytes per gzip member (big enough that the per-member overhead and the lost back-references
/// at member boundaries cost well under 1% of the size).
pub(crate) const GZ_CHUNK: usize = 1 << 20;
/// Voxels per parallel conversion task.
const VOXEL_CHUNK: usize = 1 << 16;
/// Header (348) + the 4-byte extension flag.
pub(crate) const VOX_OFFSET: usize = 352;

/// How the voxels are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    I16,
    U16,
    I32,
    F32,
}

impl Storage {
    /// NIfTI-1 datatype code.
    pub(crate) fn code(self) -> i16 {
        match self {
            Storage::I16 => 4,
            Storage::U16 => 512,
            Storage::I32 => 8,
            Storage::F32 => 16,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Storage::I16 | Storage::U16 => 2,
            Storage::I32 | Storage::F32 => 4,
        }
    }
}

/// Range and integrality of the values (over finite values for the range).
#[derive(Debug, Clone, Copy)]
struct Stats {
    lo: f32,
    hi: f32,
    whole: bool,
}

impl Stats {
    const EMPTY: Stats = Stats { lo: f32::INFINITY, hi: f32::NEG_INFINITY, whole: true };

    fn of(v: &[f32]) -> Stats {
        let mut s = Stats::EMPTY;
        for &x in v {
            if x.is_finite() {
                s.lo = s.lo.min(x);
                s.hi = s.hi.max(x);
                // Every f32 of magnitude >= 2^23 is whole; below, a truncating cast (no libm call) tells.
                s.whole &= x.abs() >= 8_388_608.0 || (x as i32) as f32 == x;
            } else {
                s.whole = false;
            }
        }
        s
    }

    fn join(a: Stats, b: Stats) -> Stats {
        Stats { lo: a.lo.min(b.lo), hi: a.hi.max(b.hi), whole: a.whole && b.whole }
    }

    fn storage(&self) -> Storage {
        if !self.whole {
            return Storage::F32;
        }
        if self.lo > self.hi {
            return Storage::I16; // no voxels
        }
        let fits = |lo: f64, hi: f64| self.lo as f64 >= lo && self.hi as f64 <= hi;
        if fits(i16::MIN as f64, i16::MAX as f64) {
            Storage::I16
        } else if fits(0.0, u16::MAX as f64) {
            Storage::U16
        } else if fits(i32::MIN as f64, i32::MAX as f64) {
            Storage::I32
        } else {
            Storage::F32
        }
    }
}

/// The voxels in NIfTI order (`i` fastest), borrowed when the array is already stored that way.
fn fortran_order(vol: &Volume) -> Cow<'_, [f32]> {
    let t = vol.data.t();
    match t.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.iter().copied().collect()),
    }
}

/// The storage a volume gets (see the module doc).
#[cfg(test)]
fn storage_for(vol: &Volume) -> Storage {
    let v = fortran_order(vol);
    v.par_chunks(VOXEL_CHUNK).map(Stats::of).reduce(|| Stats::EMPTY, Stats::join).storage()
}

/// Header + extension flag + voxels of a single-file `.nii`, the storage type chosen from the values: the
/// affine as sform and as qform (both code 1, scanner anatomical; the qform is the nearest rigid+scale form),
/// mm + s units, the value range in cal_min/cal_max, `description` (at most 79 bytes) in descrip.
pub(crate) fn encode(vol: &Volume, description: &str) -> Vec<u8> {
    let v = fortran_order(vol);
    let stats = v.par_chunks(VOXEL_CHUNK).map(Stats::of).reduce(|| Stats::EMPTY, Stats::join);
    let storage = stats.storage();
    let size = storage.bytes();
    let mut out = vec![0u8; VOX_OFFSET + v.len() * size];
    let (cal_min, cal_max) = if stats.lo <= stats.hi { (stats.lo, stats.hi) } else { (0.0, 0.0) };
    let [ni, nj, nk] = vol.shape();
    {
        let h = &mut out[..VOX_OFFSET];
        put_i32(h, 0, 348);
        h[38] = b'r';
        for (n, d) in [3usize, ni, nj, nk, 1, 1, 1, 1].iter().enumerate() {
            put_i16(h, 40 + 2 * n, *d as i16);
        }
        put_i16(h, 70, storage.code());
        put_i16(h, 72, (size * 8) as i16);
        put_f32(h, 108, VOX_OFFSET as f32);
        // scl_slope 1 / scl_inter 0: the stored values are the values.
        put_f32(h, 112, 1.0);
        put_f32(h, 116, 0.0);
        put_f32(h, 124, cal_max);
        put_f32(h, 128, cal_min);
        h[344..348].copy_from_slice(b"n+1\0");
        put_geometry(h, vol, description);
    }
    let data = &mut out[VOX_OFFSET..];
    data.par_chunks_mut(VOXEL_CHUNK * size).zip(v.par_chunks(VOXEL_CHUNK)).for_each(|(dst, src)| match storage {
        Storage::I16 => {
            dst.chunks_exact_mut(2).zip(src).for_each(|(d, &x)| d.copy_from_slice(&(x as i16).to_le_bytes()))
        }
        Storage::U16 => {
            dst.chunks_exact_mut(2).zip(src).for_each(|(d, &x)| d.copy_from_slice(&(x as u16).to_le_bytes()))
        }
        Storage::I32 => {
            dst.chunks_exact_mut(4).zip(src).for_each(|(d, &x)| d.copy_from_slice(&(x as i32).to_le_bytes()))
        }
        Storage::F32 => dst.chunks_exact_mut(4).zip(src).for_each(|(d, &x)| d.copy_from_slice(&x.to_le_bytes())),
    });
    out
}

/// pixdim, units, descrip, qform and sform.
fn put_geometry(h: &mut [u8], vol: &Volume, description: &str) {
    let (qb, qc, qd, qfac, sizes) = crate::nifti::affine_to_quatern(&vol.affine);
    let o = vol.affine.origin();
    for (n, p) in [qfac, sizes[0], sizes[1], sizes[2], 1.0, 1.0, 1.0, 1.0].iter().enumerate() {
        put_f32(h, 76 + 4 * n, *p as f32);
    }
    h[123] = 10 | 8; // mm + s
    let d = description.as_bytes();
    let n = d.len().min(79);
    h[148..148 + n].copy_from_slice(&d[..n]);
    put_i16(h, 252, 1); // qform_code: scanner anatomical
    put_i16(h, 254, 1); // sform_code
    for (n, q) in [qb, qc, qd, o[0], o[1], o[2]].iter().enumerate() {
        put_f32(h, 256 + 4 * n, *q as f32);
    }
    for r in 0..3 {
        for c in 0..4 {
            put_f32(h, 280 + 16 * r + 4 * c, vol.affine.0[r][c] as f32);
        }
    }
}

/// Compress `bytes` as a multi-member gzip stream, the members compressed in parallel (fastest level, as the
/// writer always used).
pub(crate) fn gzip_members(bytes: &[u8]) -> std::io::Result<Vec<Vec<u8>>> {
    bytes
        .par_chunks(GZ_CHUNK)
        .map(|chunk| {
            let mut e = GzEncoder::new(Vec::with_capacity(chunk.len() / 2), Compression::fast());
            e.write_all(chunk)?;
            e.finish()
        })
        .collect()
}

pub(crate) fn put_i16(h: &mut [u8], at: usize, v: i16) {
    h[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_i32(h: &mut [u8], at: usize, v: i32) {
    h[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_f32(h: &mut [u8], at: usize, v: f32) {
    h[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Affine;
    use ndarray::Array3;

    fn vol(f: impl Fn(usize) -> f32) -> Volume {
        Volume::new(Array3::from_shape_fn((5, 4, 3), |(i, j, k)| f(i + 5 * j + 20 * k)), Affine::identity())
    }

    #[test]
    fn smallest_exact_storage() {
        assert_eq!(storage_for(&vol(|n| n as f32 - 30.0)), Storage::I16);
        assert_eq!(storage_for(&vol(|n| n as f32 * 1000.0)), Storage::U16);
        assert_eq!(storage_for(&vol(|n| n as f32 * -1000.0)), Storage::I32);
        assert_eq!(storage_for(&vol(|n| n as f32 + 0.5)), Storage::F32);
        assert_eq!(storage_for(&vol(|n| n as f32 - 0.25)), Storage::F32);
        assert_eq!(storage_for(&vol(|n| -(n as f32) - 0.75)), Storage::F32);
        assert_eq!(storage_for(&vol(|n| if n == 7 { f32::NAN } else { 1.0 })), Storage::F32);
        assert_eq!(storage_for(&vol(|n| n as f32 * 1e9)), Storage::F32);
    }

    #[test]
    fn members_inflate_to_the_input() {
        use std::io::Read;
        let bytes: Vec<u8> = (0..(GZ_CHUNK * 2 + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        let members = gzip_members(&bytes).expect("gzip");
        assert_eq!(members.len(), 3);
        let joined: Vec<u8> = members.concat();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&joined[..]).read_to_end(&mut back).expect("inflate");
        assert_eq!(back, bytes);
    }
}
