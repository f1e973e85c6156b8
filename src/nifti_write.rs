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
//!
//! [`write_to`] streams the file: each [`GZ_CHUNK`] of it is encoded (and compressed) on its own, a few in
//! parallel, into small reused buffers, so the whole encoded file is never held in memory.

use flate2::write::GzEncoder;
use flate2::Compression;
use rayon::prelude::*;
use std::borrow::Cow;
use std::io::Write;

use crate::volume::Volume;

mod narrow;

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

    /// One pass, written in 16 independent lanes so that it vectorises (plain SSE2 compares, adds and
    /// selects): `if x < lo` is the min instruction's own rule. A value is whole when it is at least 2^23 in
    /// magnitude (every such f32 is an integer, and the infinities pass here) or when rounding it by adding
    /// and subtracting 2^23 gives it back; NaN fails both. Whole values past i32 and the infinities go to
    /// float32 storage by their range. The range counts every value but NaN; when it includes an infinity
    /// (float32 storage), [`Stats::finite_range`] recomputes it over the finite values.
    fn of(v: &[f32]) -> Stats {
        const LANES: usize = 16;
        const BIG: f32 = 8_388_608.0; // 2^23
        let mut lo = [f32::INFINITY; LANES];
        let mut hi = [f32::NEG_INFINITY; LANES];
        let mut fractional = [0u32; LANES];
        let mut lane = |i: usize, x: f32| {
            lo[i] = if x < lo[i] { x } else { lo[i] };
            hi[i] = if x > hi[i] { x } else { hi[i] };
            let a = x.abs();
            fractional[i] |= u32::from(!(a >= BIG || (a + BIG) - BIG == a));
        };
        let mut chunks = v.chunks_exact(LANES);
        for c in &mut chunks {
            for (i, &x) in c.iter().enumerate() {
                lane(i, x);
            }
        }
        for (i, &x) in chunks.remainder().iter().enumerate() {
            lane(i, x);
        }
        let lo = lo.iter().fold(f32::INFINITY, |a, &b| a.min(b));
        let hi = hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        Stats { lo, hi, whole: fractional.iter().all(|&f| f == 0) }
    }

    /// The range over finite values only (the float32 case with infinities).
    fn finite_range(v: &[f32]) -> Stats {
        let mut s = Stats::EMPTY;
        for &x in v.iter().filter(|x| x.is_finite()) {
            s.lo = s.lo.min(x);
            s.hi = s.hi.max(x);
        }
        s.whole = false;
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
    stats_of(&fortran_order(vol)).1
}

/// Range, integrality and the storage they choose, over all voxels (in parallel).
fn stats_of(v: &[f32]) -> (Stats, Storage) {
    let mut stats = v.par_chunks(VOXEL_CHUNK).map(Stats::of).reduce(|| Stats::EMPTY, Stats::join);
    let finite = stats.lo.is_finite() && stats.hi.is_finite();
    if !finite {
        stats = v.par_chunks(VOXEL_CHUNK).map(Stats::finite_range).reduce(|| Stats::EMPTY, Stats::join);
    }
    let storage = stats.storage();
    (stats, storage)
}

/// The 348-byte header and the 4-byte extension flag: the affine as sform and as qform (both code 1, scanner
/// anatomical; the qform is the nearest rigid+scale form), mm + s units, the value range in cal_min/cal_max,
/// `description` (at most 79 bytes) in descrip.
fn header(vol: &Volume, description: &str, storage: Storage, stats: Stats) -> [u8; VOX_OFFSET] {
    let mut h = [0u8; VOX_OFFSET];
    let size = storage.bytes();
    let (cal_min, cal_max) = if stats.lo <= stats.hi { (stats.lo, stats.hi) } else { (0.0, 0.0) };
    let [ni, nj, nk] = vol.shape();
    put_i32(&mut h, 0, 348);
    h[38] = b'r';
    for (n, d) in [3usize, ni, nj, nk, 1, 1, 1, 1].iter().enumerate() {
        put_i16(&mut h, 40 + 2 * n, *d as i16);
    }
    put_i16(&mut h, 70, storage.code());
    put_i16(&mut h, 72, (size * 8) as i16);
    put_f32(&mut h, 108, VOX_OFFSET as f32);
    // scl_slope 1 / scl_inter 0: the stored values are the values.
    put_f32(&mut h, 112, 1.0);
    put_f32(&mut h, 116, 0.0);
    put_f32(&mut h, 124, cal_max);
    put_f32(&mut h, 128, cal_min);
    h[344..348].copy_from_slice(b"n+1\0");
    put_geometry(&mut h, vol, description);
    h
}

