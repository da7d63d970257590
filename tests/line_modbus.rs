//! The Modbus TCP line adapter through the real binary, against a PLC no one here wrote: a
//! pymodbus server (`tests/peers/plc_sim.py`) that records every write it receives, at arrival,
//! on the same `CLOCK_MONOTONIC` as the station's audit trail (`[line] events`).
//!
//! Timing bounds are generous (the machine is shared); the figures are printed (run with
//! `--nocapture` to see them).

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bound for "fired at its deadline" the tests assert: far looser than the fire window, so
/// a busy machine does not fail them, yet a reject sent "when ready" (150 ms early) would.
const LATE_BOUND_NS: u64 = 20_000_000;
/// Misses and unwritten rejects this close together are one host stall: the fire window of the
/// fire-window test's 30 ms pulses (`[line] fire_window_ms` defaults to half the pulse).
const SAME_STALL_NS: u64 = 15_000_000;

// Register map used by every test (the defaults, written out).
const STATUS: u64 = 0;
const REJECT_COIL: u64 = 0;
const STOP_LINE_COIL: u64 = 1;

// ---------------------------------------------------------------------------------------------
// The PLC

struct Plc {
    guard: Option<Guard>,
    port: u16,
    log: PathBuf,
}

impl Plc {
    /// Start the simulator on `port` (0 = a free one) logging to `log`.
    fn start(port: u16, log: &Path, extra: &[&str]) -> Self {
        let python = repo().join(".venv/bin/python");
        assert!(python.exists(), "no .venv: run `make setup` (scripts/python-env.sh installs pymodbus)");
        // A real PLC is dedicated hardware that answers within its scan time. The simulator gets
        // real-time priority where it can (`chrt` execs it, so the pid stays the simulator's), so
        // a busy machine does not make it miss writes the station sent in time.
        let realtime = Command::new("chrt").args(["-f", "5", "true"]).status().is_ok_and(|s| s.success());
        let mut command = if realtime {
            let mut c = Command::new("chrt");
            c.args(["-f", "5"]).arg(python);
            c
        } else {
            Command::new(python)
        };
        let mut child = command
            .arg(repo().join("tests/peers/plc_sim.py"))
            .args(["--port", &port.to_string(), "--log"])
            .arg(log)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the PLC simulator did not start: {line:?}"));
        Plc { guard: Some(Guard(child)), port, log: log.to_path_buf() }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        self.guard.take();
    }

    fn records(&self) -> Vec<Value> {
        read_jsonl(&self.log)
    }
}

/// The PLC's log, decoded.
struct PlcLog(Vec<Value>);

impl PlcLog {
    fn writes(&self, fc: u64, address: u64) -> impl Iterator<Item = &Value> {
        self.0.iter().filter(move |r| r["kind"] == "write" && r["fc"] == fc && r["address"] == address)
    }

    /// Arrival times of reject-coil ON writes.
    fn reject_ons(&self) -> Vec<u64> {
        self.writes(5, REJECT_COIL).filter(|r| r["values"][0] == true).map(|r| r["t_ns"].as_u64().unwrap()).collect()
    }

    fn reject_offs(&self) -> Vec<u64> {
        self.writes(5, REJECT_COIL).filter(|r| r["values"][0] == false).map(|r| r["t_ns"].as_u64().unwrap()).collect()
    }

