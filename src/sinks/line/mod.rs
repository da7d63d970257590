//! The line output: turns verdicts into actions on the production line at the right moment.
//!
//! - [`schedule`]: every captured part gets a deadline; its verdict decides it if it arrives by
//!   `deadline - margin`, else the fail-safe does; the action fires at the deadline.
//! - [`runner`]: the line thread — registers parts from the cameras, takes verdicts from the
//!   assembler, wakes at each decision and deadline, watches the station's health, and hands
//!   events to the adapters. It is the only place that decides what the line does.
//! - adapters ([`modbus`], [`mqtt`], [`webhook`], [`command`]) translate events to their
//!   protocol on a tokio runtime of their own; they never decide, and they never fire a reject
//!   after its fire window (an undeliverable action is counted, not delivered late).
//!
//! The line thread and the adapters meet through bounded queues only: a stalled PLC link can
//! never stall the timing, and the timing never waits for the pipeline. The queues into the
//! line's real-time threads are [`handoff::Handoff`]s, which take no lock (see [`handoff`]).

pub mod audit;
pub mod clock;
pub mod command;
pub mod event;
pub mod handshake;
pub mod metrics;
pub mod modbus;
pub mod mqtt;
pub mod priority;
pub mod runner;
pub mod schedule;
pub mod webhook;

pub use event::{LineEvent, PartOutcome};
pub use runner::LineOutput;

use crate::pipeline::{Trigger, handoff};
use clock::MonoClock;
use metrics::{AdapterMetrics, LineMetrics};
use std::sync::Arc;
use std::time::Instant;

/// Record that `who` switched cameras (camera index, recipe before) to `recipe` in the audit log
/// at `db` (none without a store), off the adapter's runtime; cameras already on it are left out.
pub(crate) fn audit_recipe_switch(
    db: Option<std::path::PathBuf>,
    switch: &crate::pipeline::RecipeSwitch,
    who: &str,
    before: &[(usize, u16)],
    recipe: u16,
) {
    let Some(db) = db else { return };
    let name = |r: u16| switch.recipe_names().get(usize::from(r)).cloned();
    let changes: Vec<crate::sinks::store::audit::Change> = before
        .iter()
        .filter(|(_, old)| *old != recipe)
        .map(|&(c, old)| crate::sinks::store::audit::Change {
            who: who.into(),
            action: "recipe.activate".into(),
            target: switch.camera_ids().get(c).cloned().unwrap_or_default(),
            old: name(old),
            new: name(recipe),
        })
        .collect();
    if !changes.is_empty() {
        tokio::task::spawn_blocking(move || crate::sinks::store::audit::record_detached(&db, &changes));
    }
}

/// Events waiting for one adapter; past this the line thread counts them undelivered.
pub const ADAPTER_QUEUE_DEPTH: usize = 1024;

/// What every adapter gets besides its config and its event queue.
#[derive(Clone)]
pub struct AdapterContext {
    /// `modbus`, `mqtt`, `webhook` or `command`: the `adapter` label.
    pub name: &'static str,
    pub station: String,
    /// This adapter's write errors, undelivered actions, link state and write latency.
    pub metrics: AdapterMetrics,
    /// The line's own metrics (triggers, results overrun).
    pub line: Arc<LineMetrics>,
    /// Where PLC triggers go (the Modbus adapter's trigger counter).
    pub triggers: handoff::Handoff<Trigger>,
    /// For timestamps peers can compare (`CLOCK_MONOTONIC` ns).
    pub clock: MonoClock,
    /// The reject fire window (see `schedule::Timing::fire_window`): an adapter that gets to a
    /// reject later than `deadline + fire_window` counts it undelivered instead of writing it.
    pub fire_window: std::time::Duration,
    /// Where a PLC's job change switches the cameras' recipe (the Modbus recipe register).
    pub recipes: Option<Arc<crate::pipeline::RecipeSwitch>>,
    /// The result store, whose audit log records those switches (none without a `[store]`).
    pub audit: Option<std::path::PathBuf>,
}

impl AdapterContext {
    /// A context for running one adapter on its own (tests, tools): its metrics count but are
    /// not exported, and triggers go nowhere.
    pub fn detached(name: &'static str, fire_window: std::time::Duration) -> Self {
        let line = Arc::new(LineMetrics::new(None));
        Self {
            name,
            station: "detached".into(),
            metrics: line.adapter(name),
            line,
            triggers: handoff::Handoff::new(crossbeam_channel::bounded(64).0, handoff::Wakeup::default()),
            clock: MonoClock::new(),
            fire_window,
            recipes: None,
            audit: None,
        }
    }

    /// True while a reject for `outcome` may still be written.
    pub fn may_fire(&self, outcome: &PartOutcome, now: Instant) -> bool {
        now <= outcome.deadline + self.fire_window
    }
}