/// Voxels as stored, little-endian, appended to `out` (a word buffer, so every storage type's view is aligned).
/// The integer storages only ever get whole values in their range (see [`Stats::storage`]), so no rounding or
/// clamping is needed: int16/uint16 go through [`narrow`], int32 through a plain truncating cast.
fn convert(storage: Storage, src: &[f32], out: &mut Vec<u32>) {
    let words = (src.len() * storage.bytes()).div_ceil(4);
    // Every byte used is overwritten below: a reused buffer of the right size is not cleared again.
    out.resize(words, 0);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out[..]);
    let bytes = &mut bytes[..src.len() * storage.bytes()];
    match storage {
        Storage::I16 => {
            let d: &mut [i16] = bytemuck::cast_slice_mut(bytes);
            narrow::to_i16(src, d);
        }
        Storage::U16 => {
            let d: &mut [u16] = bytemuck::cast_slice_mut(bytes);
            narrow::to_u16(src, d);
        }
        Storage::I32 => {
            let d: &mut [i32] = bytemuck::cast_slice_mut(bytes);
            d.iter_mut().zip(src).for_each(|(d, &x)| *d = (x as i32).to_le());
        }
        Storage::F32 => {
            let d: &mut [u32] = bytemuck::cast_slice_mut(bytes);
            d.iter_mut().zip(src).for_each(|(d, &x)| *d = x.to_bits().to_le());
        }
    }
}

/// The voxels of file chunk `n` (file bytes `n·GZ_CHUNK .. (n+1)·GZ_CHUNK`, the first chunk after the header).
fn chunk_voxels(v: &[f32], size: usize, n: usize) -> &[f32] {
    let per = GZ_CHUNK / size;
    let head = VOX_OFFSET / size; // 352 is a multiple of 2 and 4
    let start = (n * per).saturating_sub(head).min(v.len());
    let end = ((n + 1) * per - head).min(v.len());
    &v[start..end]
}

/// Stream the `.nii` (`gz`: the multi-member `.nii.gz`) of `vol` to `out`, the storage type chosen from the
/// values (see the module doc). At most a few [`GZ_CHUNK`]s of encoded bytes are held at once.
pub(crate) fn write_to(out: &mut impl Write, vol: &Volume, description: &str, gz: bool) -> std::io::Result<()> {
    let v = fortran_order(vol);
    let (stats, storage) = stats_of(&v);
    let head = header(vol, description, storage, stats);
    let size = storage.bytes();
    let total = VOX_OFFSET + v.len() * size;
    let chunks = total.div_ceil(GZ_CHUNK);
    // Chunks encoded at once: enough for every worker, few enough that memory stays a few MiB.
    let batch = (rayon::current_num_threads() * 2).max(1);
    let mut bufs: Vec<Vec<u32>> = Vec::new();
    let mut first = 0;
    while first < chunks {
        let last = (first + batch).min(chunks);
        bufs.resize_with(last - first, Vec::new);
        if gz {
            let members: Vec<std::io::Result<Vec<u8>>> = (first..last)
                .into_par_iter()
                .zip(bufs.par_iter_mut())
                .map(|(n, buf)| {
                    convert(storage, chunk_voxels(&v, size, n), buf);
                    let bytes: &[u8] = bytemuck::cast_slice(&buf[..]);
                    let vox = &bytes[..chunk_voxels(&v, size, n).len() * size];
                    let mut e = GzEncoder::new(Vec::with_capacity(GZ_CHUNK / 2), Compression::fast());
                    if n == 0 {
                        e.write_all(&head)?;
                    }
                    e.write_all(vox)?;
                    e.finish()
                })
                .collect();
            for m in members {
                out.write_all(&m?)?;
            }
        } else {
            (first..last).into_par_iter().zip(bufs.par_iter_mut()).for_each(|(n, buf)| {
                convert(storage, chunk_voxels(&v, size, n), buf);
            });
            for (n, buf) in (first..last).zip(&bufs) {
                if n == 0 {
                    out.write_all(&head)?;
                }
                let bytes: &[u8] = bytemuck::cast_slice(&buf[..]);
                out.write_all(&bytes[..chunk_voxels(&v, size, n).len() * size])?;
            }
        }
        first = last;
    }
    Ok(())
}

/// Write the uncompressed `.nii` of `vol` into `file` (from offset 0) with positioned writes: each worker
/// converts a [`GZ_CHUNK`] of voxels and writes it at its place, so converting one chunk overlaps copying
/// another into the page cache, and memory stays one chunk per worker.
pub(crate) fn write_at(file: &std::fs::File, vol: &Volume, description: &str) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let v = fortran_order(vol);
    let (stats, storage) = stats_of(&v);
    file.write_all_at(&header(vol, description, storage, stats), 0)?;
    let size = storage.bytes();
    let chunks = (VOX_OFFSET + v.len() * size).div_ceil(GZ_CHUNK);
    (0..chunks).into_par_iter().try_for_each(|n| {
        crate::scratch::with(&WRITE_BUFFER, |buf| {
            let voxels = chunk_voxels(&v, size, n);
            convert(storage, voxels, buf);
            let bytes: &[u8] = bytemuck::cast_slice(&buf[..]);
            let at = if n == 0 { VOX_OFFSET } else { n * GZ_CHUNK };
            file.write_all_at(&bytes[..voxels.len() * size], at as u64)
        })
    })
}

