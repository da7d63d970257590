//! The Modbus TCP adapter: the station is the client, the PLC the server. The register map and
//! the PLC's side of the sequence are in `docs/LINE.md`.
//!
//! Two TCP connections to the PLC, each with its own reconnect and backoff:
//! - the **actuator** connection only writes coils (the reject pulse, stop-line), so a reject
//!   never waits behind a poll or a status write;
//! - the **handshake** connection reads the PLC's input block every `poll_ms` (trigger counter,
//!   acquisition id, results ack) and writes the station's output block (one FC16 of
//!   `STATUS_BLOCK_LEN` registers) whenever it changes, and after every reconnect.
//!
//! A reject is written only inside its fire window (`AdapterContext::may_fire`); one that cannot
//! be (link down, failed write, too late) is counted undelivered, never written late. Failed
//! requests are logged once per burst (then a summary at most every 5 s), mark the link down
//! (`link_up` 0 until a write succeeds again) and never stop the adapter.

use super::event::{ErrorCode, LineEvent, PartOutcome, StationStatus};
use super::handshake::{Handshake, Image, Pushed, RECIPE_REFUSED, RecipeRequests, ResultSlot, TriggerCounter, input};
use super::metrics::AdapterMetrics;
use super::{ADAPTER_QUEUE_DEPTH, AdapterContext};
use crate::config::{INPUT_BLOCK_LEN, ModbusConfig, RegisterMap};
use crate::pipeline::Trigger;
use crate::telemetry::burst::Burst;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio_modbus::client::Client as _;
use tokio_modbus::{Request, Response, Slave};

/// Serve line events until the queue closes (the station stopped).
pub async fn run(cfg: ModbusConfig, mut events: tokio::sync::mpsc::Receiver<LineEvent>, ctx: AdapterContext) {
    ctx.metrics.link_up.set(0);
    let addr: SocketAddr = match cfg.address.parse() {
        Ok(a) => a,
        Err(e) => {
            // `check` refuses this; never stall the line thread if it gets here anyway.
            tracing::error!(address = %cfg.address, error = %e, "modbus adapter: bad PLC address; its actions are counted undelivered");
            while let Some(event) = events.recv().await {
                if matches!(event, LineEvent::Reject { .. } | LineEvent::StopLine { .. }) {
                    ctx.metrics.undelivered.inc();
                }
            }
            return;
        }
    };
    let health = Arc::new(Health::new(ctx.metrics.clone()));
    let (act_tx, act_rx) = mpsc::channel(ADAPTER_QUEUE_DEPTH);
    let (hs_tx, hs_rx) = mpsc::channel(ADAPTER_QUEUE_DEPTH);
    let actuator = tokio::spawn(actuator(
        Conn::new(Role::Actuator, addr, &cfg, Arc::clone(&health), ctx.metrics.clone()),
        act_rx,
        ctx.clone(),
        cfg.map.clone(),
    ));
    let handshake = tokio::spawn(handshake(
        Conn::new(Role::Handshake, addr, &cfg, Arc::clone(&health), ctx.metrics.clone()),
        hs_rx,
        ctx.clone(),
        cfg.clone(),
    ));
    while let Some(event) = events.recv().await {
        match event {
            LineEvent::Reject { outcome, pulse } => {
                if act_tx.try_send(Act::Reject { outcome, pulse }).is_err() {
                    ctx.metrics.undelivered.inc();
                }
            }
            LineEvent::StopLine { .. } => {
                if act_tx.try_send(Act::StopLine).is_err() {
                    ctx.metrics.undelivered.inc();
                }
                let _ = hs_tx.try_send(event);
            }
            LineEvent::Result(_) | LineEvent::Status(_) | LineEvent::Heartbeat(_) => {
                if hs_tx.try_send(event).is_err() && matches!(event, LineEvent::Result(_)) {
                    ctx.metrics.undelivered.inc();
                }
            }
        }
    }
    drop((act_tx, hs_tx));
    for task in [actuator, handshake] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "modbus adapter task failed");
        }
    }
    ctx.metrics.link_up.set(0);
}

/// What the actuator connection does.
#[derive(Clone, Copy, Debug)]
enum Act {
    Reject { outcome: PartOutcome, pulse: Duration },
    StopLine,
}

