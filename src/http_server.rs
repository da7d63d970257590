//! An HTTP listener on its own thread with its own tokio runtime: how the admin listener and the
//! API are served. The socket is bound before the thread starts, so a port already in use is an
//! error at start that names the address and the fix; [`HttpServer::shutdown`] stops it
//! gracefully (requests in progress finish), and the app calls it after the pipeline has drained.
//!
//! A listener kind may run at a lower CPU priority than the rest of the process
//! ([`ListenerKind::nice`]): the API does, so that its clients can never take the line's CPU.

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
    /// Added to the process's nice value for every thread of this listener: its runtime thread
    /// and its blocking pool (where the API's SQLite queries run). Linux only; 0 elsewhere.
    ///
    /// The API uses 10. On a machine whose cores the pipeline keeps busy, CFS then gives an API
    /// thread about a tenth of the CPU share of a pipeline thread (weights 110 vs 1024): however
    /// many clients query, and however costly their queries, the line keeps its frames per
    /// second, and the API answers with the CPU the line leaves over (slower, never failing).
    /// A semaphore alone cannot do this: it bounds how many queries run, not whose thread the
    /// scheduler picks. The admin listener keeps 0: a scrape is small, and it must not lag.
    pub nice: i32,
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
        // One absolute value for every thread of the listener, from the nice value of the thread
        // starting it (the process's, systemd `Nice=` included): threads inherit their creator's
        // value, so adding `kind.nice` in each one could count it twice.
        let nice =
            (kind.nice != 0).then(|| priority::current().map(|base| (base + kind.nice).clamp(-20, 19))).flatten();
        let lower = move || {
            if let Some(nice) = nice
                && let Err(e) = priority::set(nice)
            {
                tracing::warn!(listener = kind.name, nice, error = %e, "cannot lower the listener's thread priority");
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("{}-blocking", kind.name.to_lowercase()))
            .on_thread_start(lower)
            .build()
            .map_err(runtime_error)?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(kind.name.to_lowercase())
            .spawn(move || {
                // `on_thread_start` covers the blocking pool; this thread runs the runtime itself.
                lower();
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

/// This thread's CPU scheduling priority (nice value). On Linux the nice value belongs to each
/// thread, not to the process: `setpriority(PRIO_PROCESS, gettid(), n)` changes only the caller.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod priority {
    /// The calling thread's nice value, or `None` if it cannot be read.
    pub fn current() -> Option<i32> {
        // SAFETY: gettid and getpriority take and return plain integers; errno is this thread's.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
            // -1 is also a valid nice value: only errno tells an error.
            (nice != -1 || *libc::__errno_location() == 0).then_some(nice)
        }
    }

    /// Set the calling thread's nice value (raising it needs no privilege; lowering does).
    pub fn set(nice: i32) -> std::io::Result<()> {
        // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
        let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
        if done == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// Run the calling thread, and the threads it starts, only on cycles nothing else wants
    /// (SCHED_IDLE; needs no privilege).
    pub fn idle() -> std::io::Result<()> {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
        let done = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if done == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

/// Elsewhere thread priorities are left alone.
#[cfg(not(target_os = "linux"))]
pub mod priority {
    pub fn current() -> Option<i32> {
        None
    }
    pub fn set(_nice: i32) -> std::io::Result<()> {
        Ok(())
    }
    pub fn idle() -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::io::{Read, Write};

    fn get_body(addr: SocketAddr, path: &str) -> String {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    }

    /// A listener kind with `nice` runs its handlers, and its blocking pool, that much lower
    /// than the thread that started it; one with 0 is left alone.
    #[test]
    fn a_listener_runs_its_threads_at_its_nice_value() {
        let base = priority::current().expect("readable nice value");
        let app = axum::Router::new().route("/runtime", get(|| async { format!("{:?}", priority::current()) })).route(
            "/blocking",
            get(|| async {
                let n = tokio::task::spawn_blocking(priority::current).await.unwrap();
                format!("{n:?}")
            }),
        );
        for (nice, want) in [(10, (base + 10).min(19)), (0, base)] {
            let kind = ListenerKind { name: "test", config_key: "[test] listen", flag: "--test", nice };
            let server = HttpServer::start(kind, "127.0.0.1:0".parse().unwrap(), app.clone()).unwrap();
            let addr = server.local_addr();
            assert_eq!(get_body(addr, "/runtime"), format!("{:?}", Some(want)), "runtime thread, nice {nice}");
            assert_eq!(get_body(addr, "/blocking"), format!("{:?}", Some(want)), "blocking thread, nice {nice}");
            server.shutdown();
        }
        assert_eq!(priority::current(), Some(base), "the starting thread keeps its priority");
    }
}
