//! Where a camera meets the line output: it registers each captured part (so the line can act on
//! it at its deadline, verdict or not) and, when PLC-triggered, waits for its triggers. Both sides
//! are lock-free handoffs (see [`super::handoff`]).

use super::handoff::{Handoff, Inbox};
use crate::frame::PartId;
use std::time::Instant;

/// What a camera thread gets from the line: where to register parts, and (for a triggered
/// camera) where its triggers come from.
pub struct LineTap {
    pub parts: Handoff<CapturedPart>,
    pub triggers: Option<Inbox<Trigger>>,
}

/// A part the line must act on, registered at capture by its camera thread.
#[derive(Clone, Copy, Debug)]
pub struct CapturedPart {
    pub camera: u16,
    pub seq: u64,
    pub part_id: Option<PartId>,
    /// Trigger time for triggered cameras, else capture time: the deadline counts from it.
    pub basis: Instant,
}

/// Adapter → line thread: the PLC triggered a capture (Modbus trigger counter changed).
#[derive(Clone, Copy, Debug)]
pub struct Trigger {
    /// When the station saw the trigger (the poll that read the new counter value).
    pub at: Instant,
    /// The PLC's acquisition id for this part.
    pub acquisition_id: u16,
    /// Triggers the PLC counted that the station did not see as separate edges (counter jumped
    /// by more than one between polls): missed acquisitions.
    pub missed: u16,
}
