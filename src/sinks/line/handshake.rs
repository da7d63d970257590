//! The Modbus handshake's state, pure and clock-free: the results buffer the PLC acknowledges
//! one result at a time, the station's status bits, and the image of the station's output
//! block (`STATUS_BLOCK_LEN` holding registers) that the adapter writes whenever it changes.
//! The trigger counter the PLC increments is decoded here too. See `docs/LINE.md` for the
//! register map and the PLC's side.

use super::event::{PartOutcome, StationStatus};
use crate::config::STATUS_BLOCK_LEN;
use std::collections::VecDeque;

/// Status register bits (register +0 of the output block).
pub mod bits {
    /// The station can decide parts (model loaded, pipeline running, cameras up).
    pub const READY: u16 = 1 << 0;
    /// A result is presented in registers +3..+7; acknowledge it by writing its id.
    pub const RESULTS_READY: u16 = 1 << 1;
    /// A result was dropped because `results_buffer` results were unacknowledged; cleared by
    /// the next acknowledgement.
    pub const OVERRUN: u16 = 1 << 2;
    /// The error code (register +2) is not 0.
    pub const ERROR: u16 = 1 << 3;
    /// The fail-safe asked to stop the line (stays set until the station restarts).
    pub const STOP_LINE: u16 = 1 << 4;
}

/// Offsets in the output block.
pub mod out {
    pub const STATUS: usize = 0;
    pub const HEARTBEAT: usize = 1;
    pub const ERROR_CODE: usize = 2;
    pub const RESULT_ID: usize = 3;
    pub const VERDICT: usize = 4;
    pub const CLASS_CODE: usize = 5;
    pub const CAMERA: usize = 6;
    pub const PART_NUMBER: usize = 7;
    pub const BUFFERED: usize = 8;
    /// The recipe in force, acknowledging the PLC's request (see [`RecipeRequests`]).
    pub const RECIPE: usize = 9;
}

/// Offsets in the PLC's input block.
pub mod input {
    pub const TRIGGER_COUNTER: usize = 0;
    pub const ACQUISITION_ID: usize = 1;
    pub const RESULTS_ACK: usize = 2;
    /// The recipe the PLC asks for (1 = the first `[[recipe]]`; 0 = no request).
    pub const RECIPE_REQUEST: usize = 3;
}

/// The output block's registers, as written in one request.
pub type Image = [u16; STATUS_BLOCK_LEN as usize];

/// One result as the PLC reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultSlot {
    /// `PartOutcome::short_id`: 1..=65535, never 0.
    pub id: u16,
    pub verdict: u16,
    pub class_code: u16,
    /// Camera index + 1.
    pub camera: u16,
    /// The part id when it is a number that fits (a triggered part's acquisition id), else the
    /// camera's frame sequence number's low 16 bits.
    pub part_number: u16,
}

impl ResultSlot {
    pub fn of(o: &PartOutcome) -> Self {
        let part_number =
            o.part_id.as_ref().and_then(|p| p.as_str().parse::<u16>().ok()).unwrap_or((o.seq & 0xFFFF) as u16);
        Self {
            id: o.short_id(),
            verdict: o.verdict.code(),
            class_code: o.class_code,
            camera: o.camera.saturating_add(1),
            part_number,
        }
    }
}

/// What became of a result handed to [`Handshake::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing was presented: it is presented now.
    Presented,
    /// Queued behind the presented one.
    Queued,
    /// `capacity` results were unacknowledged: dropped, the overrun bit is set.
    Dropped,
}

/// The station's side of the handshake.
#[derive(Clone, Debug)]
pub struct Handshake {
    capacity: usize,
    /// Unacknowledged results, oldest first; the front one is presented.
    buffer: VecDeque<ResultSlot>,
    overrun: bool,
    status: StationStatus,
    heartbeat: bool,
    stop_line: bool,
    recipe: u16,
}

