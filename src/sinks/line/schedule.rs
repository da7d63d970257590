//! The reject schedule: every captured part gets a deadline (when it reaches the actuator), is
//! decided at most once — by its verdict if that arrives before `deadline - margin`, else by the
//! fail-safe — and its action fires at the deadline, not when the verdict happens to be ready.
//!
//! Pure and clock-free (the caller passes `now`), so every timing rule is unit- and
//! property-tested. Parts are keyed by `(camera, seq)`: a verdict can only ever act on the part
//! it was computed for, and a late one is recorded, never fired, never moved to a neighbour.

use super::event::{FailsafeReason, LineAction, LineVerdict, PartOutcome};
use crate::config::FailsafeAction;
use crate::pipeline::CapturedPart;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// The line's timing, from `[line]`.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Capture (or trigger) → actuator.
    pub delay: Duration,
    /// A verdict must be in by `deadline - margin`.
    pub margin: Duration,
    pub pulse: Duration,
    /// How late after its deadline a reject may still fire (`[line] fire_window_ms`, default
    /// half a pulse). Later, the actuator would catch too little of the part and risk the next
    /// one, so it is counted as a deadline miss instead.
    pub fire_window: Duration,
    pub failsafe: FailsafeAction,
}

impl Timing {
    pub fn fire_window(&self) -> Duration {
        self.fire_window
    }
}

/// The pipeline's verdict for one part, as the line needs it.
#[derive(Clone, Copy, Debug)]
pub struct VerdictIn {
    pub camera: u16,
    pub seq: u64,
    pub verdict: LineVerdict,
    /// Set when the pipeline itself decided FAILSAFE.
    pub failsafe: Option<FailsafeReason>,
    pub class_code: u16,
}

/// What became of a verdict handed to [`Schedule::verdict`].
#[derive(Clone, Copy, Debug)]
pub enum VerdictOutcome {
    /// In time: the part is decided (send the result now; the action fires at the deadline).
    Accepted(PartOutcome),
    /// After `deadline - margin` (or after the fail-safe decided): recorded, never acted on.
    Late { camera: u16, seq: u64, verdict: LineVerdict, late_by: Duration },
    /// For a part the schedule never saw captured: never acted on.
    Untracked { camera: u16, seq: u64 },
}

