//! Outputs: where inspection records go. Each runs on its own thread behind a bounded queue, so
//! a slow output loses records (counted) and never slows the line.

pub mod archive;
pub mod results;
pub mod store;