/// The actuator connection: coil writes only.
async fn actuator(mut conn: Conn, mut acts: mpsc::Receiver<Act>, ctx: AdapterContext, map: RegisterMap) {
    // When the reject coil goes OFF again (None: it is OFF).
    let mut coil_off_at: Option<Instant> = None;
    // Stop-line: asked for and not yet written ON (it is written once; clearing it is the PLC's).
    let mut stop_line_pending = false;
    let mut stop_line_asked = false;
    let mut stop_line_cleared = false;
    let mut undelivered_log = Burst::new(
        "modbus adapter: rejects not delivered (link down, failed write, or past their fire window); counted in linesight_line_undelivered_total",
    );
    loop {
        if !conn.connected() {
            coil_off_at = None;
            tokio::select! {
                biased;
                act = acts.recv() => match act {
                    None => break,
                    Some(Act::Reject { outcome, .. }) => {
                        ctx.metrics.undelivered.inc();
                        undelivered_log.failed(&format!("PLC link down: reject for camera {} seq {} not delivered", outcome.camera, outcome.seq));
                    }
                    Some(Act::StopLine) => {
                        stop_line_asked = true;
                        stop_line_pending = true;
                    }
                },
                // The handshake connection got through again: try now, not at the end of our backoff.
                _ = conn.health.wake_actuator.notified() => conn.retry_now(),
                _ = sleep_until(conn.next_attempt) => {
                    if conn.connect().await {
                        // Safe state first: whatever was ON when the link broke goes OFF.
                        let _ = conn.write_coil(map.reject_coil, false).await;
                        if !stop_line_cleared && !stop_line_asked && conn.connected() {
                            stop_line_cleared = conn.write_coil(map.stop_line_coil, false).await.is_ok();
                        }
                        if stop_line_pending && conn.connected() {
                            stop_line_pending = conn.write_coil(map.stop_line_coil, true).await.is_err();
                        }
                    }
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = sleep_until(coil_off_at.unwrap_or_else(Instant::now)), if coil_off_at.is_some() => {
                coil_off_at = None;
                let _ = conn.write_coil(map.reject_coil, false).await;
            }
            act = acts.recv() => match act {
                None => break,
                Some(Act::Reject { outcome, pulse }) => {
                    if fire(&mut conn, &ctx, &map, &outcome, pulse, &mut coil_off_at).await {
                        undelivered_log.ok();
                    } else {
                        ctx.metrics.undelivered.inc();
                        undelivered_log.failed(&format!("reject for camera {} seq {} not delivered", outcome.camera, outcome.seq));
                    }
                }
                Some(Act::StopLine) => {
                    stop_line_asked = true;
                    stop_line_pending = conn.write_coil(map.stop_line_coil, true).await.is_err();
                }
            },
            // The handshake connection lost the PLC: is this connection still good?
            _ = conn.health.wake_actuator.notified() => conn.probe(map.reject_coil).await,
        }
    }
    // The station is stopping: finish the pulse in progress.
    if let Some(off) = coil_off_at
        && conn.connected()
    {
        sleep_until(off).await;
        let _ = conn.write_coil(map.reject_coil, false).await;
    }
}

/// Pulse the reject coil for `outcome` if its fire window is still open; true when written.
///
/// Overlapping pulses: when the coil is still ON from the previous reject, it is written OFF and
/// then ON again at once (a glitch of one request's round trip), and the pulse runs `pulse` from
/// the new ON. The actuator cannot move in that time, so the reject output stays effectively on,
/// while the PLC still gets one OFF→ON edge — one ON write — per fired reject and can count
/// them against the station's.
async fn fire(
    conn: &mut Conn,
    ctx: &AdapterContext,
    map: &RegisterMap,
    outcome: &PartOutcome,
    pulse: Duration,
    coil_off_at: &mut Option<Instant>,
) -> bool {
    if !ctx.may_fire(outcome, Instant::now()) {
        return false;
    }
    if coil_off_at.is_some() {
        match conn.write_coil(map.reject_coil, false).await {
            Ok(()) => *coil_off_at = None,
            Err(_) if !conn.connected() => return false,
            Err(_) => {} // refused: the coil is still ON; write ON anyway to extend it
        }
        if !ctx.may_fire(outcome, Instant::now()) {
            return false;
        }
    }
    let sent = Instant::now();
    match conn.write_coil(map.reject_coil, true).await {
        Ok(()) => {
            *coil_off_at = Some(sent + pulse);
            true
        }
        Err(_) => false,
    }
}

/// The handshake connection: polls the PLC's input block, writes the station's output block.
async fn handshake(mut conn: Conn, mut events: mpsc::Receiver<LineEvent>, ctx: AdapterContext, cfg: ModbusConfig) {
    let map = &cfg.map;
    let mut hs =
        Handshake::new(usize::from(cfg.results_buffer), StationStatus { ready: false, error: ErrorCode::Starting });
    let mut triggers = TriggerCounter::default();
    let mut written: Option<Image> = None;
    let mut retry_write_at = Instant::now();
    let retry_every = Duration::from_millis(cfg.reconnect_initial_ms);
    // An ack left in the PLC's register by an earlier run must not acknowledge this run's first
    // result: the first connection writes 0 there (the only write into the PLC's input block).
    let mut ack_cleared = false;
    let mut poll = tokio::time::interval(Duration::from_millis(cfg.poll_ms));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut overrun_log = Burst::new(
        "modbus adapter: the PLC does not acknowledge results: results dropped (overrun bit set); counted in linesight_line_results_overrun_total",
    );
    let mut trigger_log = Burst::new("modbus adapter: triggers dropped, the line thread's trigger queue is full");
    let mut recipe_requests = RecipeRequests::default();
    loop {
        if !conn.connected() {
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    None => break,
                    Some(e) => apply(&mut hs, e, &ctx, &mut overrun_log),
                },
                _ = sleep_until(conn.next_attempt) => {
                    if conn.connect().await {
                        triggers.reset();
                        written = None;
                        retry_write_at = Instant::now();
                        if !ack_cleared {
                            let ack = map.input_register + input::RESULTS_ACK as u16;
                            ack_cleared = conn.write_register(ack, 0).await.is_ok();
                        }
                        conn.health.wake_actuator.notify_one();
                    }
                }
            }
        } else {
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    None => break,
                    Some(e) => {
                        apply(&mut hs, e, &ctx, &mut overrun_log);
                        // Take everything queued, then write once.
                        while let Ok(e) = events.try_recv() {
                            apply(&mut hs, e, &ctx, &mut overrun_log);
                        }
                    }
                },
                _ = poll.tick() => {
                    match conn.read_registers(map.input_register, INPUT_BLOCK_LEN).await {
                        Ok(regs) => {
                            let at = Instant::now();
                            if let Some(jump) = triggers.observe(regs[input::TRIGGER_COUNTER]) {
                                let t = Trigger { at, acquisition_id: regs[input::ACQUISITION_ID], missed: jump - 1 };
                                match ctx.triggers.try_send(t) {
                                    Ok(()) => trigger_log.ok(),
                                    Err(_) => trigger_log.failed(&format!("trigger with acquisition id {} dropped", t.acquisition_id)),
                                }
                            }
                            hs.ack(regs[input::RESULTS_ACK]);
                            if let Some(switch) = &ctx.recipes {
                                let request = regs[input::RECIPE_REQUEST];
                                let before: Vec<(usize, u16)> = if recipe_requests.is_new(request) {
                                    (0..switch.cameras()).map(|c| (c, switch.wanted(c))).collect()
                                } else {
                                    Vec::new()
                                };
                                let (ack, switched) = recipe_requests.observe(request, switch.as_ref());
                                if let Some(n) = switched {
                                    tracing::info!(recipe = n, "PLC job change: every camera switches to recipe {n} from its next frame");
                                    super::audit_recipe_switch(ctx.audit.clone(), switch, "plc", &before, n - 1);
                                } else if ack == RECIPE_REFUSED && hs.image()[super::handshake::out::RECIPE] != RECIPE_REFUSED {
                                    tracing::warn!(
                                        requested = regs[input::RECIPE_REQUEST],
                                        recipes = switch.recipes(),
                                        "PLC job change refused: no recipe with that number (1 = the first [[recipe]]); the cameras keep theirs"
                                    );
                                }
                                hs.set_recipe(ack);
                            }
                        }
                        Err(_) => {
                            if !conn.connected() {
                                conn.health.wake_actuator.notify_one();
                            }
                        }
                    }
                }
            }
        }
        let image = hs.image();
        if conn.connected() && written != Some(image) && Instant::now() >= retry_write_at {
            match conn.write_registers(map.status_register, &image).await {
                Ok(()) => written = Some(image),
                Err(_) => retry_write_at = Instant::now() + retry_every,
            }
        }
    }
    // The station is stopping: leave the PLC the last status (not ready, stopping).
    hs.end_not_ready();
    let image = hs.image();
    if written != Some(image) {
        if !conn.connected() {
            conn.retry_now();
            conn.connect().await;
        }
        if conn.connected() {
            let _ = conn.write_registers(map.status_register, &image).await;
        }
    }
}

