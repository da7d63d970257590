//! linesight: an open-source visual inspection station.
//!
//! Cameras feed a lock-free pipeline into ONNX defect-detection inference; every part gets a
//! verdict. See `docs/ARCHITECTURE.md` for the data flow and the rules of the house.

pub mod admin;
pub mod api;
pub mod app;
pub mod calibration;
pub mod cli;
pub mod config;
pub mod eval;
pub mod fleet;
pub mod frame;
pub mod http_server;
pub mod hub;
pub mod model;
pub mod pipeline;
pub mod pool;
pub mod shadow;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod supervise;
pub mod synth;
pub mod teach;
pub mod telemetry;
pub mod topology;
pub mod ui;
