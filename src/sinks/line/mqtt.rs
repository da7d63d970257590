//! The MQTT adapter: every line event as a JSON message (the same JSON as the command adapter)
//! under `topic_prefix`:
//!
//! | topic                 | when                                   | QoS | retained |
//! |-----------------------|----------------------------------------|-----|----------|
//! | `{prefix}/result`     | each part, as soon as it is decided    | 1   | no       |
//! | `{prefix}/reject`     | at each reject's deadline              | 1   | no       |
//! | `{prefix}/stop_line`  | fail-safe `stop_line`, at once         | 1   | no       |
//! | `{prefix}/status`     | station-ready changes; last will       | 1   | yes      |
//! | `{prefix}/heartbeat`  | every `heartbeat_ms`                   | 0   | no       |
//! | `{prefix}/recipe`     | the answer to each recipe command      | 1   | no       |
//!
//! Commands: the station subscribes to `{prefix}/command/recipe` (QoS 1). A message
//! `{"recipe": "NAME", "cameras": ["id", ...]}` (`cameras` optional: all) switches those cameras
//! to that recipe from their next frame; the answer on `{prefix}/recipe` is
//! `{"event": "recipe", "recipe": NAME, "first_seq": {camera: seq}}` once each has a frame under
//! it (at most 5 s; null: no frame yet), or `{"event": "recipe", "error": "..."}`.
//!
//! The last will (`{"event":"status","ready":false,"error":"offline"}`, retained) tells
//! subscribers when the station dies without saying goodbye; a clean stop publishes a not-ready
//! status and disconnects.
//!
//! Timing rules: a message is handed to the MQTT client only while the link is up and only
//! inside its window (a result until its part's deadline, a reject or stop-line until the fire
//! window closes). While the link is down, messages wait in a backlog of our own and are
//! published when it comes back if their window is still open; otherwise they are counted
//! undelivered. Whatever the client still held when the link dropped is discarded, counted, and
//! never retransmitted on the next connection (clean sessions; rumqttc's retransmission queue is
//! emptied), so no reject is ever published late by this station. (A broker that accepts a
//! message in time but forwards it late is beyond the station's reach: subscribers get the part's
//! `deadline_ns` in every message.)

use super::command::event_json;
use super::{AdapterContext, LineEvent};
use crate::config::MqttConfig;
use crate::sinks::line::ADAPTER_QUEUE_DEPTH;
use crate::sinks::line::event::{ErrorCode, StationStatus};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, MqttState, NetworkOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// First wait before reconnecting; doubled per failed attempt up to [`RECONNECT_MAX`].
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
pub const RECONNECT_MAX: Duration = Duration::from_millis(2000);
/// Giving up on one connection attempt (seconds: rumqttc's unit).
const CONNECT_TIMEOUT_S: u64 = 2;
/// QoS 1 messages written and not yet acknowledged by the broker.
const MAX_INFLIGHT: u16 = 100;
/// Requests between the adapter and the event loop.
const REQUEST_CAPACITY: usize = 256;
/// How long a clean stop waits for the broker to acknowledge what was sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The adapter's topics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub result: String,
    pub reject: String,
    pub stop_line: String,
    pub status: String,
    pub heartbeat: String,
    /// Recipe commands come in here (subscribed)...
    pub recipe_command: String,
    /// ... and are answered here.
    pub recipe: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            result: format!("{prefix}/result"),
            reject: format!("{prefix}/reject"),
            stop_line: format!("{prefix}/stop_line"),
            status: format!("{prefix}/status"),
            heartbeat: format!("{prefix}/heartbeat"),
            recipe_command: format!("{prefix}/command/recipe"),
            recipe: format!("{prefix}/recipe"),
        }
    }

    /// Where `event` goes, at which QoS, retained or not.
    fn route(&self, event: &LineEvent) -> (&str, QoS, bool) {
        match event {
            LineEvent::Result(_) => (&self.result, QoS::AtLeastOnce, false),
            LineEvent::Reject { .. } => (&self.reject, QoS::AtLeastOnce, false),
            LineEvent::StopLine { .. } => (&self.stop_line, QoS::AtLeastOnce, false),
            LineEvent::Status(_) => (&self.status, QoS::AtLeastOnce, true),
            LineEvent::Heartbeat(_) => (&self.heartbeat, QoS::AtMostOnce, false),
        }
    }
}

/// The last will's payload: what the broker publishes (retained) on `{prefix}/status` when the
/// station's connection dies without a clean disconnect.
pub fn last_will_payload() -> String {
    serde_json::json!({"event": "status", "ready": false, "error": "offline"}).to_string()
}

