//! Model slots: every model a station has loaded while it runs, by slot index. A recipe runs in
//! a slot; a newly installed model gets the next slot, and the one it replaces stays loaded (for
//! rollback). Each entry is written once and read lock-free on the frame path (one atomic load),
//! so the pipeline's threads see a new slot as soon as it is installed and never wait for it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most models one station run can hold: its recipes' plus those installed while it runs.
pub const MAX_SLOTS: usize = 32;

/// A write-once table of up to [`MAX_SLOTS`] entries.
pub struct Slots<T> {
    entries: Box<[OnceLock<T>]>,
    /// Entries written, in index order (an entry is written before `len` counts it).
    len: AtomicUsize,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Slots<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self { entries: (0..MAX_SLOTS).map(|_| OnceLock::new()).collect(), len: AtomicUsize::new(0) }
    }
}

impl<T> Slots<T> {
    /// A table holding `initial` at indices 0, 1, ...
    pub fn from_vec(initial: Vec<T>) -> Self {
        let slots = Self::default();
        for (i, value) in initial.into_iter().enumerate().take(MAX_SLOTS) {
            let _ = slots.entries[i].set(value);
            slots.len.store(i + 1, Ordering::Release);
        }
        slots
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.entries.get(index)?.get()
    }

    /// Entries written so far.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write entry `index` (the next one); `Err` when it is written already or out of room.
    pub fn set(&self, index: usize, value: T) -> Result<(), T> {
        let Some(entry) = self.entries.get(index) else { return Err(value) };
        entry.set(value)?;
        self.len.fetch_max(index + 1, Ordering::AcqRel);
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().take(self.len()).filter_map(OnceLock::get)
    }
}