impl Handshake {
    /// A handshake holding at most `capacity` (≥ 1) unacknowledged results, reporting "starting".
    pub fn new(capacity: usize, status: StationStatus) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            buffer: VecDeque::with_capacity(capacity),
            overrun: false,
            status,
            heartbeat: false,
            stop_line: false,
            recipe: 0,
        }
    }

    /// The recipe register's value (see [`out::RECIPE`]).
    pub fn set_recipe(&mut self, value: u16) {
        self.recipe = value;
    }

    /// A new result: presented at once if nothing is, else queued; dropped (and the overrun
    /// bit set) when `capacity` results are unacknowledged.
    pub fn push(&mut self, slot: ResultSlot) -> Pushed {
        if self.buffer.len() >= self.capacity {
            self.overrun = true;
            return Pushed::Dropped;
        }
        self.buffer.push_back(slot);
        if self.buffer.len() == 1 { Pushed::Presented } else { Pushed::Queued }
    }

    /// The PLC's results-ack register reads `value`. When it is the presented result's id, that
    /// result is done: the next one is presented (or results-ready clears), and the overrun bit
    /// clears. Any other value (0, an older id still in the register) changes nothing.
    pub fn ack(&mut self, value: u16) -> bool {
        match self.buffer.front() {
            Some(front) if value != 0 && front.id == value => {
                self.buffer.pop_front();
                self.overrun = false;
                true
            }
            _ => false,
        }
    }

    pub fn presented(&self) -> Option<&ResultSlot> {
        self.buffer.front()
    }

    /// Unacknowledged results, the presented one included.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn overrun(&self) -> bool {
        self.overrun
    }

    pub fn set_status(&mut self, status: StationStatus) {
        self.status = status;
    }

    /// The line's events ended: never leave the PLC a "ready" the line thread can no longer back
    /// (it died, or stopped without saying so).
    pub fn end_not_ready(&mut self) {
        if self.status.ready {
            self.status = StationStatus { ready: false, error: super::event::ErrorCode::Stopping };
        }
    }

    pub fn set_heartbeat(&mut self, value: bool) {
        self.heartbeat = value;
    }

    /// The fail-safe asked to stop the line; the bit stays set until the station restarts.
    pub fn request_stop_line(&mut self) {
        self.stop_line = true;
    }

    /// The output block as the PLC should see it now.
    pub fn image(&self) -> Image {
        let mut img = [0u16; STATUS_BLOCK_LEN as usize];
        let error = self.status.error.code();
        let mut status = 0;
        if self.status.ready {
            status |= bits::READY;
        }
        if !self.buffer.is_empty() {
            status |= bits::RESULTS_READY;
        }
        if self.overrun {
            status |= bits::OVERRUN;
        }
        if error != 0 {
            status |= bits::ERROR;
        }
        if self.stop_line {
            status |= bits::STOP_LINE;
        }
        img[out::STATUS] = status;
        img[out::HEARTBEAT] = u16::from(self.heartbeat);
        img[out::ERROR_CODE] = error;
        if let Some(r) = self.buffer.front() {
            img[out::RESULT_ID] = r.id;
            img[out::VERDICT] = r.verdict;
            img[out::CLASS_CODE] = r.class_code;
            img[out::CAMERA] = r.camera;
            img[out::PART_NUMBER] = r.part_number;
        }
        img[out::BUFFERED] = self.buffer.len() as u16;
        img[out::RECIPE] = self.recipe;
        img
    }
}

/// A "refused" recipe acknowledgement: the PLC asked for a number that names no recipe.
pub const RECIPE_REFUSED: u16 = u16::MAX;

/// The PLC's job change: the recipe-request register, read every poll, and the acknowledgement
/// the station writes back. A new request (the register changes to N ≥ 1) switches every camera
/// to recipe N from its next frame; the acknowledgement becomes N once every camera's frames are
/// judged by it, or [`RECIPE_REFUSED`] when there is no recipe N. Between requests it shows the
/// recipe every camera runs (0 while they run different ones, e.g. after an API switch of one).
#[derive(Clone, Copy, Debug, Default)]
pub struct RecipeRequests {
    last: u16,
    pending: Option<u16>,
    refused: Option<u16>,
}

