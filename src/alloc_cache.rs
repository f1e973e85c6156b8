//! A bounded cache of large freed blocks, so that a tensor program stops paying the kernel for fresh pages.
//!
//! Every candle op allocates its output; glibc serves blocks past its mmap threshold with a fresh `mmap` and
//! returns them with `munmap`, so each new tensor's first write faults in pages the kernel must zero. Profiling
//! `ldae train` showed 43 % of its CPU time in that zeroing (`clear_page_erms`), against 17 % in the gemm. Model
//! code allocates the same few sizes over and over (one per activation shape), so the global allocator
//! ([`crate::alloc_cap`]) rounds large blocks up to a size class (four per octave) and, on free, keeps up to [`SLOTS`] of them —
//! at most the byte budget in total ([`set_budget`], default [`DEFAULT_BUDGET`]) — for the next request of the
//! same class; when the cache is full the oldest retained blocks go back to the system. [`trim`] gives
//! all retained blocks back (the daemon calls it after every job, so an idle daemon holds no cache).
//!
//! The cache holds raw addresses only; its lock is a `std::sync::Mutex`, which never allocates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks from this size up (with alignment ≤ [`MAX_ALIGN`]) are rounded and cached: glibc's default mmap
/// threshold, so that every block glibc would map afresh is served here. (A threshold of 1 MiB measured 4× more
/// page faults in an encode: glibc never saw a large free, so it never raised its own threshold, and every
/// 128 KiB–1 MiB tensor was mapped afresh.)
pub(crate) const MIN_BYTES: usize = 128 << 10;
/// Every class size is a multiple of this (a quarter of [`MIN_BYTES`]).
pub(crate) const GRAIN: usize = MIN_BYTES / CLASSES_PER_OCTAVE;
const CLASSES_PER_OCTAVE: usize = 4;
/// The largest alignment a cached block serves (what `malloc` guarantees).
pub(crate) const MAX_ALIGN: usize = 16;
/// How many freed blocks the cache holds at most.
const SLOTS: usize = 256;
/// The default total of retained bytes: small beside the daemon's working set (its hostile-input test bounds
/// peak RSS at 512 MiB; a 1 GiB budget took it from 325 to 622 MiB). `ldae train` raises it ([`TRAIN_BUDGET`]).
pub const DEFAULT_BUDGET: usize = 256 << 20;
/// The budget for a training run, whose backward pass frees and reallocates many activation-sized blocks.
pub const TRAIN_BUDGET: usize = 1 << 30;

static BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);

struct Slots {
    /// (address, rounded size) of each retained block; the first `len` entries are live.
    blocks: [(usize, usize); SLOTS],
    len: usize,
    retained: usize,
}

static CACHE: Mutex<Slots> = Mutex::new(Slots { blocks: [(0, 0); SLOTS], len: 0, retained: 0 });

fn lock() -> std::sync::MutexGuard<'static, Slots> {
    // Nothing panics while the lock is held, but a poisoned lock still guards consistent data.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The size a block of `size` bytes and `align` alignment is really allocated at: rounded up to [`GRAIN`] when
/// it is cached, unchanged otherwise. Depends on the request alone, so `alloc` and `dealloc` always agree.
pub(crate) fn rounded(size: usize, align: usize) -> usize {
    if size >= MIN_BYTES && align <= MAX_ALIGN {
        // Four size classes per octave (1, 1.25, 1.5, 1.75 × a power of two): near shapes share a class, so
        // a freed block of a slightly different shape is found again.
        let step = (1usize << size.ilog2()) / CLASSES_PER_OCTAVE;
        match size.checked_next_multiple_of(step) {
            // A layout must stay within isize::MAX; a size that near it is simply not cached.
            Some(r) if r <= isize::MAX as usize - MAX_ALIGN => r,
            _ => size,
        }
    } else {
        size
    }
}

/// Whether blocks of this rounded size and alignment go through the cache.
pub(crate) fn cacheable(rounded: usize, align: usize) -> bool {
    rounded >= MIN_BYTES && align <= MAX_ALIGN && rounded % GRAIN == 0
}

