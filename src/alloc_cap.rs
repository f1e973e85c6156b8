//! A per-thread cap on single allocations: the safety net under the DICOM pre-scan.
//!
//! dicom-rs sizes a value's buffer from its claimed length before reading it. The pre-scan ([`crate::dicom::guard`])
//! walks every element first and refuses lengths past the end of the file, but it can only mirror the parser's
//! reading of a malformed file so far (fuzzing found files whose misaligned elements dicom-rs read at other offsets
//! than the walk, and then asked for 0.5–1.8 GB). While dicom-rs parses a file, [`with_cap`] makes any single
//! allocation above the cap fail: the parser's fallible reservation (`try_reserve`) then reports an error instead of
//! taking the memory. The cap is set from what the file can hold, never below what a real file needs.
//!
//! Outside [`with_cap`] the allocator is `System`, with large blocks (≥ [`cache::MIN_BYTES`]) rounded and recycled
//! through [`crate::alloc_cache`]; fresh allocations of [`crate::huge_pages::MIN_BYTES`] and more are advised for
//! transparent huge pages ([`crate::huge_pages`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::alloc_cache as cache;

/// The global allocator: `System` with a cache of large blocks, and the calling thread's cap on one allocation.
pub struct CappedAlloc;

thread_local! {
    static CAP: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn cap() -> usize {
    CAP.try_with(Cell::get).unwrap_or(usize::MAX)
}

/// The layout large cacheable blocks really have: rounded size, the malloc alignment (any request with
/// alignment ≤ [`cache::MAX_ALIGN`] is served by such a block, so every retained block is interchangeable).
fn big(rounded: usize) -> Layout {
    // SAFETY (of the unchecked constructor): MAX_ALIGN is a power of two and `rounded` came from
    // `cache::rounded`, which never rounds past `isize::MAX` rounded down to MAX_ALIGN.
    unsafe { Layout::from_size_align_unchecked(rounded, cache::MAX_ALIGN) }
}

fn alloc_big(rounded: usize, zero: bool, requested: usize) -> *mut u8 {
    if let Some(p) = cache::take(rounded) {
        if zero {
            // SAFETY: the retained block is `rounded` ≥ `requested` bytes and owned by no one else.
            unsafe { std::ptr::write_bytes(p, 0, requested) };
        }
        return p;
    }
    // SAFETY: a non-zero size (≥ cache::MIN_BYTES) with a valid alignment.
    let p = unsafe {
        if zero {
            System.alloc_zeroed(big(rounded))
        } else {
            System.alloc(big(rounded))
        }
    };
    crate::huge_pages::advise(p, rounded);
    p
}

/// `alloc` and `alloc_zeroed`: the cap, then a cached block or `System`.
fn allocate(layout: Layout, zero: bool) -> *mut u8 {
    if layout.size() > cap() {
        return std::ptr::null_mut();
    }
    let r = cache::rounded(layout.size(), layout.align());
    if cache::cacheable(r, layout.align()) {
        return alloc_big(r, zero, layout.size());
    }
    // SAFETY: the caller's layout, forwarded (GlobalAlloc requires it to be non-zero in size).
    let p = unsafe {
        if zero {
            System.alloc_zeroed(layout)
        } else {
            System.alloc(layout)
        }
    };
    crate::huge_pages::advise(p, layout.size());
    p
}

/// Free a block the cache retained (used by [`cache::trim`]).
pub(crate) fn release(ptr: *mut u8, rounded: usize) {
    // SAFETY: every retained block was allocated by `alloc_big` with `big(rounded)`.
    unsafe { System.dealloc(ptr, big(rounded)) }
}

// SAFETY: small requests are forwarded to `System` unchanged (large results get a paging hint that changes
// nothing). Large ones (cache::cacheable) are served by blocks of the rounded size and malloc alignment, which
// satisfy the request's size and alignment, either fresh from `System` or retained by the cache after an
// earlier free; a block is in the cache or handed out, never both. Null (allocation failure) is allowed.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocate(layout, false)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        allocate(layout, true)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let r = cache::rounded(layout.size(), layout.align());
        if cache::cacheable(r, layout.align()) {
            if !cache::put(ptr, r) {
                release(ptr, r);
            }
            return;
        }
        // SAFETY: ptr was allocated by System with this layout (small blocks are forwarded unchanged).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > cap() {
            return std::ptr::null_mut();
        }
        let align = layout.align();
        let (old_r, new_r) = (cache::rounded(layout.size(), align), cache::rounded(new_size, align));
        let (old_big, new_big) = (cache::cacheable(old_r, align), cache::cacheable(new_r, align));
        if !old_big && !new_big {
            // SAFETY: ptr was allocated by System with this layout.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            crate::huge_pages::advise(p, new_size);
            return p;
        }
        if old_big && new_big && old_r == new_r {
            return ptr;
        }
        // Crossing between the cached and the forwarded kinds, or between rounded sizes: move.
        // SAFETY: the caller guarantees new_size is non-zero and valid for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: a valid non-zero layout.
        let p = unsafe { self.alloc(new_layout) };
        if !p.is_null() {
            // SAFETY: both blocks hold at least min(old, new) bytes and do not overlap; ptr is then freed once.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// Run `f` with single allocations on this thread capped at `bytes` (restored afterwards, also on a panic).
pub fn with_cap<T>(bytes: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = CAP.try_with(|c| c.set(self.0));
        }
    }
    let new = usize::try_from(bytes).unwrap_or(usize::MAX);
    let _restore = Restore(CAP.try_with(|c| c.replace(new.min(c.get()))).unwrap_or(usize::MAX));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_thread_cannot_reserve_more_and_the_cap_is_lifted_after() {
        let r = with_cap(1 << 20, || {
            let mut v: Vec<u8> = Vec::new();
            (v.try_reserve_exact(64 << 20).is_err(), v.try_reserve_exact(1 << 10).is_ok())
        });
        assert_eq!(r, (true, true));
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve_exact(64 << 20).is_ok(), "cap lifted");
    }
}