/// What the station tells the PLC about recipes: how many there are, what each camera's frames
/// are stamped with now.
pub trait RecipeState {
    fn recipes(&self) -> usize;
    fn cameras(&self) -> usize;
    /// Ask every camera for recipe `index` (0-based) from its next frame.
    fn request_all(&self, index: u16);
    /// The recipe (0-based) camera `camera`'s frames are stamped with now.
    fn stamped(&self, camera: usize) -> u16;
}

impl RecipeState for crate::pipeline::RecipeSwitch {
    fn recipes(&self) -> usize {
        crate::pipeline::RecipeSwitch::recipes(self)
    }
    fn cameras(&self) -> usize {
        crate::pipeline::RecipeSwitch::cameras(self)
    }
    fn request_all(&self, index: u16) {
        let slot = self.current_slot(usize::from(index));
        for c in 0..crate::pipeline::RecipeSwitch::cameras(self) {
            self.request(c, slot);
        }
    }
    fn stamped(&self, camera: usize) -> u16 {
        crate::pipeline::RecipeSwitch::stamped(self, camera).and_then(|(slot, _)| self.recipe_of(slot)).unwrap_or(0)
    }
}

impl RecipeRequests {
    /// Whether reading `value` would be a new request (or its withdrawal).
    pub fn is_new(&self, value: u16) -> bool {
        value != self.last
    }

    /// The request register reads `value`; returns the acknowledgement to show, and the recipe
    /// switched to when this read made a new request (for the log).
    pub fn observe(&mut self, value: u16, state: &dyn RecipeState) -> (u16, Option<u16>) {
        let mut switched = None;
        if value != self.last {
            self.last = value;
            self.refused = None;
            self.pending = None;
            if value != 0 {
                if usize::from(value) <= state.recipes() {
                    state.request_all(value - 1);
                    self.pending = Some(value);
                    switched = Some(value);
                } else {
                    self.refused = Some(value);
                }
            }
        }
        if self.refused.is_some() {
            return (RECIPE_REFUSED, switched);
        }
        let running = (0..state.cameras()).map(|c| state.stamped(c)).collect::<Vec<_>>();
        let common = running.first().copied().filter(|r| running.iter().all(|x| x == r));
        let ack = match (self.pending, common) {
            // Every camera runs the requested recipe: acknowledged.
            (Some(n), Some(r)) if r + 1 == n => {
                self.pending = None;
                n
            }
            // Requested, not in effect on every camera yet: still the old value.
            (_, Some(r)) => r + 1,
            (_, None) => 0,
        };
        (ack, switched)
    }
}

/// Turns the PLC's trigger counter, read every poll, into trigger edges.
#[derive(Clone, Copy, Debug, Default)]
pub struct TriggerCounter {
    last: Option<u16>,
}

impl TriggerCounter {
    /// The counter reads `value`: how many triggers happened since the last read (wrapping),
    /// `None` for the first read after a (re)connect, which only sets the baseline.
    pub fn observe(&mut self, value: u16) -> Option<u16> {
        let jump = self.last.map(|last| value.wrapping_sub(last));
        self.last = Some(value);
        jump.filter(|&j| j > 0)
    }

    /// The link was lost: the PLC may have restarted, so the next read is a new baseline.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two cameras whose frames take a requested recipe only when `frame()` is called.
    struct FakeSwitch {
        wanted: std::cell::Cell<u16>,
        stamped: std::cell::Cell<[u16; 2]>,
    }

    impl FakeSwitch {
        fn frame(&self) {
            self.stamped.set([self.wanted.get(); 2]);
        }
    }

