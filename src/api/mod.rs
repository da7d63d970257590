//! The HTTP API of defect statistics and traceability (`/api/v1/...`), read from the result store
//! over read-only SQLite connections, plus live camera state from the station's counters, and the
//! review loop: operators' labels ([`review`]), written on a connection of their own, and the
//! operating point they measure. Who may do what: [`auth`].
//!
//! Served like the admin listener: its own thread and tokio runtime, the socket bound before the
//! thread starts (a taken port is an error at start), stopped gracefully after the pipeline has
//! drained. Queries run in `spawn_blocking`; a global body limit and request timeout apply.
//!
//! Its threads, the blocking ones running the SQLite queries included, run at a lower CPU
//! priority than the pipeline (nice +10 on Linux, see [`ListenerKind::nice`]): when the cores
//! are saturated, the line wins and the API slows down. `stats` answers are cached briefly
//! ([`cache`]), and requests are counted per route ([`metrics`]).

pub mod auth;
mod cache;
mod db;
pub mod error;
pub mod export;
mod health;
mod live;
pub mod metrics;
pub mod openapi;
pub mod params;
mod recipes;
mod review;
pub mod router;
mod shadow;
pub mod tally;
pub mod teach_jobs;

pub use error::ApiError;
pub use metrics::ApiMetrics;
pub use recipes::{LiveRecipes, parse_rules};
pub use router::{ApiState, router};

use crate::http_server::{HttpServer, ListenerKind, ServeError};
use std::net::SocketAddr;

/// Why the API listener could not start.
pub type ApiServerError = ServeError;

/// A running API listener. Dropping it shuts it down too.
pub type ApiServer = HttpServer;

/// Nice +10: see [`ListenerKind::nice`] for why.
const API: ListenerKind = ListenerKind { name: "API", config_key: "[api] listen", flag: "--api-listen", nice: 10 };

/// Bind `listen` (port 0 picks a free port) and serve the API on a thread.
pub fn start(listen: SocketAddr, state: ApiState) -> Result<ApiServer, ApiServerError> {
    HttpServer::start(API, listen, router(state))
}
