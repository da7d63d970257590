//! An HTTP listener on its own thread with its own tokio runtime: how the admin listener and the
//! API are served. The socket is bound before the thread starts, so a port already in use is an
//! error at start that names the address and the fix; [`HttpServer::shutdown`] stops it
//! gracefully (requests in progress finish), and the app calls it after the pipeline has drained.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Which listener, for messages: its name, config key and command-line flag.
#[derive(Clone, Copy, Debug)]
pub struct ListenerKind {
    /// e.g. "admin", "API".
    pub name: &'static str,
    /// e.g. "[admin] listen".
    pub config_key: &'static str,
    /// e.g. "--admin-listen".
    pub flag: &'static str,
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{name} listener: cannot listen on {addr}: {source} ({hint})")]
    Bind { name: &'static str, addr: SocketAddr, source: std::io::Error, hint: String },
    #[error("{name} listener: cannot start its runtime: {source}")]
    Runtime { name: &'static str, source: std::io::Error },
}

/// A running listener. Dropping it shuts it down too.
pub struct HttpServer {
    kind: ListenerKind,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Bind `listen` (port 0 picks a free port; see [`Self::local_addr`]) and serve `app` on a
    /// thread named after the listener.
    pub fn start(kind: ListenerKind, listen: SocketAddr, app: axum::Router) -> Result<Self, ServeError> {
        let bind_error = |source: std::io::Error| {
            let hint = match source.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "another program, perhaps another linesight station, holds this port: set {} to a free address, or pass {} ADDR (or off)",
                    kind.config_key, kind.flag
                ),
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: choose a port of 1024 or more".into()
                }
                std::io::ErrorKind::AddrNotAvailable => "no interface of this machine has that address".into(),
                _ => format!("check {}", kind.config_key),
            };
            ServeError::Bind { name: kind.name, addr: listen, source, hint }
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = std_listener.local_addr().map_err(bind_error)?;
        let runtime_error = |source| ServeError::Runtime { name: kind.name, source };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(runtime_error)?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(kind.name.to_lowercase())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(listener = kind.name, address = %addr, error = %e, "listener failed to start");
                            return;
                        }
                    };
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!(listener = kind.name, address = %addr, error = %e, "listener stopped");
                    }
                });
            })
            .map_err(runtime_error)?;
        Ok(Self { kind, addr, shutdown: Some(tx), thread: Some(thread) })
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
            tracing::error!(listener = self.kind.name, "listener thread panicked");
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
