//! The admin listener: `/metrics`, `/healthz` and `/readyz` over HTTP, on a tokio runtime of its
//! own thread. It shares only atomics with the pipeline (the telemetry registry and readiness
//! latches), so a slow scrape never slows a frame, and a busy pipeline never blocks a scrape.
//!
//! The socket is bound before the thread starts, so a port already in use is an error at start,
//! naming the address and the fix. [`AdminServer::shutdown`] stops it gracefully: the app calls it
//! after the pipeline has drained, so the last scrape sees the final counts.

pub mod router;

use crate::telemetry::Telemetry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

pub use router::router;

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin listener: cannot listen on {addr}: {source} ({hint})")]
    Bind { addr: SocketAddr, source: std::io::Error, hint: &'static str },
    #[error("admin listener: cannot start its runtime: {0}")]
    Runtime(std::io::Error),
}

/// A running admin listener. Dropping it shuts it down too.
pub struct AdminServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Bind `listen` (port 0 picks a free port; see [`Self::local_addr`]) and serve on a thread.
    pub fn start(listen: SocketAddr, telemetry: Arc<Telemetry>) -> Result<Self, AdminError> {
        let bind_error = |source: std::io::Error| {
            let hint = match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "another program, perhaps another linesight station, holds this port: set [admin] listen to a free address, or pass --admin-listen ADDR (or off)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: choose a port of 1024 or more"
                }
                std::io::ErrorKind::AddrNotAvailable => "no interface of this machine has that address",
                _ => "check [admin] listen",
            };
            AdminError::Bind { addr: listen, source, hint }
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = std_listener.local_addr().map_err(bind_error)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(AdminError::Runtime)?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(address = %addr, error = %e, "admin listener failed to start");
                            return;
                        }
                    };
                    let serve = axum::serve(listener, router(telemetry)).with_graceful_shutdown(async move {
                        let _ = rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!(address = %addr, error = %e, "admin listener stopped");
                    }
                });
            })
            .map_err(AdminError::Runtime)?;
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
            tracing::error!("admin listener thread panicked");
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn serves_on_a_free_port_stops_and_names_a_taken_one() {
        let telemetry = Arc::new(Telemetry::new());
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&telemetry)).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

        let err = AdminServer::start(addr, telemetry).err().expect("the port is taken");
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()) && msg.contains("[admin] listen"), "{msg}");

        server.shutdown();
        assert!(std::net::TcpStream::connect(addr).is_err(), "stopped listener still accepts");
    }
}
