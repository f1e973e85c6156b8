//! A per-thread cap on single allocations: the safety net under the DICOM pre-scan.
//!
//! dicom-rs sizes a value's buffer from its claimed length before reading it. The pre-scan ([`crate::dicom::guard`])
//! walks every element first and refuses lengths past the end of the file, but it can only mirror the parser's
//! reading of a malformed file so far (fuzzing found files whose misaligned elements dicom-rs read at other offsets
//! than the walk, and then asked for 0.5–1.8 GB). While dicom-rs parses a file, [`with_cap`] makes any single
//! allocation above the cap fail: the parser's fallible reservation (`try_reserve`) then reports an error instead of
//! taking the memory. The cap is set from what the file can hold, never below what a real file needs.
//!
//! Outside [`with_cap`] the allocator is `System`; allocations of [`crate::huge_pages::MIN_BYTES`] and more are
//! advised for transparent huge pages ([`crate::huge_pages`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The global allocator: `System`, with the calling thread's cap on one allocation.
pub struct CappedAlloc;

thread_local! {
    static CAP: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn cap() -> usize {
    CAP.try_with(Cell::get).unwrap_or(usize::MAX)
}

// SAFETY: every call is forwarded to `System` unchanged (large results get a paging hint that changes
// nothing), or answered with null (allocation failure), which the GlobalAlloc contract allows.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > cap() {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout, forwarded.
        let p = unsafe { System.alloc(layout) };
        crate::huge_pages::advise(p, layout.size());
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > cap() {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout, forwarded.
        let p = unsafe { System.alloc_zeroed(layout) };
        crate::huge_pages::advise(p, layout.size());
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > cap() {
            return std::ptr::null_mut();
        }
        // SAFETY: ptr was allocated by System with this layout.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        crate::huge_pages::advise(p, new_size);
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
