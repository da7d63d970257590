//! Where the assembler hands each decided part: one [`OutputPort`] per output, offered in order,
//! never waited on. A slow output loses records (counted in its drop counter); the line does not
//! slow down.
//!
//! Each output (`sinks`) makes its own port; the assembler only knows this interface. Order
//! matters and is set where the outputs are wired (`sinks::Outputs`): the archive first (it marks
//! the record `archived` before anyone else sees it), then the line (the only output with a
//! deadline), then the rest.

use super::accounting::Accounting;
use super::handoff::Wakeup;
use super::messages::{HeatSource, Inspection};
use crate::frame::Frame;
use crossbeam_channel::{Sender, TrySendError};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// One output's end of its queue, held by the assembler thread.
pub trait OutputPort: Send {
    /// Offer one decided part without waiting. An output may take the frame's pixels (the
    /// archive does: they go back to the camera's pool once written) and mark the record before
    /// the outputs after it see it; a full queue is counted in `accounting`. `heat`: the frame's
    /// anomaly map, for anomaly models whose outputs were finite.
    fn offer(
        &mut self,
        inspection: &mut Inspection,
        frame: &mut Option<Frame>,
        heat: Option<HeatSource<'_>>,
        accounting: &Accounting,
    );

    /// Frames this output may hold on loan from a camera's pool at once (queued and being
    /// written): each camera's pool is sized for them.
    fn frames_held(&self) -> usize {
        0
    }
}

/// The counter a full queue's lost records go to.
pub type DropCounter = fn(&Accounting) -> &AtomicU64;

/// The usual port: a bounded queue of records for one output thread.
pub struct RecordPort {
    tx: Sender<Inspection>,
    dropped: DropCounter,
    /// Woken after each record queued (the line thread sleeps in `park_timeout`, never on its
    /// queue: see [`super::handoff`]).
    wake: Option<Wakeup>,
}

impl RecordPort {
    pub fn new(tx: Sender<Inspection>, dropped: DropCounter) -> Self {
        Self { tx, dropped, wake: None }
    }

    /// A results stream (file, stdout, tests, eval): losses count in `results_dropped`.
    pub fn results(tx: Sender<Inspection>) -> Box<dyn OutputPort> {
        Box::new(Self::new(tx, |a| &a.results_dropped))
    }

    /// Wake `wake`'s thread after each record queued.
    pub fn waking(mut self, wake: Wakeup) -> Self {
        self.wake = Some(wake);
        self
    }
}

impl OutputPort for RecordPort {
    fn offer(
        &mut self,
        inspection: &mut Inspection,
        _frame: &mut Option<Frame>,
        _heat: Option<HeatSource<'_>>,
        accounting: &Accounting,
    ) {
        match self.tx.try_send(inspection.clone()) {
            Ok(()) => {
                if let Some(wake) = &self.wake {
                    wake.wake();
                }
            }
            Err(TrySendError::Full(_)) => {
                (self.dropped)(accounting).fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}
