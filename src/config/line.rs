//! `[line]`: how verdicts reach the production line — when each part must be acted on (its
//! deadline), what happens when no verdict is ready in time (the fail-safe), and the adapters
//! that carry actions to the PLC (Modbus TCP), a broker (MQTT), a web service (webhook) or a
//! program / stdout (bench use). Several adapters may run at once.

use super::timing::{self, MAX_DURATION_MS};
use super::validate::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;

/// The line output. Absent = verdicts only go to results, store and archive.
#[derive(Clone, Debug, Deserialize)]
pub struct LineConfig {
    /// Time from a part's capture (or PLC trigger) to the moment it reaches the reject actuator.
    /// Set this or `delay_counts`.
    #[serde(default)]
    pub delay_ms: Option<f64>,
    /// The same distance in encoder counts; the deadline is `delay_counts / encoder_counts_per_s`
    /// after capture (or trigger). Needs `encoder_counts_per_s`.
    #[serde(default)]
    pub delay_counts: Option<u64>,
    /// The line's encoder rate, counts per second, for `delay_counts`.
    #[serde(default)]
    pub encoder_counts_per_s: Option<f64>,
    /// A verdict must be ready this long before the deadline (room for the write to the PLC);
    /// a later one is recorded as late and the fail-safe acts instead.
    #[serde(default = "default_margin_ms")]
    pub margin_ms: f64,
    /// How long the reject output stays on.
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: f64,
    /// How late after its deadline a reject may still fire; default half of `pulse_ms`. Set it
    /// from the part's length on the line: a later pulse would hit too little of the part, or
    /// its neighbour, so it is counted as a deadline miss and not fired.
    #[serde(default)]
    pub fire_window_ms: Option<f64>,
    /// Run the line's threads with real-time scheduling (`SCHED_FIFO`; needs `CAP_SYS_NICE`,
    /// else a warning and normal priority), so rejects fire on time when the CPU is saturated.
    #[serde(default = "yes")]
    pub realtime: bool,
    /// With `realtime`: the slowest CPU wake-up the station allows while it runs, in µs (a PM QoS
    /// request on `/dev/cpu_dma_latency`; needs root or `deploy/60-linesight-cpu-latency.rules`).
    /// 0 (default): idle CPUs poll, so the line thread wakes at once — the most power. A
    /// fanless box may trade some timing for heat with e.g. 50.
    #[serde(default)]
    pub cpu_wake_latency_us: u32,
    /// What happens to a part with no usable verdict by `deadline - margin`: `reject`
    /// (default), `pass`, or `stop_line`.
    #[serde(default)]
    pub failsafe: FailsafeAction,
    /// Period of the heartbeat the PLC watches (toggled value), in milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Append one JSON line per part (its deadline, action, fire time, late verdicts) to this
    /// file, relative to the config file: the reject audit trail.
    #[serde(default)]
    pub events: Option<std::path::PathBuf>,
    #[serde(default)]
    pub modbus: Option<ModbusConfig>,
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub command: Option<CommandConfig>,
}

/// The fail-safe action for a part without a usable verdict in time.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailsafeAction {
    /// Reject the part at its deadline (safe default: an unknown part never ships).
    #[default]
    Reject,
    /// Let it pass (lines where a false reject costs more than an escape; choose with care).
    Pass,
    /// Stop the line at once (the stop-line output), and reject the part too.
    StopLine,
}

impl FailsafeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailsafeAction::Reject => "reject",
            FailsafeAction::Pass => "pass",
            FailsafeAction::StopLine => "stop_line",
        }
    }
}

/// Modbus TCP: the station is the client, the PLC the server. See the README's register map.
#[derive(Clone, Debug, Deserialize)]
pub struct ModbusConfig {
    /// The PLC's `IP:PORT` (Modbus TCP is port 502).
    pub address: String,
    /// Unit identifier (255 = the device itself, common for Modbus TCP).
    #[serde(default = "default_unit_id")]
    pub unit_id: u16,
    /// Give up on one request after this long (counted as a write error).
    #[serde(default = "default_modbus_timeout_ms")]
    pub timeout_ms: u64,
    /// How often the input block (trigger, acquisition id, results ack) is read.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Reconnect backoff: first wait, doubled up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Results held until the PLC acknowledges them (1..=64); one more sets the overrun flag.
    #[serde(default = "default_results_buffer")]
    pub results_buffer: u16,
    #[serde(default)]
    pub map: RegisterMap,
}