/// Until when `event` may still be published, if it is a part's action or result (these are
/// counted undelivered when their window closes first); `None` for status and heartbeat.
pub fn window_end(event: &LineEvent, ctx: &AdapterContext) -> Option<Instant> {
    match event {
        LineEvent::Result(o) => Some(o.deadline),
        LineEvent::Reject { outcome, .. } | LineEvent::StopLine { outcome } => Some(outcome.deadline + ctx.fire_window),
        LineEvent::Status(_) | LineEvent::Heartbeat(_) => None,
    }
}

/// One message handed to the client, until the broker acknowledges it.
#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Instant,
    /// A part's result or action: counted undelivered if the link drops before its PUBACK.
    part: bool,
}

/// What the adapter and its event-loop task share.
#[derive(Default)]
struct LinkState {
    up: bool,
    /// Connections made so far (a new one republishes the status and flushes the backlog).
    connects: u64,
    /// Handed to the client, in order, not yet written (`Outgoing::Publish` pops them).
    queued: VecDeque<Sent>,
    /// QoS 1 messages written, awaiting their PUBACK, by packet id.
    inflight: HashMap<u16, Sent>,
}

struct Link {
    state: Mutex<LinkState>,
    /// The link came up or went down.
    changed: tokio::sync::Notify,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serve line events until the queue closes (the station stopped).
pub async fn run(cfg: MqttConfig, mut events: tokio::sync::mpsc::Receiver<LineEvent>, ctx: AdapterContext) {
    ctx.metrics.link_up.set(0);
    let topics = Topics::new(&cfg.topic_prefix);
    let (host, port) = match cfg.broker.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))) {
        Some(hp) => hp,
        None => {
            // `check` refuses this; never silently drop a station's rejects all the same.
            tracing::error!(broker = %cfg.broker, "line mqtt adapter: broker is not HOST:PORT; its events are counted undelivered");
            while let Some(event) = events.recv().await {
                if window_end(&event, &ctx).is_some() {
                    ctx.metrics.undelivered.inc();
                }
            }
            return;
        }
    };
    let mut options = MqttOptions::new(cfg.client_id.clone(), host.trim_matches(['[', ']']), port);
    options
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(1)))
        .set_clean_session(true)
        .set_inflight(MAX_INFLIGHT)
        .set_last_will(LastWill::new(topics.status.clone(), last_will_payload(), QoS::AtLeastOnce, true));
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT_S);
    eventloop.set_network_options(network);

    let link = Arc::new(Link { state: Mutex::new(LinkState::default()), changed: tokio::sync::Notify::new() });
    let commands = ctx.recipes.clone().map(|switch| Commands {
        client: client.clone(),
        topics: topics.clone(),
        switch,
        audit: ctx.audit.clone(),
    });
    let driver = tokio::spawn(drive(eventloop, Arc::clone(&link), ctx.clone(), cfg.broker.clone(), commands));
    let mut adapter = Adapter {
        client,
        link: Arc::clone(&link),
        ctx,
        topics,
        backlog: VecDeque::new(),
        status: None,
        connects_seen: 0,
        failing: false,
    };
    loop {
        let expiry = adapter.backlog.iter().map(|(_, end)| *end).min();
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => adapter.on_event(event),
                None => break,
            },
            () = link.changed.notified() => adapter.on_link_change(),
            () = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now).into()), if expiry.is_some() => {
                adapter.expire(Instant::now());
            }
        }
    }
    adapter.shutdown(driver).await;
}

struct Adapter {
    client: AsyncClient,
    link: Arc<Link>,
    ctx: AdapterContext,
    topics: Topics,
    /// Events that came while the link was down, with the end of their window.
    backlog: VecDeque<(LineEvent, Instant)>,
    /// The latest station status (republished, retained, on every new connection).
    status: Option<StationStatus>,
    connects_seen: u64,
    /// In a burst of client errors (logged once).
    failing: bool,
}

/// What became of one publish.
#[derive(Debug, PartialEq, Eq)]
enum Handed {
    Yes,
    LinkDown,
    Failed,
}

