//! The admin listener: `/metrics`, `/healthz` and `/readyz` over HTTP, on a tokio runtime of its
//! own thread. It shares only atomics with the pipeline (the telemetry registry and readiness
//! latches), so a slow scrape never slows a frame, and a busy pipeline never blocks a scrape.
//!
//! The socket is bound before the thread starts, so a port already in use is an error at start,
//! naming the address and the fix. [`AdminServer::shutdown`] stops it gracefully: the app calls it
//! after the pipeline has drained, so the last scrape sees the final counts.

pub mod router;

use crate::http_server::{HttpServer, ListenerKind, ServeError};
use crate::telemetry::Telemetry;
use std::net::SocketAddr;
use std::sync::Arc;

pub use router::router;

/// Why the admin listener could not start.
pub type AdminError = ServeError;

/// A running admin listener. Dropping it shuts it down too.
pub type AdminServer = HttpServer;

const ADMIN: ListenerKind =
    ListenerKind { name: "admin", config_key: "[admin] listen", flag: "--admin-listen", nice: 0 };

/// Bind `listen` (port 0 picks a free port) and serve `/metrics`, `/healthz`, `/readyz` on a thread.
pub fn start(listen: SocketAddr, telemetry: Arc<Telemetry>) -> Result<AdminServer, AdminError> {
    HttpServer::start(ADMIN, listen, router(telemetry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn serves_on_a_free_port_stops_and_names_a_taken_one() {
        let telemetry = Arc::new(Telemetry::new());
        let server = start("127.0.0.1:0".parse().unwrap(), Arc::clone(&telemetry)).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

        let err = start(addr, telemetry).err().expect("the port is taken");
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()) && msg.contains("[admin] listen"), "{msg}");

        server.shutdown();
        assert!(std::net::TcpStream::connect(addr).is_err(), "stopped listener still accepts");
    }
}