/// One line event into the handshake state.
fn apply(hs: &mut Handshake, event: LineEvent, ctx: &AdapterContext, overrun_log: &mut Burst) {
    match event {
        LineEvent::Result(o) => match hs.push(ResultSlot::of(&o)) {
            Pushed::Dropped => {
                ctx.line.results_overrun.inc();
                overrun_log.failed(&format!("result {} (camera {} seq {}) dropped", o.short_id(), o.camera, o.seq));
            }
            Pushed::Presented | Pushed::Queued => overrun_log.ok(),
        },
        LineEvent::Status(s) => hs.set_status(s),
        LineEvent::Heartbeat(v) => hs.set_heartbeat(v),
        LineEvent::StopLine { .. } => hs.request_stop_line(),
        LineEvent::Reject { .. } => {}
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Actuator = 0,
    Handshake = 1,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Actuator => "actuator",
            Role::Handshake => "handshake",
        }
    }
}

/// The link state both connections share: `link_up` is 1 while both are connected and their
/// last request succeeded.
struct Health {
    ok: [AtomicBool; 2],
    metrics: AdapterMetrics,
    /// The handshake connection lost or regained the PLC: the actuator checks its own.
    wake_actuator: Notify,
}

impl Health {
    fn new(metrics: AdapterMetrics) -> Self {
        metrics.link_up.set(0);
        Self { ok: [AtomicBool::new(false), AtomicBool::new(false)], metrics, wake_actuator: Notify::new() }
    }

