//! Waking the line's real-time threads without a lock.
//!
//! The line thread runs at real-time priority (see [`super::priority`]) and must wake at each
//! deadline to the millisecond. Were it to block in a channel's `recv`/`select`, it would share the
//! channel's internal mutex with the normal-priority threads sending to it; a sender preempted
//! while holding that mutex (the line thread itself preempts it when woken) leaves the line
//! thread waiting on the scheduler's whims for a normal thread — a priority inversion that can
//! cost a reject its fire window on a busy CPU.
//!
//! So nothing here ever blocks inside a channel: receivers only `try_recv` and sleep in
//! [`std::thread::park_timeout`]; senders `try_send` and then [`Wakeup::wake`] the receiver's
//! thread. A bounded crossbeam channel whose two sides never block takes no lock (its waker lists
//! stay empty), and `unpark` is an atomic plus a futex wake.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

/// The thread to wake when something has been queued for it. The receiving thread binds itself
/// with [`Wakeup::bind_current`] before it first looks at its queues; a wake before that is not
/// needed (the thread looks at its queues first) and does nothing.
#[derive(Clone, Debug, Default)]
pub struct Wakeup(Arc<OnceLock<Thread>>);

impl Wakeup {
    /// Make the calling thread the one this wakes (once; later calls are ignored).
    pub fn bind_current(&self) {
        let _ = self.0.set(std::thread::current());
    }

    /// Wake the bound thread if it sleeps in [`sleep_until`] (or make its next sleep return at
    /// once if it is awake: nothing queued meanwhile is overlooked).
    pub fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

/// Sleep until `wake_at`, or until a [`Wakeup`] bound to this thread is woken. May return early
/// (spuriously): callers look at their queues and sleep again.
pub fn sleep_until(wake_at: Instant) {
    let left = wake_at.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::park_timeout(left);
    }
}

/// A bounded queue into a thread that sleeps in [`sleep_until`]: never blocks, wakes the
/// receiver after each item.
#[derive(Clone, Debug)]
pub struct Handoff<T> {
    tx: Sender<T>,
    wake: Wakeup,
}

impl<T> Handoff<T> {
    pub fn new(tx: Sender<T>, wake: Wakeup) -> Self {
        Self { tx, wake }
    }

    /// Queue `item` (a full or closed queue returns it) and wake the receiver.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(item)?;
        self.wake.wake();
        Ok(())
    }
}

/// The receiving side of a [`Handoff`], for a thread that waits on this one queue.
#[derive(Debug)]
pub struct Inbox<T> {
    rx: Receiver<T>,
    wake: Wakeup,
}

impl<T> Inbox<T> {
    /// The next item, waiting at most until `until`. The calling thread becomes the one the
    /// senders wake.
    pub fn recv_until(&self, until: Instant) -> Result<T, RecvTimeoutError> {
        self.wake.bind_current();
        loop {
            match self.rx.try_recv() {
                Ok(item) => return Ok(item),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) if Instant::now() >= until => return Err(RecvTimeoutError::Timeout),
                Err(TryRecvError::Empty) => sleep_until(until),
            }
        }
    }
}

/// A queue of `capacity` for one receiving thread, which waits in [`Inbox::recv_until`].
pub fn handoff<T>(capacity: usize) -> (Handoff<T>, Inbox<T>) {
    let (tx, rx) = bounded(capacity);
    let wake = Wakeup::default();
    (Handoff::new(tx, wake.clone()), Inbox { rx, wake })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_handoff_wakes_a_sleeping_receiver_long_before_its_timeout() {
        let wake = Wakeup::default();
        let (tx, rx) = bounded::<u32>(4);
        let (bound_tx, bound_rx) = bounded::<()>(1);
        let receiver = {
            let wake = wake.clone();
            std::thread::spawn(move || {
                wake.bind_current();
                bound_tx.send(()).unwrap();
                let started = Instant::now();
                loop {
                    if let Ok(v) = rx.try_recv() {
                        return (v, started.elapsed());
                    }
                    sleep_until(Instant::now() + Duration::from_secs(30));
                }
            })
        };
        bound_rx.recv().unwrap();
        Handoff::new(tx, wake).try_send(7).unwrap();
        let (value, waited) = receiver.join().unwrap();
        assert_eq!(value, 7);
        assert!(waited < Duration::from_secs(20), "the receiver slept to its timeout: the wake was lost");
    }

    #[test]
    fn an_inbox_times_out_then_reports_its_senders_gone() {
        let (tx, inbox) = handoff::<u32>(2);
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(inbox.recv_until(soon), Err(RecvTimeoutError::Timeout)));
        assert!(Instant::now() >= soon, "returned before its time");
        tx.try_send(3).unwrap();
        assert_eq!(inbox.recv_until(Instant::now()).unwrap(), 3);
        drop(tx);
        assert!(matches!(inbox.recv_until(Instant::now()), Err(RecvTimeoutError::Disconnected)));
    }

    #[test]
    fn a_full_queue_returns_the_item() {
        let (tx, _rx) = bounded::<u32>(1);
        let h = Handoff::new(tx, Wakeup::default());
        h.try_send(1).unwrap();
        assert!(matches!(h.try_send(2), Err(TrySendError::Full(2))));
    }
}
