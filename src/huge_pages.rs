//! Transparent huge pages for large allocations.
//!
//! A freshly allocated large buffer (a 35 MB volume, a model tensor) is faulted in one 4 KiB page at a time on
//! first write: 8 500 page faults for one 1 mm brain volume, which profiling showed to be a quarter of the CPU
//! time of `ldae convert`. Where the kernel runs transparent huge pages in `madvise` mode (Debian's default),
//! advising the 2 MiB-aligned interior of such a buffer with `MADV_HUGEPAGE` before it is touched lets each
//! fault map 2 MiB instead. The advice is a hint: it changes no contents and its failure is ignored.

/// Allocations from this size up are advised (smaller ones seldom span a whole aligned 2 MiB page).
pub(crate) const MIN_BYTES: usize = 4 << 20;

const HUGE: usize = 2 << 20;

/// Advise the whole 2 MiB pages inside `[ptr, ptr + len)` for huge pages (a no-op below [`MIN_BYTES`]).
pub(crate) fn advise(ptr: *mut u8, len: usize) {
    if len < MIN_BYTES || ptr.is_null() {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize).saturating_add(len) & !(HUGE - 1);
    if end <= start {
        return;
    }
    // SAFETY: the range lies inside an allocation the caller owns; MADV_HUGEPAGE changes no contents or
    // permissions, and any error (an old kernel, THP disabled) leaves the mapping as it was.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advised_buffers_keep_their_contents() {
        let mut v = vec![7u8; 9 << 20];
        advise(v.as_mut_ptr(), v.len());
        assert!(v.iter().all(|&b| b == 7));
        v[5 << 20] = 1;
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 7 * (9 << 20) - 6);
    }
}
