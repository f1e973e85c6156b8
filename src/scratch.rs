//! Per-thread scratch buffers that survive between calls.
//!
//! Hot loops over many files or chunks (pixel reads, NIfTI chunk encoding) want one buffer per worker thread,
//! reused, because a fresh large buffer costs an allocation and a page fault per 4 KiB on first touch. A
//! module declares its buffer with `thread_local!` and borrows it through [`with`].

use std::cell::RefCell;
use std::thread::LocalKey;

/// Run `f` on this thread's buffer in `key`. Should `f` reach `with` on the same key again (nothing does
/// today), the inner call gets a fresh buffer instead of a borrow panic.
pub(crate) fn with<T: Default + 'static, R>(key: &'static LocalKey<RefCell<T>>, f: impl FnOnce(&mut T) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut kept) => f(&mut kept),
        Err(_) => f(&mut T::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn the_buffer_is_kept_between_calls_and_reentry_gets_a_fresh_one() {
        with(&BUF, |b| b.extend_from_slice(b"abc"));
        let inner = with(&BUF, |outer| {
            assert_eq!(outer, b"abc", "kept from the first call");
            with(&BUF, |inner| {
                inner.push(1);
                inner.clone()
            })
        });
        assert_eq!(inner, vec![1], "re-entry works on a fresh buffer");
        with(&BUF, |b| assert_eq!(b, b"abc", "the kept buffer is untouched by the re-entry"));
    }
}