/// What is due at `now` (see [`Schedule::pop_due`]).
#[derive(Clone, Copy, Debug)]
pub enum Due {
    /// No verdict by `deadline - margin`: the fail-safe decided this part (send the result; a
    /// `StopLine` action acts now).
    FailsafeDecided(PartOutcome),
    /// The deadline of a part to reject: fire now.
    Fire(PartOutcome),
    /// The deadline of a part that passes: nothing to fire (kept for the audit trail).
    Passed(PartOutcome),
    /// A reject whose fire window passed before the caller got to it: not fired.
    Missed(PartOutcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Decide = 0,
    Fire = 1,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    part: CapturedPart,
    deadline: Instant,
    outcome: Option<PartOutcome>,
}

/// Parts between capture and their deadline.
pub struct Schedule {
    timing: Timing,
    parts: HashMap<(u16, u64), Pending>,
    queue: BinaryHeap<Reverse<(Instant, Phase, u16, u64)>>,
    /// Per camera: every seq below this has finished (fired, passed or missed).
    finished_below: Vec<u64>,
    next_result_id: u64,
}

impl Schedule {
    /// Room for `capacity` parts in flight is reserved up front, so steady state does not allocate.
    pub fn new(timing: Timing, cameras: usize, capacity: usize) -> Self {
        Self {
            timing,
            parts: HashMap::with_capacity(capacity),
            queue: BinaryHeap::with_capacity(2 * capacity),
            finished_below: vec![0; cameras],
            next_result_id: 1,
        }
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Parts registered and not yet past their deadline.
    pub fn pending(&self) -> usize {
        self.parts.len()
    }

    /// Track a captured part; returns its deadline.
    pub fn register(&mut self, part: CapturedPart) -> Instant {
        let deadline = part.basis + self.timing.delay;
        let decide_at = deadline.checked_sub(self.timing.margin).unwrap_or(deadline);
        self.parts.insert((part.camera, part.seq), Pending { part, deadline, outcome: None });
        self.queue.push(Reverse((decide_at, Phase::Decide, part.camera, part.seq)));
        self.queue.push(Reverse((deadline, Phase::Fire, part.camera, part.seq)));
        deadline
    }

    /// A verdict arrived at `now`.
    pub fn verdict(&mut self, v: VerdictIn, now: Instant) -> VerdictOutcome {
        let margin = self.timing.margin;
        let Some(p) = self.parts.get_mut(&(v.camera, v.seq)) else {
            let finished = self.finished_below.get(usize::from(v.camera)).is_some_and(|&below| v.seq < below);
            return if finished {
                VerdictOutcome::Late { camera: v.camera, seq: v.seq, verdict: v.verdict, late_by: Duration::ZERO }
            } else {
                VerdictOutcome::Untracked { camera: v.camera, seq: v.seq }
            };
        };
        let decide_by = p.deadline.checked_sub(margin).unwrap_or(p.deadline);
        if p.outcome.is_some() || now > decide_by {
            let late_by = now.saturating_duration_since(decide_by);
            return VerdictOutcome::Late { camera: v.camera, seq: v.seq, verdict: v.verdict, late_by };
        }
        let action = match (v.verdict, v.failsafe) {
            (LineVerdict::Ok, _) => LineAction::Pass,
            (LineVerdict::Ng, _) => LineAction::Reject,
            (LineVerdict::Failsafe, _) => failsafe_action(self.timing.failsafe),
        };
        let outcome = PartOutcome {
            result_id: self.next_result_id,
            camera: v.camera,
            seq: v.seq,
            part_id: p.part.part_id,
            verdict: v.verdict,
            failsafe: v.failsafe.or((v.verdict == LineVerdict::Failsafe).then_some(FailsafeReason::NoVerdict)),
            class_code: v.class_code,
            action,
            deadline: p.deadline,
            decided_at: now,
        };
        self.next_result_id += 1;
        p.outcome = Some(outcome);
        VerdictOutcome::Accepted(outcome)
    }

    /// When the next decision or deadline falls.
    pub fn next_wake(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, ..))| *at)
    }

    /// The next thing due at `now`, if any; call until `None`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        loop {
            let &Reverse((at, phase, camera, seq)) = self.queue.peek()?;
            if at > now {
                return None;
            }
            self.queue.pop();
            match phase {
                Phase::Decide => {
                    let Some(p) = self.parts.get_mut(&(camera, seq)) else { continue };
                    if p.outcome.is_some() {
                        continue; // decided by its verdict in time
                    }
                    let outcome = PartOutcome {
                        result_id: self.next_result_id,
                        camera,
                        seq,
                        part_id: p.part.part_id,
                        verdict: LineVerdict::Failsafe,
                        failsafe: Some(FailsafeReason::NoVerdict),
                        class_code: 0,
                        action: failsafe_action(self.timing.failsafe),
                        deadline: p.deadline,
                        decided_at: now,
                    };
                    self.next_result_id += 1;
                    p.outcome = Some(outcome);
                    return Some(Due::FailsafeDecided(outcome));
                }
                Phase::Fire => {
                    let Some(p) = self.parts.remove(&(camera, seq)) else { continue };
                    if let Some(below) = self.finished_below.get_mut(usize::from(camera)) {
                        *below = (*below).max(seq + 1);
                    }
                    // The Decide entry always pops first (it is due no later), so this is set.
                    let outcome = p.outcome.expect("decided before its deadline");
                    return Some(match outcome.action {
                        LineAction::Pass => Due::Passed(outcome),
                        LineAction::Reject | LineAction::StopLine => {
                            if now <= p.deadline + self.timing.fire_window() {
                                Due::Fire(outcome)
                            } else {
                                Due::Missed(outcome)
                            }
                        }
                    });
                }
            }
        }
    }
}