    impl RecipeState for FakeSwitch {
        fn recipes(&self) -> usize {
            2
        }
        fn cameras(&self) -> usize {
            2
        }
        fn request_all(&self, index: u16) {
            self.wanted.set(index);
        }
        fn stamped(&self, camera: usize) -> u16 {
            self.stamped.get()[camera]
        }
    }

    #[test]
    fn a_recipe_request_is_acknowledged_once_every_camera_runs_it() {
        let sw = FakeSwitch { wanted: 0.into(), stamped: [0, 0].into() };
        let mut r = RecipeRequests::default();
        assert_eq!(r.observe(0, &sw), (1, None), "no request: the recipe in force, numbered from 1");
        assert_eq!(r.observe(2, &sw), (1, Some(2)), "requested, not in effect before the next frame");
        assert_eq!(r.observe(2, &sw), (1, None), "a level, not a new request");
        sw.frame();
        assert_eq!(r.observe(2, &sw), (2, None), "in effect on both cameras");
        assert_eq!(r.observe(7, &sw), (RECIPE_REFUSED, None), "no recipe 7");
        assert_eq!(sw.wanted.get(), 1, "a refused request switches nothing");
        assert_eq!(r.observe(1, &sw), (2, Some(1)));
        sw.stamped.set([0, 1]);
        assert_eq!(r.observe(1, &sw), (0, None), "cameras on different recipes");
        sw.frame();
        assert_eq!(r.observe(1, &sw), (1, None));
    }
    use crate::sinks::line::event::{ErrorCode, LineAction, LineVerdict};
    use proptest::prelude::*;
    use std::time::Instant;

    const STARTING: StationStatus = StationStatus { ready: false, error: ErrorCode::Starting };
    const READY: StationStatus = StationStatus { ready: true, error: ErrorCode::None };

    fn slot(id: u16) -> ResultSlot {
        ResultSlot { id, verdict: 1 + id % 2, class_code: id % 3, camera: 1, part_number: id }
    }

    fn outcome(result_id: u64, seq: u64, part: Option<&str>) -> PartOutcome {
        let now = Instant::now();
        PartOutcome {
            result_id,
            camera: 2,
            seq,
            part_id: part.map(crate::frame::part_id),
            verdict: LineVerdict::Ng,
            failsafe: None,
            class_code: 4,
            action: LineAction::Reject,
            deadline: now,
            decided_at: now,
        }
    }

    #[test]
    fn a_result_slot_carries_the_short_id_and_a_numeric_part_id() {
        let s = ResultSlot::of(&outcome(65_536, 70_000, Some("417")));
        assert_eq!(s, ResultSlot { id: 1, verdict: 2, class_code: 4, camera: 3, part_number: 417 });
        // Not numeric, or too big for a register: the frame sequence's low 16 bits.
        assert_eq!(ResultSlot::of(&outcome(7, 70_000, Some("A-17"))).part_number, (70_000 & 0xFFFF) as u16);
        assert_eq!(ResultSlot::of(&outcome(7, 5, Some("70000"))).part_number, 5);
        assert_eq!(ResultSlot::of(&outcome(7, 5, None)).part_number, 5);
    }

