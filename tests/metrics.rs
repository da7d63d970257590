//! The admin listener of a real station, as operations would use it: the `linesight` binary runs
//! a synthetic camera on loopback; `/healthz`, `/readyz` and `/metrics` answer over HTTP;
//! `promtool check metrics` accepts the scrape; and a real Prometheus server, started here with a
//! 1 s scrape interval, stores the station's inspection counts and answers a query for them.
//!
//! `prometheus` and `promtool` come from the Debian package `prometheus` (`make setup` installs
//! it). Without them these tests fail, saying so: they do not skip.

mod common;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `linesight run` with its admin listener on a free loopback port.
struct Station {
    child: Guard,
    admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Station {
    /// Start a one-camera synthetic station (20 parts/s) and wait for its admin listener's address.
    fn start(dir: &Path) -> Self {
        let cfg = write_config(dir, &synthetic_station(20.0, "", ""));
        let mut cmd = linesight_run();
        cmd.arg("--config").arg(&cfg);
        let (child, admin, stderr) = spawn_with_admin(cmd);
        Self { child, admin, stderr }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then the station must drain and exit 0.
    fn stop(mut self) {
        let pid = self.child.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.0.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "station did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "station exit status {status:?}:\n{}", self.log());
        assert!(TcpStream::connect(self.admin).is_err(), "admin listener still open after exit");
    }
}

#[test]
fn a_running_station_is_alive_ready_and_its_metrics_pass_promtool() {
    let mut promtool = tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(dir.path());
    assert_eq!(station.get("/healthz"), (200, "ok\n".to_string()));
    let ready = wait_for(
        Duration::from_secs(30),
        || station.log(),
        || {
            let (status, body) = station.get("/readyz");
            (status == 200).then_some(body)
        },
    );
    assert!(ready.contains(r#""ready":true"#), "{ready}");

    // Wait until a part has been decided, so every family has data.
    let metrics = wait_for(
        Duration::from_secs(30),
        || station.log(),
        || {
            let (_, body) = station.get("/metrics");
            body.lines()
                .any(|l| l.starts_with("linesight_capture_to_verdict_seconds_count") && !l.ends_with(" 0"))
                .then_some(body)
        },
    );
    for name in [
        "linesight_frames_captured_total{camera=\"cam\"}",
        "linesight_inspections_total{camera=\"cam\",verdict=\"ok\"}",
        "linesight_camera_up{camera=\"cam\"} 1",
        "linesight_ready 1",
        "linesight_inference_seconds_bucket{model=\"demo\"",
        "linesight_model_info{model=\"demo\",sha256=",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }

    let mut check = promtool
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics: {report}\n{metrics}");

    station.stop();
}

#[test]
fn prometheus_scrapes_a_running_station_and_answers_queries_for_its_camera() {
    let mut prometheus = tool("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(dir.path());

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let prom_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: linesight\n    static_configs:\n      - targets: [\"{}\"]\n",
            station.admin
        ),
    )
    .unwrap();
    let prom_log = dir.path().join("prometheus.log");
    let server = Guard(
        prometheus
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let what = || {
        format!(
            "Prometheus to hold inspections for camera cam; its log:\n{}",
            std::fs::read_to_string(&prom_log).unwrap_or_default()
        )
    };
    let inspected = wait_for(Duration::from_secs(90), what, || {
        let (status, body) = http_get(prom_addr, "/api/v1/query?query=linesight_inspections_total").ok()?;
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let total: f64 = json["data"]["result"]
            .as_array()?
            .iter()
            .filter(|r| r["metric"]["camera"] == "cam" && r["metric"]["job"] == "linesight")
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .sum();
        (total > 0.0).then_some(total)
    });
    assert!(inspected >= 1.0);

    // The scrape target is healthy as Prometheus sees it.
    let (_, up) = http_get(prom_addr, "/api/v1/query?query=up").unwrap();
    assert!(up.contains(&station.admin.to_string()) && up.contains(r#""1"]"#), "{up}");

    station.stop();
    drop(server);
}

#[test]
fn a_taken_admin_port_is_a_clear_error_naming_the_address_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &synthetic_station(0.0, "", ""));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, _, stderr) =
        output(linesight().args(["run", "--max-frames", "1", "--admin-listen", &addr, "--config"]).arg(&cfg));
    assert!(!ok);
    assert!(stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("[admin] listen"), "{stderr}");
}

#[test]
fn the_admin_listener_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let text = synthetic_station(0.0, "", "") + "\n[admin]\nenabled = false\n";
    let cfg = write_config(dir.path(), &text);
    let (ok, _, stderr) = output(
        linesight().args(["run", "--max-frames", "2", "--config"]).arg(&cfg).env("LINESIGHT_LOG", "info,ort=warn"),
    );
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("admin listener"), "{stderr}");
}
