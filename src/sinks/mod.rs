//! Outputs: where inspection records go. Each runs on its own thread behind a bounded queue, so
//! a slow output loses records (counted) and never slows the line. The line output ([`line`]) is
//! the latency-critical one: it acts on the production line at each part's deadline. [`outputs`]
//! is the one interface they share and the one place they are wired.

pub mod archive;
pub mod line;
pub mod outputs;
pub mod results;
pub mod store;