fn failsafe_action(action: FailsafeAction) -> LineAction {
    match action {
        FailsafeAction::Reject => LineAction::Reject,
        FailsafeAction::Pass => LineAction::Pass,
        FailsafeAction::StopLine => LineAction::StopLine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing(failsafe: FailsafeAction) -> Timing {
        Timing { delay: 100 * MS, margin: 10 * MS, pulse: 20 * MS, fire_window: 10 * MS, failsafe }
    }

    fn part(camera: u16, seq: u64, basis: Instant) -> CapturedPart {
        CapturedPart { camera, seq, part_id: None, basis }
    }

    fn verdict(camera: u16, seq: u64, verdict: LineVerdict) -> VerdictIn {
        VerdictIn { camera, seq, verdict, failsafe: None, class_code: u16::from(verdict == LineVerdict::Ng) }
    }

    fn drain(s: &mut Schedule, now: Instant) -> Vec<Due> {
        std::iter::from_fn(|| s.pop_due(now)).collect()
    }

    #[test]
    fn an_ng_verdict_in_time_fires_at_the_deadline_not_before() {
        let t0 = Instant::now();
        let mut s = Schedule::new(timing(FailsafeAction::Reject), 1, 8);
        assert_eq!(s.register(part(0, 0, t0)), t0 + 100 * MS);
        let VerdictOutcome::Accepted(o) = s.verdict(verdict(0, 0, LineVerdict::Ng), t0 + 30 * MS) else {
            panic!("in time")
        };
        assert_eq!((o.action, o.result_id, o.class_code), (LineAction::Reject, 1, 1));
        assert!(drain(&mut s, t0 + 99 * MS).is_empty(), "nothing fires before the deadline");
        assert!(matches!(drain(&mut s, t0 + 100 * MS)[..], [Due::Fire(f)] if f.seq == 0));
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn an_ok_verdict_passes_and_fires_nothing() {
        let t0 = Instant::now();
        let mut s = Schedule::new(timing(FailsafeAction::Reject), 1, 8);
        s.register(part(0, 0, t0));
        s.verdict(verdict(0, 0, LineVerdict::Ok), t0 + MS);
        assert!(matches!(drain(&mut s, t0 + 200 * MS)[..], [Due::Passed(o)] if o.action == LineAction::Pass));
    }

    #[test]
    fn without_a_verdict_the_failsafe_decides_at_deadline_minus_margin_and_fires_at_the_deadline() {
        for (failsafe, last) in
            [(FailsafeAction::Reject, "fire"), (FailsafeAction::Pass, "passed"), (FailsafeAction::StopLine, "fire")]
        {
            let t0 = Instant::now();
            let mut s = Schedule::new(timing(failsafe), 1, 8);
            s.register(part(0, 7, t0));
            assert!(drain(&mut s, t0 + 89 * MS).is_empty());
            let decided = drain(&mut s, t0 + 90 * MS);
            let [Due::FailsafeDecided(o)] = decided[..] else { panic!("{decided:?}") };
            assert_eq!((o.verdict, o.failsafe), (LineVerdict::Failsafe, Some(FailsafeReason::NoVerdict)));
            let end = drain(&mut s, t0 + 100 * MS);
            match (last, &end[..]) {
                ("fire", [Due::Fire(f)]) => assert_eq!(f.seq, 7),
                ("passed", [Due::Passed(_)]) => {}
                _ => panic!("{failsafe:?}: {end:?}"),
            }
        }
    }

    #[test]
    fn a_late_verdict_is_recorded_and_changes_nothing() {
        let t0 = Instant::now();
        let mut s = Schedule::new(timing(FailsafeAction::Reject), 1, 8);
        s.register(part(0, 0, t0));
        // After deadline - margin but before the thread got to the decision: late all the same.
        assert!(matches!(s.verdict(verdict(0, 0, LineVerdict::Ok), t0 + 95 * MS), VerdictOutcome::Late { .. }));
        let due = drain(&mut s, t0 + 100 * MS);
        assert!(matches!(due[..], [Due::FailsafeDecided(_), Due::Fire(_)]), "{due:?}");
        // After the part is gone: still late, not untracked.
        assert!(matches!(s.verdict(verdict(0, 0, LineVerdict::Ng), t0 + 300 * MS), VerdictOutcome::Late { .. }));
        assert!(matches!(s.verdict(verdict(0, 5, LineVerdict::Ng), t0), VerdictOutcome::Untracked { seq: 5, .. }));
    }

    #[test]
    fn a_reject_reached_after_its_fire_window_is_missed_not_fired() {
        let t0 = Instant::now();
        let mut s = Schedule::new(timing(FailsafeAction::Reject), 1, 8);
        s.register(part(0, 0, t0));
        s.verdict(verdict(0, 0, LineVerdict::Ng), t0);
        assert!(matches!(drain(&mut s, t0 + 111 * MS)[..], [Due::Missed(_)]));
    }

    /// A part in the property test: camera, capture offset (ms), and when its verdict arrives
    /// (ms after capture) with whether it is NG, or never.
    type PartSpec = (u16, u64, Option<(u64, bool)>);

    fn parts() -> impl Strategy<Value = Vec<PartSpec>> {
        proptest::collection::vec((0u16..3, 0u64..40, proptest::option::of((0u64..140, any::<bool>()))), 1..60)
    }

    proptest! {
        /// Every part ends exactly once; a reject fires only for its own part, at or after its
        /// deadline and within the window; the verdict decides iff it came by deadline - margin.
        #[test]
        fn every_part_is_acted_on_once_by_its_own_verdict_or_the_failsafe(spec in parts()) {
            let t0 = Instant::now();
            let timing = timing(FailsafeAction::Reject);
            let mut s = Schedule::new(timing, 3, 64);
            let mut seqs = [0u64; 3];
            let mut clock = [0u64; 3];
            let mut events = Vec::new(); // (time ms, kind, camera, seq, ng)
            let mut expect = std::collections::HashMap::new();
            for (camera, gap, arrival) in &spec {
                let c = usize::from(*camera);
                clock[c] += gap;
                let seq = seqs[c];
                seqs[c] += 1;
                events.push((clock[c], 0u8, *camera, seq, false));
                let in_time = arrival.is_some_and(|(after, _)| after <= 90);
                if let Some((after, ng)) = arrival {
                    events.push((clock[c] + after, 1, *camera, seq, *ng));
                }
                // Expected: reject unless an OK verdict came in time.
                let reject = !(in_time && arrival.is_some_and(|(_, ng)| !ng));
                expect.insert((*camera, seq), reject);
            }
            events.sort();
            let mut ended = std::collections::HashMap::new();
            let mut ids = std::collections::HashSet::new();
            type Ended = std::collections::HashMap<(u16, u64), bool>;
            let step = |s: &mut Schedule, now_ms: u64, ended: &mut Ended, ids: &mut std::collections::HashSet<u64>| {
                let now = t0 + Duration::from_millis(now_ms);
                while let Some(due) = s.pop_due(now) {
                    match due {
                        Due::FailsafeDecided(o) => prop_assert!(ids.insert(o.result_id)),
                        Due::Fire(o) => {
                            prop_assert!(now >= o.deadline && now <= o.deadline + timing.fire_window);
                            prop_assert!(ended.insert((o.camera, o.seq), true).is_none(), "ended twice");
                        }
                        Due::Passed(o) => prop_assert!(ended.insert((o.camera, o.seq), false).is_none()),
                        Due::Missed(_) => prop_assert!(false, "the loop steps every ms: nothing is missed"),
                    }
                }
                Ok::<(), TestCaseError>(())
            };
            let mut e = 0;
            for now_ms in 0..=(clock.iter().max().unwrap() + 200) {
                while e < events.len() && events[e].0 <= now_ms {
                    let (_, kind, camera, seq, ng) = events[e];
                    let now = t0 + Duration::from_millis(now_ms);
                    if kind == 0 {
                        s.register(part(camera, seq, now));
                    } else {
                        let v = if ng { LineVerdict::Ng } else { LineVerdict::Ok };
                        if let VerdictOutcome::Accepted(o) = s.verdict(verdict(camera, seq, v), now) {
                            prop_assert!(ids.insert(o.result_id));
                            prop_assert_eq!((o.camera, o.seq), (camera, seq));
                        }
                    }
                    e += 1;
                }
                step(&mut s, now_ms, &mut ended, &mut ids)?;
            }
            prop_assert_eq!(s.pending(), 0);
            prop_assert_eq!(ended, expect);
        }
    }
}