    /// Every output-block write: (arrival, the 10 registers).
    fn status_writes(&self) -> Vec<(u64, Vec<u64>)> {
        self.writes(16, STATUS)
            .map(|r| {
                let values: Vec<u64> = r["values"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
                assert_eq!(values.len(), 10, "the output block is written whole: {r}");
                (r["t_ns"].as_u64().unwrap(), values)
            })
            .collect()
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|r| r["kind"] == kind).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The station

/// A synthetic camera (`camera_extra` lines go in its table) feeding `[line]` with a Modbus
/// adapter at `plc`, parts reaching the actuator 150 ms after capture.
fn station_config(dir: &Path, fps: f64, camera_extra: &str, pulse_ms: u64, modbus_extra: &str, plc: &str) -> PathBuf {
    let camera =
        synthetic_station(fps, camera_extra, "").replace("seed = 11\n", "seed = 11\nwidth = 256\nheight = 256\n");
    let text = format!(
        r#"{camera}
[line]
delay_ms = 150
margin_ms = 10
pulse_ms = {pulse_ms}
heartbeat_ms = 100
events = "{events}"

[line.modbus]
address = "{plc}"
timeout_ms = 100
poll_ms = 5
reconnect_initial_ms = 50
reconnect_max_ms = 500
{modbus_extra}
"#,
        events = dir.join("events.jsonl").display()
    );
    write_config(dir, &text)
}

fn audit(dir: &Path) -> Vec<Value> {
    read_jsonl(&dir.join("events.jsonl"))
}

fn terminal(audit: &[Value]) -> Vec<&Value> {
    audit.iter().filter(|r| ["fired", "passed", "missed"].contains(&r["fate"].as_str().unwrap())).collect()
}

fn ns(r: &Value, field: &str) -> u64 {
    r[field].as_u64().unwrap_or_else(|| panic!("no {field} in {r}"))
}

fn run_station(config: &Path, frames: u64) -> (Guard, SocketAddr, std::sync::Arc<Mutex<String>>) {
    let mut cmd = linesight_run();
    cmd.arg("--config").arg(config).args(["--max-frames", &frames.to_string()]);
    spawn_with_admin(cmd)
}

/// Match every `fired` record, in deadline order, to the PLC's reject-coil ON writes, in
/// arrival order: one each, arriving in `[deadline, deadline + LATE_BOUND]`. Returns
/// (arrival − deadline, arrival − fired) per part, ns.
fn match_rejects(fired: &[&Value], ons: &[u64]) -> Vec<(u64, u64)> {
    let mut fired: Vec<&Value> = fired.to_vec();
    fired.sort_by_key(|r| ns(r, "deadline_ns"));
    assert_eq!(ons.len(), fired.len(), "the PLC saw {} reject pulses for {} fired rejects", ons.len(), fired.len());
    let mut ons = ons.to_vec();
    ons.sort_unstable();
    fired
        .iter()
        .zip(&ons)
        .map(|(r, &on)| {
            let deadline = ns(r, "deadline_ns");
            assert!(
                on >= deadline,
                "reject for seq {} reached the PLC {} µs before its deadline",
                r["seq"],
                (deadline - on) / 1000
            );
            assert!(
                on <= deadline + LATE_BOUND_NS,
                "reject for seq {} reached the PLC {} ms after its deadline",
                r["seq"],
                (on - deadline) as f64 / 1e6
            );
            (on - deadline, on.saturating_sub(ns(r, "fired_ns")))
        })
        .collect()
}

/// Which fired rejects reached the PLC: each reject-coil ON write is given to one fired reject whose
/// window `[deadline, deadline + LATE_BOUND]` holds it — the latest such deadline, taking the ON
/// writes from the last one back (the mirror of earliest-deadline-first, so as many are matched as
/// can be, and an ON goes to the part it followed, not to a neighbour whose window it also falls
/// in at 60 parts/s). Returns (delivered, not delivered); ON writes left without a part show as
/// fewer delivered than writes.
fn split_delivered<'a>(fired: &[&'a Value], ons: &[u64]) -> (Vec<&'a Value>, Vec<&'a Value>) {
    let mut by_deadline: Vec<&Value> = fired.to_vec();
    by_deadline.sort_by_key(|r| ns(r, "deadline_ns"));
    let mut taken = vec![false; by_deadline.len()];
    let mut ons = ons.to_vec();
    ons.sort_unstable();
    for &on in ons.iter().rev() {
        let pick = (0..by_deadline.len()).rev().find(|&i| {
            let deadline = ns(by_deadline[i], "deadline_ns");
            !taken[i] && deadline <= on && on <= deadline + LATE_BOUND_NS
        });
        if let Some(i) = pick {
            taken[i] = true;
        }
    }
    let (mut delivered, mut undelivered) = (Vec::new(), Vec::new());
    for (r, t) in by_deadline.into_iter().zip(taken) {
        if t { delivered.push(r) } else { undelivered.push(r) }
    }
    (delivered, undelivered)
}