/// Where each handshake item lives in the PLC's address space (0-based protocol addresses).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RegisterMap {
    /// First of the station's output holding registers (`STATUS_BLOCK_LEN` of them, written
    /// at once): status bits, heartbeat, error code, result id, verdict, class code, camera,
    /// part number, results buffered.
    #[serde(default)]
    pub status_register: u16,
    /// First of the PLC's input holding registers (`INPUT_BLOCK_LEN`, read every `poll_ms`):
    /// trigger counter, acquisition id, results ack.
    #[serde(default = "default_input_register")]
    pub input_register: u16,
    /// Coil pulsed at each reject's deadline for `pulse_ms`.
    #[serde(default)]
    pub reject_coil: u16,
    /// Coil set when the fail-safe action is `stop_line` (cleared by the PLC or at restart).
    #[serde(default = "default_stop_line_coil")]
    pub stop_line_coil: u16,
}

impl Default for RegisterMap {
    fn default() -> Self {
        Self {
            status_register: 0,
            input_register: default_input_register(),
            reject_coil: 0,
            stop_line_coil: default_stop_line_coil(),
        }
    }
}

/// Holding registers in the station's output block.
pub const STATUS_BLOCK_LEN: u16 = 10;
/// Holding registers in the PLC's input block.
pub const INPUT_BLOCK_LEN: u16 = 4;

/// MQTT: QoS 1 JSON messages under `topic_prefix`; the status topic is retained and carries the
/// last will (`{"event":"status","ready":false,"error":"offline"}`).
#[derive(Clone, Debug, Deserialize)]
pub struct MqttConfig {
    /// The broker's `HOST:PORT` (plain TCP; 1883).
    pub broker: String,
    /// Client id; must be unique on the broker.
    #[serde(default = "default_mqtt_client_id")]
    pub client_id: String,
    /// Topics: `{prefix}/result`, `{prefix}/reject`, `{prefix}/stop_line`, `{prefix}/status`,
    /// `{prefix}/heartbeat`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// MQTT keep-alive, seconds (the broker publishes the last will after 1.5× this).
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
}

/// HTTP webhook: each part's result is POSTed as JSON as soon as it is decided, retried until
/// its deadline, never after.
#[derive(Clone, Debug, Deserialize)]
pub struct WebhookConfig {
    /// `http://HOST:PORT/PATH` (plain HTTP).
    pub url: String,
    /// One attempt's time limit.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// Further attempts after a failure, each only while the deadline has not passed.
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
    /// Optional `Authorization: Bearer` token.
    #[serde(default)]
    pub token: Option<String>,
}