    #[test]
    fn the_image_follows_status_heartbeat_and_the_presented_result() {
        let mut h = Handshake::new(2, STARTING);
        assert_eq!(h.image(), [bits::ERROR, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        h.set_status(READY);
        h.set_heartbeat(true);
        assert_eq!(h.image(), [bits::READY, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(h.push(slot(5)), Pushed::Presented);
        assert_eq!(h.push(slot(6)), Pushed::Queued);
        assert_eq!(h.image(), [bits::READY | bits::RESULTS_READY, 1, 0, 5, 2, 2, 1, 5, 2, 0]);
        assert_eq!(h.push(slot(7)), Pushed::Dropped);
        assert_eq!(h.image()[out::STATUS], bits::READY | bits::RESULTS_READY | bits::OVERRUN);
        // An ack of anything but the presented id changes nothing.
        assert!(!h.ack(6));
        assert!(!h.ack(0));
        assert!(h.ack(5));
        assert_eq!(h.image(), [bits::READY | bits::RESULTS_READY, 1, 0, 6, 1, 0, 1, 6, 1, 0]);
        assert!(!h.ack(5), "the ack register still reads the old id: no second ack");
        assert!(h.ack(6));
        assert_eq!(h.image(), [bits::READY, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.request_stop_line();
        assert_eq!(h.image()[out::STATUS], bits::READY | bits::STOP_LINE);
    }

    #[test]
    fn the_trigger_counter_sets_a_baseline_then_counts_wrapping_jumps() {
        let mut t = TriggerCounter::default();
        assert_eq!(t.observe(41), None);
        assert_eq!(t.observe(41), None);
        assert_eq!(t.observe(42), Some(1));
        assert_eq!(t.observe(45), Some(3));
        assert_eq!(t.observe(65_535), Some(65_490));
        assert_eq!(t.observe(1), Some(2), "wraps through 0");
        t.reset();
        assert_eq!(t.observe(0), None, "after a reconnect the PLC may have restarted at 0");
        assert_eq!(t.observe(1), Some(1));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push,
        AckPresented,
        AckOther(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![3 => Just(Op::Push), 2 => Just(Op::AckPresented), 1 => any::<u16>().prop_map(Op::AckOther)]
    }

    proptest! {
        /// Against a plain model: never presents an acknowledged (or dropped) result, presents in
        /// order, the buffered count matches, and overrun is set only by a push that found
        /// `capacity` results unacknowledged (and cleared only by an ack).
        #[test]
        fn the_results_buffer_matches_a_model(capacity in 1usize..6, ops in proptest::collection::vec(op(), 0..200)) {
            let mut h = Handshake::new(capacity, READY);
            let mut model: VecDeque<u16> = VecDeque::new();
            let mut acked = std::collections::HashSet::new();
            let mut dropped = std::collections::HashSet::new();
            let mut overrun = false;
            let mut next_id = 1u16;
            for op in ops {
                match op {
                    Op::Push => {
                        let id = next_id;
                        next_id += 1;
                        let full = model.len() == capacity;
                        let got = h.push(slot(id));
                        if full {
                            prop_assert_eq!(got, Pushed::Dropped);
                            dropped.insert(id);
                            overrun = true;
                        } else {
                            prop_assert_eq!(got, if model.is_empty() { Pushed::Presented } else { Pushed::Queued });
                            model.push_back(id);
                        }
                    }
                    Op::AckPresented => {
                        let presented = h.presented().map(|s| s.id);
                        prop_assert_eq!(presented, model.front().copied());
                        if let Some(id) = presented {
                            prop_assert!(h.ack(id));
                            model.pop_front();
                            acked.insert(id);
                            overrun = false;
                        }
                    }
                    Op::AckOther(v) => {
                        let is_presented = model.front() == Some(&v) && v != 0;
                        prop_assert_eq!(h.ack(v), is_presented);
                        if is_presented {
                            model.pop_front();
                            acked.insert(v);
                            overrun = false;
                        }
                    }
                }
                let img = h.image();
                prop_assert_eq!(h.buffered(), model.len());
                prop_assert_eq!(usize::from(img[out::BUFFERED]), model.len());
                prop_assert_eq!(h.overrun(), overrun);
                prop_assert_eq!(img[out::STATUS] & bits::OVERRUN != 0, overrun);
                prop_assert_eq!(img[out::STATUS] & bits::RESULTS_READY != 0, !model.is_empty());
                let shown = img[out::RESULT_ID];
                prop_assert_eq!(shown, model.front().copied().unwrap_or(0));
                prop_assert!(!acked.contains(&shown) && !dropped.contains(&shown));
                prop_assert!(h.buffered() <= capacity);
            }
        }
    }
}
