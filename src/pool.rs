//! Lock-free buffer pools: pixel and tensor buffers are taken from a pool and go back to it when
//! dropped, so the frame path does not touch the heap in steady state.
//!
//! A pool is a bounded `ArrayQueue` of spare `Vec`s. `take` pops a spare (or allocates one when the
//! pool is empty, which only happens while the pipeline warms up or when more buffers are in flight
//! than the pool was sized for) and sizes it without shrinking its capacity. Dropping the
//! [`Pooled`] handle returns the vector; if the pool is full the vector is freed.

use crossbeam_queue::ArrayQueue;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A pool of reusable `Vec<T>` buffers, shared by cloning.
pub struct BufferPool<T> {
    inner: Arc<PoolInner<T>>,
}

struct PoolInner<T> {
    spares: ArrayQueue<Vec<T>>,
    /// How many times `take` found the pool empty and had to allocate.
    misses: AtomicU64,
}

impl<T> Clone for BufferPool<T> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<T: Copy + Default + Send> BufferPool<T> {
    /// A pool that keeps at most `capacity` spare buffers.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Arc::new(PoolInner { spares: ArrayQueue::new(capacity.max(1)), misses: AtomicU64::new(0) }) }
    }

    /// A pool filled up front with `capacity` buffers of `len` elements, so the frame path never
    /// allocates, not even while the pipeline first fills up.
    pub fn preallocated(capacity: usize, len: usize) -> Self {
        Self::partly_preallocated(capacity, capacity, len)
    }

    /// A pool that keeps up to `capacity` spares, `filled` of them allocated up front with `len`
    /// elements: the others are allocated the first time a peak needs them, then kept, so a rare
    /// peak costs memory only where it happens and allocates only once.
    pub fn partly_preallocated(capacity: usize, filled: usize, len: usize) -> Self {
        let pool = Self::new(capacity);
        for _ in 0..filled.min(capacity) {
            let _ = pool.inner.spares.push(vec![T::default(); len]);
        }
        pool
    }

    /// A buffer of exactly `len` elements. Its contents are unspecified (whatever the previous
    /// user left, or zeros when newly allocated): callers overwrite it.
    pub fn take(&self, len: usize) -> Pooled<T> {
        let mut buf = match self.inner.spares.pop() {
            Some(buf) => buf,
            None => {
                self.inner.misses.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(len)
            }
        };
        // `resize` only allocates when the spare is smaller than asked, which stops once every
        // spare has served the largest frame once.
        buf.resize(len, T::default());
        Pooled { buf: Some(buf), home: Arc::clone(&self.inner) }
    }

    /// How many times the pool was empty when asked for a buffer.
    pub fn misses(&self) -> u64 {
        self.inner.misses.load(Ordering::Relaxed)
    }
}

/// A buffer on loan from a [`BufferPool`]; goes back to the pool on drop.
pub struct Pooled<T> {
    buf: Option<Vec<T>>,
    home: Arc<PoolInner<T>>,
}

impl<T> Pooled<T> {
    /// Resize the loaned buffer (keeps capacity; allocates only when growing past it).
    pub fn resize(&mut self, len: usize)
    where
        T: Copy + Default,
    {
        if let Some(buf) = self.buf.as_mut() {
            buf.resize(len, T::default());
        }
    }

    /// The underlying vector, for APIs that fill a `Vec` (e.g. decoders).
    pub fn as_vec_mut(&mut self) -> &mut Vec<T> {
        self.buf.as_mut().expect("pooled buffer is present until drop")
    }
}

impl<T> Deref for Pooled<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl<T> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.buf.as_deref_mut().unwrap_or(&mut [])
    }
}

impl<T> Drop for Pooled<T> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // A full pool means more buffers were in flight than it keeps: free this one.
            let _ = self.home.spares.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_after_drop() {
        let pool = BufferPool::<u8>::new(2);
        let first = pool.take(100);
        let ptr = first.as_ptr();
        drop(first);
        let second = pool.take(50);
        assert_eq!(second.as_ptr(), ptr, "the spare should be handed out again");
        assert_eq!(second.len(), 50);
        assert_eq!(pool.misses(), 1, "only the first take allocates");
    }

    #[test]
    fn a_preallocated_pool_never_misses_within_its_capacity() {
        let pool = BufferPool::<u8>::preallocated(3, 10);
        let held: Vec<_> = (0..3).map(|_| pool.take(10)).collect();
        assert_eq!(pool.misses(), 0);
        drop(held);
        assert_eq!(pool.misses(), 0);
    }

    #[test]
    fn a_partly_preallocated_pool_allocates_its_peak_once_and_keeps_it() {
        let pool = BufferPool::<u8>::partly_preallocated(5, 2, 10);
        let peak: Vec<_> = (0..5).map(|_| pool.take(10)).collect();
        assert_eq!(pool.misses(), 3, "the three beyond the two filled up front");
        drop(peak);
        let again: Vec<_> = (0..5).map(|_| pool.take(10)).collect();
        assert_eq!(pool.misses(), 3, "the peak's buffers were kept");
        drop(again);
    }

    #[test]
    fn an_empty_pool_allocates_and_counts_a_miss() {
        let pool = BufferPool::<f32>::new(1);
        let a = pool.take(4);
        let b = pool.take(4);
        assert_eq!(pool.misses(), 2);
        drop((a, b));
        // Capacity 1: one of the two is kept, the other freed.
        let _c = pool.take(4);
        assert_eq!(pool.misses(), 2);
    }
}