/// Every line event as one JSON line, to stdout or to a program's standard input (bench use).
#[derive(Clone, Debug, Deserialize)]
pub struct CommandConfig {
    /// Program and arguments; absent = the station's own stdout.
    #[serde(default)]
    pub program: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

/// Fastest encoder the line may declare, counts per second.
const MAX_ENCODER_COUNTS_PER_S: f64 = 1e9;
fn default_margin_ms() -> f64 {
    5.0
}
fn default_pulse_ms() -> f64 {
    20.0
}
fn default_heartbeat_ms() -> u64 {
    500
}
fn default_unit_id() -> u16 {
    255
}
fn default_modbus_timeout_ms() -> u64 {
    50
}
fn default_poll_ms() -> u64 {
    5
}
fn default_reconnect_initial_ms() -> u64 {
    100
}
fn default_reconnect_max_ms() -> u64 {
    2000
}
fn default_results_buffer() -> u16 {
    8
}
fn default_input_register() -> u16 {
    100
}
fn default_stop_line_coil() -> u16 {
    1
}
fn default_mqtt_client_id() -> String {
    "linesight".into()
}
fn default_topic_prefix() -> String {
    "linesight".into()
}
fn default_keep_alive_s() -> u64 {
    5
}
fn default_webhook_timeout_ms() -> u64 {
    50
}
fn default_webhook_retries() -> u32 {
    2
}

impl LineConfig {
    /// The time from capture (or trigger) to the reject actuator, in seconds.
    pub fn delay_s(&self) -> f64 {
        match (self.delay_ms, self.delay_counts, self.encoder_counts_per_s) {
            (Some(ms), _, _) => ms / 1000.0,
            (None, Some(counts), Some(rate)) if rate > 0.0 => counts as f64 / rate,
            _ => 0.0, // refused by `validate`
        }
    }
}

/// Every problem with `[line]`, each with its path. `triggered_cameras`: how many cameras have
/// `trigger = "line"`.
pub(super) fn validate(line: &LineConfig, triggered_cameras: usize) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut check = |ok: bool, path: &str, value: &dyn std::fmt::Debug, problem: &str| {
        if !ok {
            errors.push(ConfigError { path: path.into(), value: format!("{value:?}"), problem: problem.into() });
        }
    };
    match (line.delay_ms, line.delay_counts, line.encoder_counts_per_s) {
        (Some(_), Some(_), _) => {
            check(false, "line.delay_ms", &line.delay_ms, "set delay_ms or delay_counts, not both")
        }
        (None, None, _) => check(
            false,
            "line.delay_ms",
            &"missing",
            "set delay_ms (time from capture to the reject actuator) or delay_counts with encoder_counts_per_s",
        ),
        (None, Some(counts), rate) => {
            let rate_ok = rate.is_some_and(|r| r.is_finite() && r > 0.0 && r <= MAX_ENCODER_COUNTS_PER_S);
            check(
                rate_ok,
                "line.encoder_counts_per_s",
                &rate,
                "delay_counts needs the encoder's rate in counts per second, > 0 and at most 1000000000",
            );
            check(
                !rate_ok || timing::checked_line_delay(line).is_some(),
                "line.delay_counts",
                &counts,
                "delay_counts / encoder_counts_per_s must be more than 0 and at most 3600 s (1 hour)",
            );
        }
        (Some(ms), None, _) => check(
            timing::checked_line_delay(line).is_some(),
            "line.delay_ms",
            &ms,
            "must be a number of milliseconds, more than 0 and at most 3600000 (1 hour)",
        ),
    }
    check(
        timing::checked_millis_f64(line.margin_ms).is_some(),
        "line.margin_ms",
        &line.margin_ms,
        "must be 0..=3600000 ms",
    );
    // Compared as the durations the line runs on (nanoseconds), once both are usable.
    let (delay, margin) = (timing::checked_line_delay(line), timing::checked_millis_f64(line.margin_ms));
    check(
        delay.zip(margin).is_none_or(|(delay, margin)| margin < delay),
        "line.margin_ms",
        &line.margin_ms,
        "must be smaller than the delay, or no verdict could ever be in time",
    );
    check(
        line.pulse_ms.is_finite() && line.pulse_ms > 0.0 && line.pulse_ms <= 10_000.0,
        "line.pulse_ms",
        &line.pulse_ms,
        "must be between 0 and 10000 ms",
    );
    if let Some(w) = line.fire_window_ms {
        check(
            w.is_finite() && w >= 0.0 && w <= line.pulse_ms,
            "line.fire_window_ms",
            &w,
            "must be between 0 and pulse_ms",
        );
    }
    check(
        (10..=60_000).contains(&line.heartbeat_ms),
        "line.heartbeat_ms",
        &line.heartbeat_ms,
        "must be 10..=60000 ms (the PLC's watchdog needs a steady beat)",
    );
    check(
        line.cpu_wake_latency_us <= 1_000_000,
        "line.cpu_wake_latency_us",
        &line.cpu_wake_latency_us,
        "must be 0..=1000000 µs (0 = idle CPUs poll)",
    );
    let adapters = [line.modbus.is_some(), line.mqtt.is_some(), line.webhook.is_some(), line.command.is_some()];
    check(
        adapters.iter().any(|a| *a),
        "line",
        &"no adapter",
        "add at least one of [line.modbus], [line.mqtt], [line.webhook], [line.command]",
    );
    if triggered_cameras > 0 {
        check(
            line.modbus.is_some(),
            "camera.trigger",
            &"line",
            "triggered cameras take their trigger from the PLC: add [line.modbus]",
        );
    }
    if let Some(m) = &line.modbus {
        errors.extend(validate_modbus(m));
    }
    if let Some(q) = &line.mqtt {
        let mut check = |ok: bool, path: &str, value: &dyn std::fmt::Debug, problem: &str| {
            if !ok {
                errors.push(ConfigError { path: path.into(), value: format!("{value:?}"), problem: problem.into() });
            }
        };
        check(
            q.broker.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
            "line.mqtt.broker",
            &q.broker,
            "expected HOST:PORT, e.g. 127.0.0.1:1883",
        );
        check(!q.client_id.is_empty(), "line.mqtt.client_id", &q.client_id, "must not be empty");
        check(
            !q.topic_prefix.is_empty() && !q.topic_prefix.contains(['#', '+']) && !q.topic_prefix.ends_with('/'),
            "line.mqtt.topic_prefix",
            &q.topic_prefix,
            "a topic without wildcards (# +) and without a trailing /",
        );
        check((1..=3600).contains(&q.keep_alive_s), "line.mqtt.keep_alive_s", &q.keep_alive_s, "1..=3600 seconds");
    }
    if let Some(w) = &line.webhook {
        let mut check = |ok: bool, path: &str, value: &dyn std::fmt::Debug, problem: &str| {
            if !ok {
                errors.push(ConfigError { path: path.into(), value: format!("{value:?}"), problem: problem.into() });
            }
        };
        check(
            w.url.starts_with("http://") && w.url.len() > "http://".len(),
            "line.webhook.url",
            &w.url,
            "expected http://HOST:PORT/PATH (plain HTTP; put TLS in a local proxy)",
        );
        check((1..=60_000).contains(&w.timeout_ms), "line.webhook.timeout_ms", &w.timeout_ms, "must be 1..=60000 ms");
        check(w.retries <= 10, "line.webhook.retries", &w.retries, "at most 10");
    }
    if let Some(CommandConfig { program: Some(p) }) = &line.command
        && p.first().is_none_or(|prog| prog.is_empty())
    {
        errors.push(ConfigError {
            path: "line.command.program".into(),
            value: format!("{p:?}"),
            problem: "must name a program (leave program out for stdout)".into(),
        });
    }
    errors
}