impl Adapter {
    fn on_event(&mut self, event: LineEvent) {
        let now = Instant::now();
        match event {
            LineEvent::Status(s) => {
                self.status = Some(s);
                // Down: the newest status goes out when the link is back.
                let _ = self.publish(&event, now);
            }
            LineEvent::Heartbeat(_) => {
                let _ = self.publish(&event, now);
            }
            LineEvent::Result(_) | LineEvent::Reject { .. } | LineEvent::StopLine { .. } => {
                let end = window_end(&event, &self.ctx).expect("a part's event has a window");
                if now > end {
                    self.ctx.metrics.undelivered.inc();
                    return;
                }
                if self.publish(&event, now) == Handed::LinkDown {
                    if self.backlog.len() >= ADAPTER_QUEUE_DEPTH {
                        self.ctx.metrics.undelivered.inc();
                    } else {
                        self.backlog.push_back((event, end));
                    }
                }
            }
        }
    }

    /// Hand `event` to the client if the link is up. Checking the link and handing over happen
    /// under the link's lock, so a message can never slip into the client after the event loop
    /// has seen the link drop (and emptied the client).
    fn publish(&mut self, event: &LineEvent, now: Instant) -> Handed {
        let (topic, qos, retain) = self.topics.route(event);
        let part = window_end(event, &self.ctx).is_some();
        let payload = event_json(event, &self.ctx).to_string();
        let mut link = self.link.lock();
        if !link.up {
            return Handed::LinkDown;
        }
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                link.queued.push_back(Sent { at: now, part });
                if self.failing {
                    self.failing = false;
                    tracing::info!(adapter = self.ctx.name, "line mqtt adapter: publishing again");
                }
                Handed::Yes
            }
            Err(e) => {
                drop(link);
                self.ctx.metrics.write_errors.inc();
                if part {
                    self.ctx.metrics.undelivered.inc();
                }
                if !self.failing {
                    self.failing = true;
                    tracing::error!(adapter = self.ctx.name, topic, error = %e, "line mqtt adapter: cannot hand a message to the MQTT client (counted; logged once per burst)");
                }
                Handed::Failed
            }
        }
    }

    /// After the link came up: republish the status (retained) and what waited, in order, where
    /// its window is still open.
    fn on_link_change(&mut self) {
        let connects = {
            let link = self.link.lock();
            if !link.up {
                return;
            }
            link.connects
        };
        if connects == self.connects_seen {
            return;
        }
        self.connects_seen = connects;
        let now = Instant::now();
        if let Some(s) = self.status {
            let _ = self.publish(&LineEvent::Status(s), now);
        }
        while let Some((event, end)) = self.backlog.pop_front() {
            if now > end {
                self.ctx.metrics.undelivered.inc();
                continue;
            }
            if self.publish(&event, now) == Handed::LinkDown {
                // Down again already: keep it, and what follows, for the next connection.
                self.backlog.push_front((event, end));
                break;
            }
        }
    }

    /// Count and drop what waited past its window.
    fn expire(&mut self, now: Instant) {
        let before = self.backlog.len();
        self.backlog.retain(|(_, end)| now <= *end);
        self.ctx.metrics.undelivered.inc_by((before - self.backlog.len()) as u64);
    }

    /// The event queue closed: tell subscribers the station is not ready (unless the line's
    /// last status already did), wait briefly for the broker's acknowledgements, disconnect
    /// (which discards the last will).
    async fn shutdown(mut self, driver: tokio::task::JoinHandle<()>) {
        self.expire(Instant::now());
        self.ctx.metrics.undelivered.inc_by(self.backlog.len() as u64);
        self.backlog.clear();
        if self.link.lock().up {
            if self.status.is_none_or(|s| s.ready) {
                let stopping = LineEvent::Status(StationStatus { ready: false, error: ErrorCode::Stopping });
                let _ = self.publish(&stopping, Instant::now());
            }
            let t0 = Instant::now();
            loop {
                let settled = {
                    let link = self.link.lock();
                    !link.up || (link.queued.is_empty() && link.inflight.is_empty())
                };
                if settled {
                    break;
                }
                if t0.elapsed() > SHUTDOWN_GRACE {
                    tracing::warn!(
                        adapter = self.ctx.name,
                        "line mqtt adapter: the broker did not acknowledge the last messages in time"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if self.client.try_disconnect().is_ok() {
                let abort = driver.abort_handle();
                if tokio::time::timeout(SHUTDOWN_GRACE, driver).await.is_err() {
                    abort.abort();
                }
                self.ctx.metrics.link_up.set(0);
                return;
            }
        }
        driver.abort();
        self.ctx.metrics.link_up.set(0);
    }
}

/// The event loop's task: keeps the connection (reconnecting with backoff), marks the link up
/// and down, and times each QoS 1 message from hand-off to its PUBACK.
/// What the event loop needs to take recipe commands.
struct Commands {
    client: AsyncClient,
    topics: Topics,
    switch: Arc<crate::pipeline::RecipeSwitch>,
    /// The store whose audit log records the switches.
    audit: Option<std::path::PathBuf>,
}

/// How long a recipe command waits for each camera's first frame under the new recipe.
const RECIPE_WAIT: Duration = Duration::from_secs(5);

/// A recipe command's payload.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeCommand {
    recipe: String,
    #[serde(default)]
    cameras: Option<Vec<String>>,
}

impl Commands {
    /// Act on one message on the command topic, then answer it.
    async fn recipe(
        client: AsyncClient,
        topic: String,
        switch: Arc<crate::pipeline::RecipeSwitch>,
        audit: Option<std::path::PathBuf>,
        payload: Vec<u8>,
    ) {
        let answer = match Self::switch(&switch, audit, &payload).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(error = %error, "line mqtt adapter: recipe command refused");
                serde_json::json!({ "event": "recipe", "error": error })
            }
        };
        let _ = client.publish(topic, QoS::AtLeastOnce, false, answer.to_string()).await;
    }

    async fn switch(
        switch: &crate::pipeline::RecipeSwitch,
        audit: Option<std::path::PathBuf>,
        payload: &[u8],
    ) -> Result<serde_json::Value, String> {
        let command: RecipeCommand = serde_json::from_slice(payload).map_err(|e| {
            format!("{e}: send {{\"recipe\": \"NAME\", \"cameras\": [\"id\", ...]}} (cameras optional)")
        })?;
        let recipe = switch.recipe_index(&command.recipe).ok_or_else(|| {
            format!("no recipe named {:?}: the station has {}", command.recipe, switch.recipe_names().join(", "))
        })?;
        let cameras: Vec<usize> = match &command.cameras {
            None => (0..switch.cameras()).collect(),
            Some(ids) => {
                ids.iter()
                    .map(|id| {
                        switch.camera_ids().iter().position(|c| c == id).ok_or_else(|| {
                            format!("no camera {id:?}: the station has {}", switch.camera_ids().join(", "))
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        tracing::info!(recipe = %command.recipe, cameras = cameras.len(), "MQTT recipe command: switching from each camera's next frame");
        let before: Vec<(usize, u16)> = cameras.iter().map(|&c| (c, switch.wanted(c))).collect();
        let firsts = switch.switch_and_wait(recipe, &cameras, RECIPE_WAIT).await;
        super::audit_recipe_switch(audit, switch, "mqtt", &before, recipe);
        let first_seq: serde_json::Map<String, serde_json::Value> = cameras
            .iter()
            .zip(firsts)
            .map(|(&c, seq)| (switch.camera_ids()[c].clone(), serde_json::json!(seq)))
            .collect();
        Ok(serde_json::json!({ "event": "recipe", "recipe": command.recipe, "first_seq": first_seq }))
    }
}

async fn drive(
    mut eventloop: EventLoop,
    link: Arc<Link>,
    ctx: AdapterContext,
    broker: String,
    commands: Option<Commands>,
) {
    let mut backoff = RECONNECT_INITIAL;
    let mut failures = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                {
                    let mut state = link.lock();
                    state.up = true;
                    state.connects += 1;
                }
                ctx.metrics.link_up.set(1);
                if failures > 0 {
                    tracing::info!(adapter = ctx.name, broker = %broker, failed_attempts = failures, "line mqtt adapter: connected to the broker again");
                } else {
                    tracing::info!(adapter = ctx.name, broker = %broker, "line mqtt adapter: connected to the broker");
                }
                failures = 0;
                backoff = RECONNECT_INITIAL;
                link.changed.notify_one();
                // Clean sessions: subscribe again on every connection.
                if let Some(c) = &commands
                    && let Err(e) = c.client.try_subscribe(c.topics.recipe_command.clone(), QoS::AtLeastOnce)
                {
                    tracing::warn!(error = %e, "line mqtt adapter: cannot subscribe to recipe commands");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(c) = commands.as_ref().filter(|c| p.topic == c.topics.recipe_command) {
                    let (client, topic, switch) = (c.client.clone(), c.topics.recipe.clone(), Arc::clone(&c.switch));
                    tokio::spawn(Commands::recipe(client, topic, switch, c.audit.clone(), p.payload.to_vec()));
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut state = link.lock();
                if let Some(sent) = state.queued.pop_front()
                    && pkid != 0
                {
                    state.inflight.insert(pkid, sent);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let sent = link.lock().inflight.remove(&ack.pkid);
                if let Some(sent) = sent {
                    ctx.metrics.write_seconds.observe(sent.at.elapsed().as_secs_f64());
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                let (was_up, lost) = {
                    let mut guard = link.lock();
                    let state = &mut *guard;
                    let was_up = std::mem::replace(&mut state.up, false);
                    // Everything the client still holds is discarded: on the next connection
                    // rumqttc would retransmit it, possibly after its window.
                    eventloop.clean();
                    eventloop.pending.clear();
                    eventloop.state = MqttState::new(MAX_INFLIGHT, false);
                    let lost =
                        state.queued.drain(..).chain(state.inflight.drain().map(|(_, s)| s)).filter(|s| s.part).count();
                    (was_up, lost as u64)
                };
                ctx.metrics.write_errors.inc();
                ctx.metrics.undelivered.inc_by(lost);
                ctx.metrics.link_up.set(0);
                if failures == 0 {
                    tracing::error!(adapter = ctx.name, broker = %broker, error = %e, unacknowledged = lost, "line mqtt adapter: no link to the broker; reconnecting with backoff (actions whose window passes meanwhile are counted undelivered; logged once per outage)");
                }
                failures += 1;
                if was_up {
                    link.changed.notify_one();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::line::event::{LineAction, LineVerdict, PartOutcome};

    fn ctx() -> AdapterContext {
        AdapterContext::detached("mqtt", Duration::from_millis(10))
    }

    fn outcome(deadline: Instant) -> PartOutcome {
        PartOutcome {
            result_id: 7,
            camera: 0,
            seq: 3,
            part_id: None,
            verdict: LineVerdict::Ng,
            failsafe: None,
            class_code: 1,
            action: LineAction::Reject,
            deadline,
            decided_at: deadline - Duration::from_millis(50),
        }
    }

    #[test]
    fn topics_and_routes() {
        let t = Topics::new("plant/line1");
        assert_eq!(t.reject, "plant/line1/reject");
        let o = outcome(Instant::now());
        assert_eq!(t.route(&LineEvent::Result(o)), ("plant/line1/result", QoS::AtLeastOnce, false));
        let reject = LineEvent::Reject { outcome: o, pulse: Duration::from_millis(20) };
        assert_eq!(t.route(&reject), ("plant/line1/reject", QoS::AtLeastOnce, false));
        assert_eq!(t.route(&LineEvent::StopLine { outcome: o }).0, "plant/line1/stop_line");
        let status = LineEvent::Status(StationStatus { ready: true, error: ErrorCode::None });
        assert_eq!(t.route(&status), ("plant/line1/status", QoS::AtLeastOnce, true));
        assert_eq!(t.route(&LineEvent::Heartbeat(true)), ("plant/line1/heartbeat", QoS::AtMostOnce, false));
    }

    #[test]
    fn windows_end_at_the_deadline_or_the_fire_window() {
        let ctx = ctx();
        let deadline = Instant::now() + Duration::from_millis(100);
        let o = outcome(deadline);
        assert_eq!(window_end(&LineEvent::Result(o), &ctx), Some(deadline));
        let reject = LineEvent::Reject { outcome: o, pulse: Duration::from_millis(20) };
        assert_eq!(window_end(&reject, &ctx), Some(deadline + Duration::from_millis(10)));
        assert_eq!(window_end(&LineEvent::Heartbeat(false), &ctx), None);
        let will: serde_json::Value = serde_json::from_str(&last_will_payload()).unwrap();
        assert_eq!(will["ready"], false);
        assert_eq!(will["error"], "offline");
    }

    /// With no broker the link stays down: parts wait in the backlog and are counted
    /// undelivered when their window closes, never handed to the client.
    #[tokio::test(flavor = "current_thread")]
    async fn a_down_link_counts_expired_parts_undelivered() {
        let ctx = ctx();
        let undelivered = ctx.metrics.undelivered.clone();
        let link_up = ctx.metrics.link_up.clone();
        // A port nothing listens on: bind, then drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = MqttConfig {
            broker: format!("127.0.0.1:{port}"),
            client_id: "t".into(),
            topic_prefix: "t".into(),
            keep_alive_s: 5,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(run(cfg, rx, ctx));
        let now = Instant::now();
        tx.send(LineEvent::Result(outcome(now + Duration::from_millis(30)))).await.unwrap();
        tx.send(LineEvent::Reject {
            outcome: outcome(now - Duration::from_millis(1)),
            pulse: Duration::from_millis(20),
        })
        .await
        .unwrap();
        // Already past its window: counted at once.
        tx.send(LineEvent::Reject { outcome: outcome(now - Duration::from_secs(1)), pulse: Duration::from_millis(20) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(undelivered.get(), 3);
        assert_eq!(link_up.get(), 0);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
