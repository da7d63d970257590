//! The HTTP API of defect statistics and traceability (`/api/v1/...`), read from the result store
//! over read-only SQLite connections, plus live camera state from the station's counters.
//!
//! Served like the admin listener: its own thread and tokio runtime, the socket bound before the
//! thread starts (a taken port is an error at start), stopped gracefully after the pipeline has
//! drained. Queries run in `spawn_blocking`; a global body limit and request timeout apply.

mod db;
pub mod error;
pub mod openapi;
pub mod params;
pub mod router;

pub use error::ApiError;
pub use router::{ApiState, router};

use std::net::SocketAddr;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Why the API listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("API listener: cannot listen on {addr}: {source} ({hint})")]
    Bind { addr: SocketAddr, source: std::io::Error, hint: &'static str },
    #[error("API listener: cannot start its runtime: {0}")]
    Runtime(std::io::Error),
}

/// A running API listener. Dropping it shuts it down too.
pub struct ApiServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Bind `listen` (port 0 picks a free port; see [`Self::local_addr`]) and serve on a thread.
    pub fn start(listen: SocketAddr, state: ApiState) -> Result<Self, ApiServerError> {
        let bind_error = |source: std::io::Error| {
            let hint = match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "another program, perhaps another linesight station, holds this port: set [api] listen to a free address, or pass --api-listen ADDR (or off)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: choose a port of 1024 or more"
                }
                std::io::ErrorKind::AddrNotAvailable => "no interface of this machine has that address",
                _ => "check [api] listen",
            };
            ApiServerError::Bind { addr: listen, source, hint }
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = std_listener.local_addr().map_err(bind_error)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ApiServerError::Runtime)?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(address = %addr, error = %e, "API listener failed to start");
                            return;
                        }
                    };
                    let serve = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
                        let _ = rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!(address = %addr, error = %e, "API listener stopped");
                    }
                });
            })
            .map_err(ApiServerError::Runtime)?;
        Ok(Self { addr, shutdown: Some(tx), thread: Some(thread) })
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, finish the requests in progress, and wait for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("API listener thread panicked");
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