/// The register map must fit the 16-bit address space, and no two items may overlap.
fn validate_modbus(m: &ModbusConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut check = |ok: bool, path: &str, value: &dyn std::fmt::Debug, problem: &str| {
        if !ok {
            errors.push(ConfigError { path: path.into(), value: format!("{value:?}"), problem: problem.into() });
        }
    };
    check(
        m.address.parse::<SocketAddr>().is_ok(),
        "line.modbus.address",
        &m.address,
        "expected IP:PORT, e.g. 192.168.0.10:502",
    );
    check(m.unit_id <= 255, "line.modbus.unit_id", &m.unit_id, "a unit id is 0..=255 (255 = the device itself)");
    check((1..=10_000).contains(&m.timeout_ms), "line.modbus.timeout_ms", &m.timeout_ms, "1..=10000 ms");
    check((1..=1000).contains(&m.poll_ms), "line.modbus.poll_ms", &m.poll_ms, "1..=1000 ms");
    check(
        (1..=MAX_DURATION_MS).contains(&m.reconnect_initial_ms),
        "line.modbus.reconnect_initial_ms",
        &m.reconnect_initial_ms,
        "1..=3600000 ms (1 hour)",
    );
    check(
        (m.reconnect_initial_ms..=MAX_DURATION_MS).contains(&m.reconnect_max_ms),
        "line.modbus.reconnect_max_ms",
        &m.reconnect_max_ms,
        "must be ≥ reconnect_initial_ms and at most 3600000 ms (1 hour)",
    );
    check((1..=64).contains(&m.results_buffer), "line.modbus.results_buffer", &m.results_buffer, "1..=64 results");
    let map = &m.map;
    let fits = |start: u16, len: u16| u32::from(start) + u32::from(len) <= 65_536;
    check(
        fits(map.status_register, STATUS_BLOCK_LEN),
        "line.modbus.map.status_register",
        &map.status_register,
        &format!("the status block is {STATUS_BLOCK_LEN} registers and must end by 65535"),
    );
    check(
        fits(map.input_register, INPUT_BLOCK_LEN),
        "line.modbus.map.input_register",
        &map.input_register,
        &format!("the input block is {INPUT_BLOCK_LEN} registers and must end by 65535"),
    );
    let (s, i) = (u32::from(map.status_register), u32::from(map.input_register));
    let overlap = s < i + u32::from(INPUT_BLOCK_LEN) && i < s + u32::from(STATUS_BLOCK_LEN);
    check(
        !overlap,
        "line.modbus.map.input_register",
        &map.input_register,
        &format!(
            "overlaps the status block (holding registers {}..={}): the PLC's inputs and the station's outputs must not share registers",
            s,
            s + u32::from(STATUS_BLOCK_LEN) - 1
        ),
    );
    check(
        map.reject_coil != map.stop_line_coil,
        "line.modbus.map.stop_line_coil",
        &map.stop_line_coil,
        "must differ from reject_coil",
    );
    errors
}
