//! Whole f32 values known to fit in 16 bits → int16 / uint16, eight at a time.
//!
//! The writer only narrows values that [`super::Stats`] found whole and in range, so no rounding, clamping or
//! NaN handling is needed — but Rust's `as` casts must saturate, and LLVM turns them into one scalar
//! conversion and two compares per voxel (this was a sixth of `ldae convert`'s CPU). On x86_64 the SSE2
//! truncating conversion and the saturating 32 → 16-bit pack do eight voxels in four instructions; uint16
//! values are shifted by 2^15 into the int16 range first (exact in f32) and back by flipping the top bit.
//! Elsewhere, and for the tail, the plain casts. Output is little-endian, as the caller stores it.

/// `dst[i] = src[i] as i16` for whole `src[i]` in the i16 range (`dst.len() == src.len()`).
pub(super) fn to_i16(src: &[f32], dst: &mut [i16]) {
    let done = simd::narrow(src, dst, 0.0, 0);
    for (d, &x) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = ((x as i32) as i16).to_le();
    }
}

/// `dst[i] = src[i] as u16` for whole `src[i]` in the u16 range (`dst.len() == src.len()`).
pub(super) fn to_u16(src: &[f32], dst: &mut [u16]) {
    let done = simd::narrow(src, bytemuck::cast_slice_mut(dst), 32768.0, 0x8000u16 as i16);
    for (d, &x) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = ((x as i32) as u16).to_le();
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Narrow whole groups of eight: `dst[i] = ((src[i] - shift) as i16) ^ flip`. Returns how many were done.
    pub(super) fn narrow(src: &[f32], dst: &mut [i16], shift: f32, flip: i16) -> usize {
        let n = src.len().min(dst.len()) / 8 * 8;
        // SAFETY (both blocks): SSE2 is part of every x86_64 CPU, so the intrinsics may run; `s` holds 8 f32
        // and `d` 8 i16 (16 bytes), and the unaligned load/store forms need no alignment.
        let (shift, flip) = unsafe { (_mm_set1_ps(shift), _mm_set1_epi16(flip)) };
        for (s, d) in src[..n].chunks_exact(8).zip(dst[..n].chunks_exact_mut(8)) {
            unsafe {
                let a = _mm_cvttps_epi32(_mm_sub_ps(_mm_loadu_ps(s.as_ptr()), shift));
                let b = _mm_cvttps_epi32(_mm_sub_ps(_mm_loadu_ps(s.as_ptr().add(4)), shift));
                _mm_storeu_si128(d.as_mut_ptr().cast(), _mm_xor_si128(_mm_packs_epi32(a, b), flip));
            }
        }
        n
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    /// No vector path here: the callers' scalar loops do everything.
    pub(super) fn narrow(_: &[f32], _: &mut [i16], _: f32, _: i16) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_matches_the_plain_casts_at_every_edge_and_length() {
        let i16_edges = [-32768.0f32, -32767.0, -1.0, -0.0, 0.0, 1.0, 255.0, 256.0, 32766.0, 32767.0];
        let u16_edges = [0.0f32, -0.0, 1.0, 32767.0, 32768.0, 32769.0, 65534.0, 65535.0];
        for len in 0..40 {
            let src: Vec<f32> = (0..len).map(|i| i16_edges[(i * 7 + len) % i16_edges.len()]).collect();
            let mut d = vec![0i16; len];
            to_i16(&src, &mut d);
            assert_eq!(d, src.iter().map(|&x| x as i16).collect::<Vec<_>>(), "len {len}");
            let src: Vec<f32> = (0..len).map(|i| u16_edges[(i * 5 + len) % u16_edges.len()]).collect();
            let mut d = vec![0u16; len];
            to_u16(&src, &mut d);
            assert_eq!(d, src.iter().map(|&x| x as u16).collect::<Vec<_>>(), "len {len}");
        }
    }
}