/// A retained block of exactly `rounded` bytes (the most recently freed), taken out of the cache.
pub(crate) fn take(rounded: usize) -> Option<*mut u8> {
    let mut c = lock();
    let n = c.len;
    let i = c.blocks[..n].iter().rposition(|&(_, s)| s == rounded)?;
    let (p, s) = c.blocks[i];
    c.blocks.copy_within(i + 1..n, i);
    c.len = n - 1;
    c.retained -= s;
    Some(p as *mut u8)
}

/// Offer a freed block to the cache, making room by giving back the oldest retained blocks (sizes a program
/// stopped using must not clog the slots); `false` means the block is larger than the budget and the caller
/// must free it.
pub(crate) fn put(ptr: *mut u8, rounded: usize) -> bool {
    loop {
        let budget = BUDGET.load(Ordering::Relaxed);
        if rounded > budget {
            return false;
        }
        let oldest = {
            let mut c = lock();
            if c.len < SLOTS && c.retained + rounded <= budget {
                let n = c.len;
                c.blocks[n] = (ptr as usize, rounded);
                c.len = n + 1;
                c.retained += rounded;
                return true;
            }
            pop_oldest(&mut c)
        };
        if let Some((p, s)) = oldest {
            // Freed outside the lock: the system allocator may take its own locks.
            crate::alloc_cap::release(p as *mut u8, s);
        }
    }
}

fn pop_oldest(c: &mut Slots) -> Option<(usize, usize)> {
    let n = c.len;
    if n == 0 {
        return None;
    }
    let b = c.blocks[0];
    c.blocks.copy_within(1..n, 0);
    c.len = n - 1;
    c.retained -= b.1;
    Some(b)
}

/// Set the most bytes the cache may retain (0 turns it off) and give back whatever is over it.
pub fn set_budget(bytes: usize) {
    BUDGET.store(bytes, Ordering::Relaxed);
    if bytes == 0 {
        trim();
    }
}

/// Give every retained block back to the system.
pub fn trim() {
    loop {
        let oldest = pop_oldest(&mut lock());
        let Some((p, s)) = oldest else { break };
        crate::alloc_cap::release(p as *mut u8, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_by_request_alone() {
        assert_eq!(rounded(100, 8), 100);
        assert_eq!(rounded(MIN_BYTES, 8), MIN_BYTES);
        assert_eq!(rounded(MIN_BYTES + 1, 8), MIN_BYTES + MIN_BYTES / 4);
        assert_eq!(rounded(MIN_BYTES - 1, 8), MIN_BYTES - 1);
        assert_eq!(rounded((6 << 20) + 1, 8), 7 << 20);
        assert_eq!(rounded(7 << 20, 8), 7 << 20);
        assert_eq!(rounded(MIN_BYTES + 1, 4096), MIN_BYTES + 1, "over-aligned blocks are not cached");
        assert_eq!(rounded(usize::MAX - 3, 8), usize::MAX - 3, "sizes near the limit are not rounded");
        assert!(!cacheable(rounded(usize::MAX - 3, 8), 8));
        assert!(cacheable(rounded(3 << 20, 16), 16));
        assert!(!cacheable(rounded(3 << 20, 64), 64));
    }

    #[test]
    fn a_freed_large_buffer_is_reused_and_reads_as_zero_when_asked() {
        // Tests run in parallel and share the global cache, so the size is one no other test uses.
        let n = (7 << 20) + 12345;
        let mut a = vec![3u8; n];
        a[n - 1] = 9;
        let p = a.as_ptr() as usize;
        drop(a);
        let b = vec![0u8; n];
        // Another thread may have taken the block first; when this one got it, it must be zeroed.
        if b.as_ptr() as usize == p {
            assert!(b.iter().all(|&x| x == 0));
        }
        assert!(b.iter().all(|&x| x == 0));
        let c: Vec<u32> = vec![0; n / 4];
        assert!(c.iter().all(|&x| x == 0));
    }

    #[test]
    fn growing_a_large_vector_keeps_its_contents() {
        let mut v: Vec<u16> = (0..(1u32 << 20)).map(|i| i as u16).collect();
        v.reserve_exact(3 << 20);
        v.extend((0..(3u32 << 20)).map(|i| (i * 7) as u16));
        assert_eq!(v[12345], 12345u32 as u16);
        assert_eq!(v[(1 << 20) + 5], 35);
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<u16>>());
    }
}