    fn set(&self, role: Role, ok: bool) {
        self.ok[role as usize].store(ok, Ordering::Relaxed);
        let up = self.ok.iter().all(|o| o.load(Ordering::Relaxed));
        self.metrics.link_up.set(i64::from(up));
    }
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    NotConnected,
    /// The PLC answered with a Modbus exception: the link works, the PLC refused.
    Exception(tokio_modbus::ExceptionCode),
    /// The answer was not the Modbus response to the request: the connection is dropped.
    BadAnswer(String),
    Timeout,
    Io(std::io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotConnected => write!(f, "not connected"),
            Failure::Exception(e) => write!(f, "Modbus exception: {e}"),
            Failure::BadAnswer(e) => write!(f, "bad answer: {e}"),
            Failure::Timeout => write!(f, "no answer in time"),
            Failure::Io(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Counted in `write_errors` when it fails, timed in `write_seconds`.
    Write,
    /// A poll: a failure marks the link down, an exception included.
    Read,
    /// "Is this connection alive?": any answer, an exception too, says yes.
    Probe,
}

/// One TCP connection to the PLC, with reconnect backoff and rate-limited error logs.
struct Conn {
    role: Role,
    addr: SocketAddr,
    slave: Slave,
    timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    backoff: Duration,
    next_attempt: Instant,
    ctx: Option<tokio_modbus::client::Context>,
    /// The last read / write succeeded (a write is unproven until one does).
    read_ok: bool,
    write_ok: bool,
    health: Arc<Health>,
    metrics: AdapterMetrics,
    errors: Burst,
    link: Burst,
}

impl Conn {
    fn new(role: Role, addr: SocketAddr, cfg: &ModbusConfig, health: Arc<Health>, metrics: AdapterMetrics) -> Self {
        let initial = Duration::from_millis(cfg.reconnect_initial_ms.max(1));
        let errors = match role {
            Role::Actuator => Burst::new("modbus adapter: PLC requests on the actuator connection are failing"),
            Role::Handshake => Burst::new("modbus adapter: PLC requests on the handshake connection are failing"),
        };
        let link = match role {
            Role::Actuator => Burst::new(
                "modbus adapter: no connection to the PLC (actuator); rejects due meanwhile are counted undelivered, retrying with backoff",
            ),
            Role::Handshake => {
                Burst::new("modbus adapter: no connection to the PLC (handshake); retrying with backoff")
            }
        };
        Self {
            role,
            addr,
            slave: Slave(u8::try_from(cfg.unit_id).unwrap_or(255)),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            backoff_initial: initial,
            backoff_max: Duration::from_millis(cfg.reconnect_max_ms).max(initial),
            backoff: initial,
            next_attempt: Instant::now(),
            ctx: None,
            read_ok: false,
            write_ok: false,
            health,
            metrics,
            errors,
            link,
        }
    }

    fn connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// This connection's part of `link_up`: connected, and neither its last read nor its last
    /// write failed (a PLC that refuses writes but answers polls is degraded, not up).
    fn update_health(&self) {
        self.health.set(self.role, self.connected() && self.read_ok && self.write_ok);
    }

    /// Try the next connect now rather than when the backoff ends.
    fn retry_now(&mut self) {
        self.next_attempt = Instant::now();
    }

    /// One connect attempt; on failure the next is due after the (doubled) backoff.
    async fn connect(&mut self) -> bool {
        let attempt = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.addr)).await;
        let failure = match attempt {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                self.ctx = Some(tokio_modbus::client::tcp::attach_slave(stream, self.slave));
                self.read_ok = true;
                self.write_ok = false;
                self.backoff = self.backoff_initial;
                self.link.ok();
                tracing::debug!(connection = self.role.as_str(), address = %self.addr, "modbus adapter: connected to the PLC");
                return true;
            }
            Ok(Err(e)) => Failure::Io(e),
            Err(_) => Failure::Timeout,
        };
        self.update_health();
        self.link.failed(&format!("connecting to {}: {failure}", self.addr));
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.backoff_max);
        false
    }

    /// Give up this connection (it cannot be trusted any more); reconnect after the backoff.
    fn drop_link(&mut self) {
        self.ctx = None;
        self.update_health();
        self.next_attempt = Instant::now() + self.backoff;
    }

    async fn request(&mut self, kind: Kind, req: Request<'_>) -> Result<Response, Failure> {
        let Some(ctx) = self.ctx.as_mut() else {
            if kind == Kind::Write {
                self.metrics.write_errors.inc();
            }
            return Err(Failure::NotConnected);
        };
        let function = req.function_code();
        let t0 = Instant::now();
        let answer = tokio::time::timeout(self.timeout, ctx.call(req)).await;
        let failure = match answer {
            Ok(Ok(Ok(response))) => {
                if kind == Kind::Write {
                    self.metrics.write_seconds.observe(t0.elapsed().as_secs_f64());
                }
                match kind {
                    Kind::Write => self.write_ok = true,
                    Kind::Read => self.read_ok = true,
                    Kind::Probe => {}
                }
                if kind != Kind::Probe {
                    self.update_health();
                    // A burst ends when requests of every kind succeed again (a PLC that answers
                    // polls but refuses every write is still failing).
                    if self.read_ok && self.write_ok {
                        self.errors.ok();
                    }
                }
                return Ok(response);
            }
            Ok(Ok(Err(exception))) => {
                if kind == Kind::Probe {
                    return Err(Failure::Exception(exception));
                }
                // The link works but the PLC refuses: degraded until a request of the kind succeeds.
                match kind {
                    Kind::Write => self.write_ok = false,
                    _ => self.read_ok = false,
                }
                self.update_health();
                Failure::Exception(exception)
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                self.drop_link();
                Failure::BadAnswer(e.to_string())
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                self.drop_link();
                if e.kind() == std::io::ErrorKind::InvalidData {
                    Failure::BadAnswer(e.to_string())
                } else {
                    Failure::Io(e)
                }
            }
            Err(_) => {
                // An answer may still come: the connection is out of step, start afresh.
                self.drop_link();
                Failure::Timeout
            }
        };
        if kind == Kind::Write {
            self.metrics.write_errors.inc();
        }
        self.errors.failed(&format!("{function}: {failure}"));
        Err(failure)
    }

    async fn write_coil(&mut self, address: u16, on: bool) -> Result<(), Failure> {
        self.request(Kind::Write, Request::WriteSingleCoil(address, on)).await.map(|_| ())
    }

    async fn write_register(&mut self, address: u16, value: u16) -> Result<(), Failure> {
        self.request(Kind::Write, Request::WriteSingleRegister(address, value)).await.map(|_| ())
    }

    async fn write_registers(&mut self, address: u16, values: &[u16]) -> Result<(), Failure> {
        self.request(Kind::Write, Request::WriteMultipleRegisters(address, values.into())).await.map(|_| ())
    }

    async fn read_registers(&mut self, address: u16, count: u16) -> Result<Vec<u16>, Failure> {
        match self.request(Kind::Read, Request::ReadHoldingRegisters(address, count)).await? {
            Response::ReadHoldingRegisters(regs) if regs.len() == usize::from(count) => Ok(regs),
            other => {
                self.drop_link();
                let failure = Failure::BadAnswer(format!("expected {count} registers, got {other:?}"));
                self.errors.failed(&failure.to_string());
                Err(failure)
            }
        }
    }

    /// Is the connection still there? (Reads one coil; any answer will do.)
    async fn probe(&mut self, coil: u16) {
        if self.connected() {
            let _ = self.request(Kind::Probe, Request::ReadCoils(coil, 1)).await;
        }
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}
