//! Reusable activation buffers for the forward pass.
//!
//! A forward step allocates a dozen `[T, width]` buffers per layer. Fresh large allocations come
//! from `mmap` as untouched zero pages: every page then faults on first write (from both kernel
//! threads at once, contending for the process's page-table lock) and the `munmap` at drop sends
//! TLB-shootdown interrupts to the other core. A 2,048-token prefill spent a quarter of its time
//! there. [`zeroed`] hands out a buffer from this thread's free list instead (best fit by
//! capacity), cleared and zero-filled, and its drop puts it back, so the pages stay mapped and warm.
//! A thread keeps at most [`KEEP`] buffers: the working set of one step.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Most buffers one thread keeps for reuse.
pub const KEEP: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of f32 that goes back to its thread's free list when dropped.
pub struct Buf(Vec<f32>);

/// `len` zeros, in a buffer reused from this thread's free list when one is large enough.
pub fn zeroed(len: usize) -> Buf {
    let mut v = empty(len);
    v.resize(len, 0.0);
    v
}

/// An empty buffer with room for `cap` elements (reused when possible), to be filled by pushing.
pub fn empty(cap: usize) -> Buf {
    let mut v = take(cap);
    v.clear();
    v
}

/// `len` elements holding whatever an earlier user left (zeros where nothing was), for a caller
/// that writes every element before reading it: no thread spends time clearing it up front.
pub fn stale(len: usize) -> Buf {
    let mut v = take(len);
    if v.len() >= len {
        v.truncate(len);
    } else {
        v.resize(len, 0.0);
    }
    v
}

/// The free buffer of least capacity at or above `cap`, with its old contents, or a new one.
fn take(cap: usize) -> Buf {
    let reused = FREE.with(|f| {
        let mut f = f.borrow_mut();
        let best = f.iter().enumerate().filter(|(_, v)| v.capacity() >= cap).min_by_key(|(_, v)| v.capacity()).map(|(i, _)| i);
        best.map(|i| f.swap_remove(i))
    });
    Buf(reused.unwrap_or_else(|| Vec::with_capacity(cap)))
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        // try_with: a buffer dropped while its thread exits is simply freed.
        let _ = FREE.try_with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < KEEP {
                f.push(v);
            } else if let Some(small) = f.iter_mut().min_by_key(|b| b.capacity()).filter(|b| b.capacity() < v.capacity()) {
                *small = v; // keep the larger of the two
            }
        });
    }
}

impl Deref for Buf {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_and_are_reused() {
        let p = {
            let mut a = zeroed(1000);
            a.iter_mut().for_each(|v| *v = 7.0);
            a.as_ptr()
        };
        let b = zeroed(800); // best fit: the 1000-element buffer dropped above
        assert_eq!(b.as_ptr(), p, "the dropped buffer is reused");
        assert_eq!(b.len(), 800);
        assert!(b.iter().all(|v| *v == 0.0), "reused buffers are zeroed");
        let c = zeroed(5000); // none large enough is free: a new one
        assert_ne!(c.as_ptr(), p);
        let mut e = empty(10);
        assert!(e.is_empty() && e.capacity() >= 10);
        e.extend([1.0, 2.0]);
        assert_eq!(&e[..], &[1.0, 2.0]);
        drop(e);
        // stale: the old contents where there were some, zeros past them
        let s = stale(4);
        assert_eq!(&s[..], &[1.0, 2.0, 0.0, 0.0]);
    }
}