#[test]
fn an_on_write_goes_to_the_part_it_followed() {
    // The CI failure this answers: parts 16.7 ms apart, the first reject not written; the second's
    // ON (1 ms after its deadline) also lies in the first's 20 ms window.
    let part =
        |seq: u64, deadline_ms: f64| serde_json::json!({ "seq": seq, "deadline_ns": (deadline_ms * 1e6) as u64 });
    let parts = [part(1, 100.0), part(2, 116.7), part(3, 133.4)];
    let refs: Vec<&Value> = parts.iter().collect();
    let ons = [117_700_000, 134_400_000];
    let (delivered, undelivered) = split_delivered(&refs, &ons);
    assert_eq!(delivered.iter().map(|r| r["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(undelivered.iter().map(|r| r["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1]);
    // A late ON and its neighbour's, both matched (as many as can be).
    let (delivered, _) = split_delivered(&refs[..2], &[115_000_000, 125_000_000]);
    assert_eq!(delivered.len(), 2);
    // An ON in no window is nobody's.
    let (delivered, undelivered) = split_delivered(&refs, &[50_000_000]);
    assert!(delivered.is_empty() && undelivered.len() == 3);
}

fn percentiles_ms(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    if v.is_empty() {
        return "n=0".into();
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1e6;
    format!("n={} p50={:.3} ms p99={:.3} ms max={:.3} ms", v.len(), at(0.5), at(0.99), at(1.0))
}

/// How many separate host stalls the moments `at` (ns) fall in — when the line thread noticed a
/// miss, or fired a reject the I/O task then did not write: instants within `window_ns` of the
/// previous one belong to the same stall.
fn stalls_at(mut at: Vec<u64>, window_ns: u64) -> usize {
    at.sort_unstable();
    at.windows(2).filter(|w| w[1] - w[0] > window_ns).count() + usize::from(!at.is_empty())
}

#[test]
fn misses_noticed_together_are_one_stall() {
    // The CI failure this counting answers: four rejects due during one ~90 ms stall, all
    // noticed when the line thread ran again, and a separate miss a second later.
    let noticed: Vec<u64> = [1000.0, 1000.4, 1000.9, 1001.2, 2000.0].map(|ms: f64| (ms * 1e6) as u64).to_vec();
    assert_eq!(stalls_at(noticed.clone(), SAME_STALL_NS), 2);
    assert_eq!(stalls_at(noticed[..1].to_vec(), SAME_STALL_NS), 1);
    assert_eq!(stalls_at(Vec::new(), SAME_STALL_NS), 0);
}

fn short_id(result_id: u64) -> u64 {
    (result_id - 1) % 65_535 + 1
}

/// Distinct result ids in the order the station presented them (register +3, 0 = none).
fn presented_ids(status: &[(u64, Vec<u64>)]) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    for (_, v) in status {
        if v[3] != 0 && ids.last() != Some(&v[3]) {
            ids.push(v[3]);
        }
    }
    ids
}

// ---------------------------------------------------------------------------------------------
// 1. Reject timing

#[test]
fn every_fired_reject_reaches_the_plc_once_inside_its_fire_window() {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let mut plc = Plc::start(0, &dir.path().join("plc.jsonl"), &["--auto-ack"]);
    // 60 parts/s with 30 ms pulses: consecutive NG parts overlap, each must still be an edge.
    let config = station_config(dir.path(), 60.0, "", 30, "", &plc.address());
    let (mut station, _admin, log) = run_station(&config, 400);
    let status = wait_exit(&mut station, Duration::from_secs(40));
    assert!(status.success(), "station failed:\n{}", log.lock().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    plc.kill();

    let audit = audit(dir.path());
    let parts = terminal(&audit);
    assert_eq!(parts.len(), 400, "every captured part has one fate in the audit trail");
    let fired: Vec<&Value> = parts.iter().copied().filter(|r| r["fate"] == "fired").collect();
    let passed = parts.iter().filter(|r| r["fate"] == "passed").count();
    assert!(fired.len() >= 50 && passed >= 50, "a mix of rejects ({}) and passes ({passed}) is needed", fired.len());
    // A miss is the line thread waking later than its fire window (15 ms here) — a timing
    // figure, which belongs to a benchmark on a shared machine. What this test holds the line to
    // is that misses are rare, recorded as such (never fired late: the PLC count below), and
    // printed loudly so a regression shows; a line thread that waits on anything but its clock
    // misses far more.
    let missed: Vec<&Value> = parts.iter().copied().filter(|r| r["fate"] == "missed").collect();
    for r in &missed {
        eprintln!(
            "WARNING: modbus: the reject for seq {} missed its fire window: the line thread got to it {:.1} ms after its deadline",
            r["seq"],
            ns(r, "missed_ns").saturating_sub(ns(r, "deadline_ns")) as f64 / 1e6
        );
    }
    let plc_log = PlcLog(plc.records());
    let ons = plc_log.reject_ons();
    // A reject the line thread fired but the I/O task got to past its window (the same host
    // stall, on the other thread) is not written late: it is counted undelivered and logged.
    let (delivered, undelivered) = split_delivered(&fired, &ons);
    for r in &undelivered {
        eprintln!(
            "WARNING: modbus: the reject for seq {} was fired but not written: the I/O task got to it past its window",
            r["seq"]
        );
    }
    assert!(
        undelivered.is_empty() || log.lock().unwrap().contains("rejects not delivered"),
        "rejects not written are reported in the station's log:\n{}",
        log.lock().unwrap()
    );
    // One host stall (the line thread descheduled for ~100 ms) makes every reject due during it
    // a miss, all noticed at the same instant when the thread runs again (and a reject the line
    // thread fired then may find the I/O task stalled too): such misses are one stall, counted
    // once. A line thread that waits on anything but its clock stalls again and again, and that
    // is what the limit catches.
    let instants = missed.iter().map(|r| ns(r, "missed_ns")).chain(undelivered.iter().map(|r| ns(r, "fired_ns")));
    let stalls = stalls_at(instants.collect(), SAME_STALL_NS);
    let allowed = (fired.len() / 100).max(1);
    assert!(
        stalls <= allowed,
        "{} of {} rejects missed their fire window and {} fired ones were not written on an idle link, in {stalls} separate stalls (at most {allowed} allowed):\n{}",
        missed.len(),
        missed.len() + fired.len(),
        undelivered.len(),
        log.lock().unwrap()
    );

    let log = plc_log;
    let stop_line: Vec<&Value> = log.writes(5, STOP_LINE_COIL).collect();
    assert_eq!(stop_line.len(), 1, "the stop-line coil is cleared once at start-up, and never set: {stop_line:?}");
    assert_eq!(stop_line[0]["values"][0], false);
    let timing = match_rejects(&delivered, &ons);
    // Every pulse ends: an OFF after each ON (before the next ON when they overlap).
    let offs = log.reject_offs();
    for (i, on) in ons.iter().enumerate() {
        let next_on = ons.get(i + 1).copied().unwrap_or(u64::MAX);
        assert!(offs.iter().any(|&off| off > *on && off <= next_on), "the pulse at {on} never went OFF");
    }
    let overlapping = ons.windows(2).filter(|w| w[1] - w[0] < 30_000_000).count();
    assert!(overlapping > 0, "no overlapping pulses: the overlap policy was not exercised");

    // Verdict → PLC: when each result was decided, against when the PLC first saw it presented.
    let status = log.status_writes();
    let mut first_seen: HashMap<u64, u64> = HashMap::new();
    for (t, v) in &status {
        first_seen.entry(v[3]).or_insert(*t);
    }
    let decided_to_plc: Vec<u64> = parts
        .iter()
        .filter_map(|r| Some(first_seen.get(&short_id(r["result_id"].as_u64()?))?.saturating_sub(ns(r, "decided_ns"))))
        .collect();
    assert!(decided_to_plc.len() >= parts.len() * 9 / 10, "most results were presented to the PLC");
    eprintln!(
        "modbus: {} parts, {} rejects ({} overlapping)\n  PLC ON arrival − deadline: {}\n  PLC ON arrival − line thread fire: {}\n  verdict → result presented at the PLC: {}",
        parts.len(),
        fired.len(),
        overlapping,
        percentiles_ms(timing.iter().map(|t| t.0).collect()),
        percentiles_ms(timing.iter().map(|t| t.1).collect()),
        percentiles_ms(decided_to_plc),
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Handshake

#[test]
fn plc_triggers_become_parts_and_results_are_presented_in_order_and_acked() {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    // A PLC that waits for station-ready, then triggers 40 parts at 10 Hz and acks each result.
    let mut plc = Plc::start(
        0,
        &dir.path().join("plc.jsonl"),
        &["--trigger-hz", "10", "--trigger-when-ready", "--trigger-count", "40", "--auto-ack", "--ack-delay-ms", "2"],
    );
    let config = station_config(dir.path(), 30.0, "trigger = \"line\"", 20, "", &plc.address());
    let (mut station, _admin, log) = run_station(&config, 40);
    let status = wait_exit(&mut station, Duration::from_secs(40));
    assert!(status.success(), "station failed:\n{}", log.lock().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    plc.kill();

    let plc_log = PlcLog(plc.records());
    let triggers: Vec<u64> = plc_log.of_kind("trigger").iter().map(|r| r["acquisition_id"].as_u64().unwrap()).collect();
    assert_eq!(triggers, (1..=40).collect::<Vec<_>>(), "the PLC made 40 triggers");

    // Every trigger became one part, whose part id is the acquisition id.
    let audit = audit(dir.path());
    let parts = terminal(&audit);
    let mut part_ids: Vec<u64> =
        parts.iter().map(|r| r["part_id"].as_str().expect("a part id").parse().expect("numeric")).collect();
    part_ids.sort_unstable();
    assert_eq!(part_ids, triggers, "each acquisition id is exactly one part");

    // Results were presented in decision order, each with its part number, and each acked.
    let status = plc_log.status_writes();
    let presented = presented_ids(&status);
    let mut decided: Vec<&Value> = parts.clone();
    decided.sort_by_key(|r| r["result_id"].as_u64().unwrap());
    let expected: Vec<u64> = decided.iter().map(|r| short_id(r["result_id"].as_u64().unwrap())).collect();
    assert_eq!(presented, expected, "results presented in order, none skipped, none twice");
    let part_of: HashMap<u64, u64> = decided
        .iter()
        .map(|r| (short_id(r["result_id"].as_u64().unwrap()), r["part_id"].as_str().unwrap().parse().unwrap()))
        .collect();
    for (_, v) in status.iter().filter(|(_, v)| v[3] != 0) {
        assert_eq!(v[7], part_of[&v[3]], "part number register of result {}: {v:?}", v[3]);
        assert_ne!(v[0] & 0b10, 0, "results-ready is set while a result is presented: {v:?}");
    }
    let acked: BTreeSet<u64> = plc_log.of_kind("ack").iter().map(|r| r["result_id"].as_u64().unwrap()).collect();
    assert_eq!(acked, expected.iter().copied().collect(), "the PLC acked every presented result");
    // After each ack the next result came (or results-ready cleared): never an acked id again.
    let mut done = BTreeSet::new();
    let mut last = 0;
    for (_, v) in &status {
        if v[3] != last {
            done.insert(last);
            last = v[3];
        }
        assert!(!done.contains(&v[3]) || v[3] == 0, "result {} presented again after it was replaced", v[3]);
        assert_eq!(v[0] & 0b100, 0, "no overrun when the PLC acks: {v:?}");
    }
}

/// A PLC job change: the PLC writes a recipe number into its input block (+3); every camera
/// switches from its next frame, the station acknowledges in its output block (+9) once they
/// have, and a number that names no recipe is refused (65535) without switching anything.
#[test]
fn a_plc_job_change_switches_the_recipe_and_is_acknowledged() {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let mut plc = Plc::start(0, &dir.path().join("plc.jsonl"), &["--recipes", "2@0.6,1@1.6,7@2.6"]);
    let config = station_config(dir.path(), 30.0, "", 20, "", &plc.address());
    // Two recipes of the demo model; the second counts nothing (a region of interest of 1 pixel).
    let model = demo_model();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("[model]\npackage = \"{model}\"\n"),
        &format!(
            "[model]\n\n[[recipe]]\nname = \"inspect\"\npackage = \"{model}\"\n\n[[recipe]]\nname = \"blind\"\npackage = \"{model}\"\nroi_px = {{ cam = [[0, 0, 1, 1]] }}\n"
        ),
    );
    assert!(text.contains("[[recipe]]"), "{text}");
    let db = dir.path().join("linesight.db");
    let text = format!("{text}\n[store]\npath = \"{}\"\n\n[api]\nenabled = false\n", db.display());
    std::fs::write(&config, text).unwrap();
    let results = dir.path().join("results.jsonl");
    let mut cmd = linesight_run();
    cmd.arg("--config").arg(&config).args(["--max-frames", "120", "--results"]).arg(&results);
    let (mut station, _admin, log) = spawn_with_admin(cmd);
    let status = wait_exit(&mut station, Duration::from_secs(60));
    assert!(status.success(), "station failed:\n{}", log.lock().unwrap());
    plc.kill();

    let plc_log = PlcLog(plc.records());
    let requests: Vec<(u64, u64)> =
        plc_log.of_kind("recipe").iter().map(|r| (ns(r, "t_ns"), r["number"].as_u64().unwrap())).collect();
    assert_eq!(requests.iter().map(|r| r.1).collect::<Vec<_>>(), [2, 1, 7], "the PLC made its three requests");
    // The acknowledgement register, as the PLC saw it change.
    let mut acks: Vec<(u64, u64)> = Vec::new();
    for (t, v) in plc_log.status_writes() {
        if acks.last().is_none_or(|a| a.1 != v[9]) {
            acks.push((t, v[9]));
        }
    }
    let values: Vec<u64> = acks.iter().map(|a| a.1).filter(|v| *v != 0).collect();
    assert_eq!(values, [1, 2, 1, 65535], "acknowledged in turn, the unknown number refused: {acks:?}");
    for (number, requested_at) in [(2, requests[0].0), (1, requests[1].0)] {
        let acked_at = acks.iter().rev().find(|a| a.1 == number).unwrap().0;
        assert!(acked_at > requested_at, "recipe {number} acknowledged after it was asked for");
    }

    // Every record names its recipe; they run in the order the PLC asked; the refused request
    // switched nothing; the blind recipe rejected nothing.
    let records = read_jsonl(&results);
    let mut seen: Vec<&str> = Vec::new();
    for r in &records {
        let recipe = r["recipe"].as_str().expect("every record names its recipe");
        if seen.last() != Some(&recipe) {
            seen.push(recipe);
        }
        if recipe == "blind" {
            assert_ne!(r["verdict"], "NG", "the blind recipe counts nothing: {r}");
        }
    }
    assert_eq!(seen, ["inspect", "blind", "inspect"], "records in seq order follow the job changes");
    assert!(records.iter().any(|r| r["recipe"] == "inspect" && r["verdict"] == "NG"), "the inspecting recipe rejects");
    // Both job changes are in the store's audit log, the refused one is not.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn.prepare("SELECT who, action, target, old, new FROM audit ORDER BY id").unwrap();
    let rows: Vec<(String, String, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let row = |old: &str, new: &str| ("plc".into(), "recipe.activate".into(), "cam".into(), old.into(), new.into());
    assert_eq!(rows, [row("inspect", "blind"), row("blind", "inspect")]);
}

#[test]
fn unacknowledged_results_overrun_the_buffer() {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let mut plc = Plc::start(0, &dir.path().join("plc.jsonl"), &[]);
    let config = station_config(dir.path(), 30.0, "", 20, "results_buffer = 2", &plc.address());
    let (mut station, admin, log) = run_station(&config, 150);
    let overrun = wait_for(
        Duration::from_secs(20),
        || format!("the overrun metric\n{}", log.lock().unwrap()),
        || metric(admin, "linesight_line_results_overrun_total").filter(|v| *v > 0.0),
    );
    let status = wait_exit(&mut station, Duration::from_secs(30));
    assert!(status.success(), "station failed:\n{}", log.lock().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    plc.kill();

    let status = PlcLog(plc.records()).status_writes();
    let overrun_writes: Vec<&Vec<u64>> = status.iter().map(|(_, v)| v).filter(|v| v[0] & 0b100 != 0).collect();
    assert!(!overrun_writes.is_empty(), "the overrun bit reached the PLC (metric said {overrun})");
    // With no ack the first result stays presented and two are buffered.
    assert_eq!(presented_ids(&status), vec![1], "only the first result is ever presented");
    for v in &overrun_writes {
        assert_eq!((v[3], v[8]), (1, 2), "presented 1 with 2 buffered while overrun: {v:?}");
    }
    assert!(status.iter().all(|(_, v)| v[8] <= 2), "never more buffered than results_buffer");
}

// ---------------------------------------------------------------------------------------------
// 3. The PLC goes away for 5 s

#[test]
fn plc_gone_for_five_seconds_and_back() {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let mut first = Plc::start(0, &dir.path().join("plc1.jsonl"), &["--auto-ack"]);
    let port = first.port;
    let config = station_config(dir.path(), 40.0, "", 20, "", &first.address());
    let (mut station, admin, log) = run_station(&config, 640);
    let link = "linesight_line_link_up{adapter=\"modbus\"}";
    let undelivered = "linesight_line_undelivered_total{adapter=\"modbus\"}";
    let what = || format!("the station\n{}", log.lock().unwrap());
    wait_for(Duration::from_secs(20), what, || metric(admin, link).filter(|v| *v == 1.0));
    wait_for(Duration::from_secs(10), what, || (PlcLog(first.records()).reject_ons().len() >= 5).then_some(()));

    first.kill();
    let gone = Instant::now();
    wait_for(Duration::from_secs(3), what, || metric(admin, link).filter(|v| *v == 0.0));
    std::thread::sleep(Duration::from_secs(5).saturating_sub(gone.elapsed()));
    assert!(station.0.try_wait().unwrap().is_none(), "the station keeps running without its PLC");
    let lost = metric(admin, undelivered).unwrap();
    assert!(lost > 0.0, "rejects due while the PLC was gone are counted undelivered");

    let second = Plc::start(port, &dir.path().join("plc2.jsonl"), &["--auto-ack"]);
    let back = Instant::now();
    wait_for(Duration::from_secs(5), what, || metric(admin, link).filter(|v| *v == 1.0));
    let relinked = back.elapsed();
    wait_for(Duration::from_secs(5), what, || (!PlcLog(second.records()).reject_ons().is_empty()).then_some(()));
    let status = wait_exit(&mut station, Duration::from_secs(30));
    assert!(status.success(), "station failed:\n{}", log.lock().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let (first_log, second_log) = (PlcLog(first.records()), PlcLog(second.records()));
    drop(second);

    // Accounting: every part has one fate; every reject the PLC saw was a fired one in its
    // window; the ones it did not see are the outage's.
    let audit = audit(dir.path());
    let parts = terminal(&audit);
    assert_eq!(parts.len(), 640, "every captured part has one fate in the audit trail");
    let fired: Vec<&Value> = parts.iter().copied().filter(|r| r["fate"] == "fired").collect();
    let mut ons = first_log.reject_ons();
    ons.extend(second_log.reject_ons());
    let (killed_ns, back_ns) = (first_log.0.last().map(|r| ns(r, "t_ns")).unwrap(), ns(&second_log.0[0], "t_ns"));
    let (delivered, undelivered) = split_delivered(&fired, &ons);
    assert_eq!(delivered.len(), ons.len(), "each reject the PLCs saw belongs to exactly one fired part");
    match_rejects(&delivered, &ons);
    assert!(!undelivered.is_empty());
    // Outside the outage, a reject the I/O thread got to past its window (a host stall on a
    // shared VM) is counted undelivered too: rare stalls are allowed, loudly, each counted once
    // however many rejects were due during it (as in the fire-window test above).
    let outside: Vec<&&Value> = undelivered
        .iter()
        .filter(|r| {
            let d = ns(r, "deadline_ns");
            d < killed_ns.saturating_sub(LATE_BOUND_NS) || d > back_ns + 2_000_000_000
        })
        .collect();
    for r in &outside {
        eprintln!("WARNING: modbus outage test: the reject for seq {} was lost outside the outage", r["seq"]);
    }
    let stalls = stalls_at(outside.iter().map(|r| ns(r, "fired_ns")).collect(), SAME_STALL_NS);
    let allowed = (fired.len() / 100).max(1);
    assert!(
        stalls <= allowed,
        "{} rejects lost outside the outage, in {stalls} separate stalls (at most {allowed} allowed): {:?}",
        outside.len(),
        outside.iter().map(|r| &r["seq"]).collect::<Vec<_>>()
    );
    // The new PLC got the whole status block again, and acks resumed.
    assert!(!second_log.status_writes().is_empty() && !second_log.of_kind("ack").is_empty());
    eprintln!(
        "modbus outage: {} rejects fired, {} reached a PLC, {} undelivered (metric during the outage: {lost}); link back {:.0} ms after the PLC",
        fired.len(),
        ons.len(),
        undelivered.len(),
        relinked.as_secs_f64() * 1e3
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A PLC that answers badly

fn bad_plc(flag: &str) {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let mut plc = Plc::start(0, &dir.path().join("plc.jsonl"), &[flag]);
    let config = station_config(dir.path(), 40.0, "", 20, "", &plc.address());
    let (mut station, admin, log) = run_station(&config, 200);
    // Every refused write counts (the status block alone is retried every 50 ms).
    let errors = wait_for(
        Duration::from_secs(20),
        || format!("write errors\n{}", log.lock().unwrap()),
        || metric(admin, "linesight_plc_write_errors_total{adapter=\"modbus\"}").filter(|v| *v >= 10.0),
    );
    let link = metric(admin, "linesight_line_link_up{adapter=\"modbus\"}");
    let status = wait_exit(&mut station, Duration::from_secs(30));
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "station failed:\n{log}");
    assert_eq!(link, Some(0.0), "a PLC that refuses every write is not a working link");
    std::thread::sleep(Duration::from_millis(200));
    plc.kill();

    // The station kept inspecting: every part decided and given its fate.
    let audit = audit(dir.path());
    assert_eq!(terminal(&audit).len(), 200, "every part has one fate in the audit trail");
    // No reject left its window: whatever reached the PLC was inside one.
    let fired: Vec<&Value> = audit.iter().filter(|r| r["fate"] == "fired").collect();
    let ons = PlcLog(plc.records()).reject_ons();
    if flag == "--exceptions" {
        // (After garbage the connection is dropped and rebuilt, so few rejects find it up.)
        assert!(!ons.is_empty(), "rejects were attempted");
    }
    for on in &ons {
        assert!(
            fired.iter().any(|r| *on >= ns(r, "deadline_ns") && *on <= ns(r, "deadline_ns") + LATE_BOUND_NS),
            "a reject reached the PLC outside every fire window: at {on}, nearest deadline {:?} ms away",
            fired
                .iter()
                .map(|r| (*on as i64 - ns(r, "deadline_ns") as i64) as f64 / 1e6)
                .min_by(|a, b| a.abs().total_cmp(&b.abs()))
        );
    }
    assert!(ons.len() <= fired.len());
    // Logged once per burst (plus a summary at most every 5 s), not once per request.
    let error_lines = log.lines().filter(|l| l.contains("ERROR") && l.contains("modbus adapter")).count();
    assert!((1..=12).contains(&error_lines), "{error_lines} error lines for {errors} failed writes:\n{log}");
}

#[test]
fn a_plc_answering_exceptions_is_counted_and_the_station_goes_on() {
    bad_plc("--exceptions");
}

#[test]
fn a_plc_answering_garbage_is_counted_and_the_station_goes_on() {
    bad_plc("--garbage");
}

// ---------------------------------------------------------------------------------------------
// 5. Bad register maps

#[test]
fn check_refuses_bad_register_maps_with_the_field_path() {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("status_register = 100\ninput_register = 104", "line.modbus.map.input_register", "overlaps"),
        ("status_register = 65530", "line.modbus.map.status_register", "65535"),
        ("input_register = 65534", "line.modbus.map.input_register", "65535"),
        ("reject_coil = 3\nstop_line_coil = 3", "line.modbus.map.stop_line_coil", "reject_coil"),
        ("input_register = 70000", "input_register", "70000"),
    ];
    for (map, path, problem) in cases {
        let config = station_config(dir.path(), 30.0, "", 20, &format!("[line.modbus.map]\n{map}"), "127.0.0.1:1502");
        let (ok, stdout, stderr) = output(linesight().args(["check", "--config"]).arg(&config));
        assert!(!ok, "check accepted the map {map:?}:\n{stdout}{stderr}");
        assert!(
            stderr.contains(path) && stderr.contains(problem),
            "the error for {map:?} names {path} and says {problem:?}:\n{stderr}"
        );
    }
    // The same config with a good map passes the map checks (it may still fail later: no PLC is
    // needed for check, but the message must not be about the map).
    let config = station_config(dir.path(), 30.0, "", 20, "[line.modbus.map]\nstatus_register = 200", "127.0.0.1:1502");
    let (_, _, stderr) = output(linesight().args(["check", "--config"]).arg(&config));
    assert!(!stderr.contains("line.modbus.map"), "a good map is accepted:\n{stderr}");
}

// ---------------------------------------------------------------------------------------------
// The adapter alone, on a runtime of the test's own, with hand-made events

mod adapter {
    use super::*;
    use linesight::config::ModbusConfig;
    pub use linesight::sinks::line::LineEvent;
    use linesight::sinks::line::clock::MonoClock;
    use linesight::sinks::line::event::{ErrorCode, LineAction, LineVerdict, StationStatus};
    use linesight::sinks::line::metrics::AdapterMetrics;
    use linesight::sinks::line::{AdapterContext, PartOutcome, modbus};

    pub struct Running {
        tx: tokio::sync::mpsc::Sender<LineEvent>,
        thread: std::thread::JoinHandle<()>,
        pub metrics: AdapterMetrics,
        pub clock: MonoClock,
    }

    impl Running {
        /// The Modbus adapter for the PLC at `address`, as the station runs it.
        pub fn start(address: &str, fire_window: Duration) -> Self {
            let cfg: ModbusConfig = toml::from_str(&format!(
                "address = \"{address}\"\ntimeout_ms = 100\nreconnect_initial_ms = 20\nreconnect_max_ms = 200"
            ))
            .unwrap();
            let ctx = AdapterContext::detached("modbus", fire_window);
            let clock = ctx.clock;
            let metrics = ctx.metrics.clone();
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let thread = std::thread::spawn(move || runtime.block_on(modbus::run(cfg, rx, ctx)));
            let ready = StationStatus { ready: true, error: ErrorCode::None };
            tx.try_send(LineEvent::Status(ready)).unwrap();
            Running { tx, thread, metrics, clock }
        }

        pub fn send(&self, event: LineEvent) {
            self.tx.try_send(event).unwrap();
        }

        /// Close the queue, as a stopping station does; the adapter must end promptly.
        pub fn finish(self) -> AdapterMetrics {
            let t0 = Instant::now();
            drop(self.tx);
            self.thread.join().unwrap();
            assert!(t0.elapsed() < Duration::from_secs(3), "the adapter took {:?} to stop", t0.elapsed());
            self.metrics
        }
    }

    pub fn part(result_id: u64, deadline: Instant) -> PartOutcome {
        PartOutcome {
            result_id,
            camera: 0,
            seq: result_id,
            part_id: None,
            verdict: LineVerdict::Ng,
            failsafe: None,
            class_code: 1,
            action: LineAction::Reject,
            deadline,
            decided_at: Instant::now(),
        }
    }

    pub fn reject(result_id: u64, deadline: Instant, pulse: Duration) -> LineEvent {
        LineEvent::Reject { outcome: part(result_id, deadline), pulse }
    }

    /// Sleep until `at` (to well under a millisecond: the line thread's job, done here by hand).
    pub fn sleep_until(at: Instant) {
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            if d > Duration::from_millis(2) {
                std::thread::sleep(d - Duration::from_millis(1));
            }
            while Instant::now() < at {
                std::hint::spin_loop();
            }
        }
    }
}

#[test]
fn overlapping_rejects_are_separate_edges_a_late_one_is_never_written_and_stop_line_latches() {
    use adapter::*;
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let mut plc = Plc::start(0, &dir.path().join("plc.jsonl"), &[]);
    let pulse = Duration::from_millis(20);
    let running = Running::start(&plc.address(), pulse / 2);
    wait_for(Duration::from_secs(5), || "link up".into(), || (running.metrics.link_up.get() == 1).then_some(()));

    let a = Instant::now() + Duration::from_millis(30);
    let b = a + Duration::from_millis(5);
    sleep_until(a);
    running.send(reject(1, a, pulse));
    sleep_until(b);
    running.send(reject(2, b, pulse));
    // Its deadline was 30 ms ago: past its 10 ms fire window.
    running.send(reject(3, Instant::now() - Duration::from_millis(30), pulse));
    std::thread::sleep(Duration::from_millis(60));
    running.send(LineEvent::StopLine { outcome: part(4, Instant::now()) });
    std::thread::sleep(Duration::from_millis(50));

    // The PLC goes away: a reject due now cannot be delivered, and is counted.
    plc.kill();
    std::thread::sleep(Duration::from_millis(50));
    let c = Instant::now() + Duration::from_millis(5);
    sleep_until(c);
    running.send(reject(5, c, pulse));
    std::thread::sleep(Duration::from_millis(100));
    let clock = running.clock;
    let metrics = running.finish();
    assert_eq!(metrics.undelivered.get(), 2, "the late reject and the one due while the PLC was gone");
    assert_eq!(metrics.link_up.get(), 0);

    let log = PlcLog(plc.records());
    let coil: Vec<(u64, bool)> =
        log.writes(5, REJECT_COIL).map(|r| (ns(r, "t_ns"), r["values"][0].as_bool().unwrap())).collect();
    let states: Vec<bool> = coil.iter().map(|c| c.1).collect();
    // OFF at connect (safe state), then A ON, OFF+ON for B (an edge per reject), and one OFF a
    // pulse after B's ON.
    assert_eq!(states, [false, true, false, true, false], "reject coil writes: {coil:?}");
    let (a_ns, b_ns) = (clock.ns(a), clock.ns(b));
    assert!(coil[1].0 >= a_ns && coil[1].0 <= a_ns + LATE_BOUND_NS, "A's ON at its deadline");
    assert!(coil[3].0 >= b_ns && coil[3].0 <= b_ns + LATE_BOUND_NS, "B's ON at its deadline");
    assert!(coil[2].0 >= coil[1].0 && coil[3].0 - coil[2].0 < 5_000_000, "the OFF between A and B is a glitch");
    let width = coil[4].0 - coil[3].0;
    assert!((18_000_000..=40_000_000).contains(&width), "B's pulse lasted {} ms", width as f64 / 1e6);

    let stop: Vec<bool> = log.writes(5, STOP_LINE_COIL).map(|r| r["values"][0].as_bool().unwrap()).collect();
    assert_eq!(stop, [false, true], "stop-line cleared at start-up, then set");
    let status = log.status_writes();
    assert!(status.iter().any(|(_, v)| v[0] & 0b1_0000 != 0), "the stop-line bit reached the PLC");
}

/// The adapter's own contribution to reject timing over 10,000 parts: each reject handed over at
/// its deadline (as the line thread does), against when the PLC saw the coil go ON. About 25 s;
/// run with `--ignored --nocapture` for the figures.
#[test]
#[ignore = "a 25 s measurement: run with --ignored"]
fn ten_thousand_rejects_reach_the_plc_at_their_deadlines() {
    use adapter::*;
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let mut plc = Plc::start(0, &dir.path().join("plc.jsonl"), &[]);
    // 400 rejects/s, 1 ms pulses (so they do not overlap), the station's default 10 ms window.
    let pulse = Duration::from_millis(1);
    let running = Running::start(&plc.address(), Duration::from_millis(10));
    wait_for(Duration::from_secs(5), || "link up".into(), || (running.metrics.link_up.get() == 1).then_some(()));
    let n = 10_000u64;
    let start = Instant::now() + Duration::from_millis(50);
    let deadlines: Vec<Instant> = (0..n).map(|i| start + Duration::from_micros(2500 * i)).collect();
    for (i, &d) in deadlines.iter().enumerate() {
        sleep_until(d);
        running.send(reject(i as u64 + 1, d, pulse));
    }
    std::thread::sleep(Duration::from_millis(200));
    let clock = running.clock;
    let metrics = running.finish();
    plc.kill();
    let ons = PlcLog(plc.records()).reject_ons();
    let undelivered = metrics.undelivered.get();
    assert_eq!(ons.len() as u64 + undelivered, n, "each reject is delivered or counted");
    assert!(undelivered <= n / 100, "{undelivered} of {n} rejects missed their window");
    // Match each ON to the latest deadline at or before it.
    let dl: Vec<u64> = deadlines.iter().map(|d| clock.ns(*d)).collect();
    let lateness: Vec<u64> = ons
        .iter()
        .map(|&on| {
            let i = dl.partition_point(|&d| d <= on);
            assert!(i > 0, "an ON before the first deadline");
            on - dl[i - 1]
        })
        .collect();
    let rtt = metrics.write_seconds.get_sample_sum() / metrics.write_seconds.get_sample_count() as f64;
    eprintln!(
        "modbus adapter, {n} rejects at 400/s: PLC ON arrival − deadline {}; undelivered {undelivered}; mean write round trip {:.3} ms",
        percentiles_ms(lateness),
        rtt * 1e3
    );
}