thread_local! {
    /// Each writing thread's chunk buffer (one [`GZ_CHUNK`]), kept across chunks and files: a fresh 1 MiB
    /// buffer per chunk costs 256 page faults.
    static WRITE_BUFFER: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Header + extension flag + voxels of a single-file `.nii`, the storage type chosen from the values (the
/// bytes [`write_to`] streams, in one buffer).
pub(crate) fn encode(vol: &Volume, description: &str) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_to(&mut out, vol, description, false);
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
#[cfg(test)]
fn gzip_members(bytes: &[u8]) -> std::io::Result<Vec<Vec<u8>>> {
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
    fn lane_stats_agree_with_the_plain_definition() {
        let edge = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            0.999_999_94,
            1e-45,
            -1e-45,
            4_194_303.5,
            4_194_304.0,
            8_388_607.5,
            8_388_608.0,
            16_777_217.0,
            2_147_483_520.0,
            2_147_483_648.0,
            -2_147_483_648.0,
            3e38,
            -3e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            32_767.0,
            -32_768.0,
            65_535.0,
            123.25,
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for round in 0..400 {
            let n = 1 + round % 70;
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    match rng % 3 {
                        0 => edge[(rng >> 8) as usize % edge.len()],
                        1 => ((rng >> 16) % 70_000) as f32 - 35_000.0,
                        _ => f32::from_bits((rng >> 20) as u32),
                    }
                })
                .collect();
            let s = Stats::of(&v);
            let plain = Stats {
                lo: v.iter().filter(|x| !x.is_nan()).fold(f32::INFINITY, |a, &x| a.min(x)),
                hi: v.iter().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, |a, &x| a.max(x)),
                whole: v.iter().all(|&x| (x as i32) as f32 == x),
            };
            assert_eq!(s.storage(), plain.storage(), "{v:?}");
            assert!(s.lo == plain.lo && s.hi == plain.hi, "{v:?}: {s:?} vs {plain:?}");
        }
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

    /// Volumes over several chunks, int16 and float32: the streamed `.nii` has the header, then every voxel as
    /// stored in order, and the streamed `.nii.gz` inflates to the same bytes.
    #[test]
    fn streamed_chunks_hold_every_voxel() {
        use std::io::Read;
        let (ni, nj, nk) = (123, 97, 61); // 727 731 voxels: 2 chunks as int16, 3 as float32
        for frac in [0.0f32, 0.5] {
            let v = Volume::new(
                Array3::from_shape_fn((ni, nj, nk), |(i, j, k)| ((i * 7 + j * 3 + k) % 2000) as f32 - 999.0 + frac),
                Affine::identity(),
            );
            let nii = encode(&v, "t");
            let size = if frac == 0.0 { 2 } else { 4 };
            assert_eq!(nii.len(), VOX_OFFSET + ni * nj * nk * size);
            assert_eq!(i16::from_le_bytes([nii[70], nii[71]]), if frac == 0.0 { 4 } else { 16 });
            let (i, j, k) = (122, 50, 60);
            let at = VOX_OFFSET + (i + ni * (j + nj * k)) * size;
            let want = v.data[(i, j, k)];
            let got = if size == 2 {
                i16::from_le_bytes([nii[at], nii[at + 1]]) as f32
            } else {
                f32::from_le_bytes([nii[at], nii[at + 1], nii[at + 2], nii[at + 3]])
            };
            assert_eq!(got, want);
            let mut gz = Vec::new();
            write_to(&mut gz, &v, "t", true).expect("gz");
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut back).expect("inflate");
            assert_eq!(back, nii);
        }
    }

    #[test]
    fn range_ignores_nan_and_infinities() {
        let v = vol(|n| match n {
            3 => f32::NAN,
            4 => f32::INFINITY,
            5 => f32::NEG_INFINITY,
            _ => n as f32 - 10.0,
        });
        let (s, storage) = stats_of(&fortran_order(&v));
        assert_eq!(storage, Storage::F32);
        assert_eq!((s.lo, s.hi), (-10.0, 49.0));
        // Infinities without NaN: whole by the lane rule, still float32 by their range, still left out of it.
        let v = vol(|n| if n == 4 { f32::INFINITY } else { n as f32 - 10.0 });
        let (s, storage) = stats_of(&fortran_order(&v));
        assert_eq!(storage, Storage::F32);
        assert_eq!((s.lo, s.hi), (-10.0, 49.0));
    }
}
