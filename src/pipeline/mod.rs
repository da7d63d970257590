//! The pipeline's shared vocabulary: what travels on the queues between its threads, the frame
//! accounting every thread updates, verdicts and defects, and the lock-free handoff the line's
//! real-time threads use.
//!
//! A leaf: it depends on nothing in the crate but `frame` and `pool`, so sources, stages,
//! outputs, telemetry and the topology that wires them can all use it without depending on each
//! other.

pub mod accounting;
pub mod defect;
pub mod handoff;
pub mod line_tap;
pub mod live_thresholds;
pub mod messages;
pub mod output_port;
pub mod recipe_switch;
pub mod shadow_tap;
pub mod slots;
pub mod verdict;

pub use accounting::Accounting;
pub use defect::{Defect, DefectMm};
pub use line_tap::{CapturedPart, LineTap, Trigger};
pub use live_thresholds::LiveThresholds;
pub use messages::Inspection;
pub use output_port::{OutputPort, RecordPort};
pub use recipe_switch::RecipeSwitch;
pub use slots::{MAX_SLOTS, Slots};
pub use verdict::{FailsafeCause, Verdict};
