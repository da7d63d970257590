//! The deployment files in `deploy/`, checked with the real tools: `promtool` accepts the alerting
//! rules and both Prometheus configs, the rules' unit tests pass, and every query of the Grafana
//! dashboard returns data from a real Prometheus server scraping a real station (the built-in demo:
//! two synthetic cameras), with the alerting rules loaded and evaluating without error.
//!
//! `prometheus` and `promtool` come from the Debian package `prometheus` (`make setup` installs
//! it). Without them these tests fail, saying so: they do not skip. Grafana and Docker are not
//! exercised (see deploy/README.md).

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn deploy(file: &str) -> PathBuf {
    repo().join("deploy").join(file)
}

/// Run a promtool subcommand; it must exit 0.
fn promtool(args: &[&str], file: &Path) {
    let out = tool("promtool").args(args).arg(file).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {} {} failed:\n{report}", args.join(" "), file.display());
}

#[test]
fn promtool_accepts_the_alerting_rules_and_both_prometheus_configs() {
    promtool(&["check", "rules"], &deploy("alerts.yml"));
    // Also checks the rule files each config loads.
    promtool(&["check", "config"], &deploy("prometheus.yml"));
    promtool(&["check", "config"], &deploy("prometheus.compose.yml"));
}

#[test]
fn the_alerting_rules_pass_their_unit_tests() {
    promtool(&["test", "rules"], &deploy("alerts.test.yml"));
}

/// Every alert defined in alerts.yml has unit tests in alerts.test.yml.
#[test]
fn every_alert_has_unit_tests() {
    let rules = std::fs::read_to_string(deploy("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(str::trim).collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for alert in alerts {
        assert!(tests.contains(&format!("alertname: {alert}\n")), "no unit test for alert {alert} in alerts.test.yml");
    }
}

/// A panel target's query, with Grafana's variables replaced by values Prometheus accepts:
/// interval variables by `30s`, template variables (`$camera`, `${instance}`) by `.*`.
fn grafana_to_promql(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let name_start = usize::from(braced);
        let len = rest[name_start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let name = &rest[name_start..name_start + len];
        assert!(!name.is_empty(), "stray `$` in {expr}");
        out.push_str(if name.starts_with("__") { "30s" } else { ".*" });
        rest = &rest[name_start + len + usize::from(braced)..];
    }
    out.push_str(rest);
    out
}

#[test]
fn grafana_variables_are_replaced() {
    assert_eq!(
        grafana_to_promql(r#"rate(x{camera=~"$camera", instance=~"${instance}"}[$__rate_interval])"#),
        r#"rate(x{camera=~".*", instance=~".*"}[30s])"#
    );
}

/// The dashboard's panels, flattened out of any rows.
fn dashboard_panels() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(deploy("grafana/linesight.json")).unwrap();
    let dash: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("deploy/grafana/linesight.json is not valid JSON: {e}"));
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36, "schemaVersion: {}", dash["schemaVersion"]);
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"),
        "no Prometheus datasource variable named `datasource`"
    );
    let mut panels = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        } else {
            panels.push(p.clone());
        }
    }
    assert!(!panels.is_empty());
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        let uses_variable = |ds: &serde_json::Value| ds["type"] == "prometheus" && ds["uid"] == "${datasource}";
        assert!(uses_variable(&p["datasource"]), "panel {title:?} has no Prometheus datasource: {}", p["datasource"]);
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no target");
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "panel {title:?}: target without expr");
            assert!(
                t["datasource"].is_null() || uses_variable(&t["datasource"]),
                "panel {title:?}: target datasource {}",
                t["datasource"]
            );
        }
    }
    panels
}

#[test]
fn the_dashboard_is_valid_and_every_panel_has_a_datasource_and_targets() {
    let panels = dashboard_panels();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for needed in
        ["Throughput", "Yield", "NG by defect class", "latency", "Inference", "drops", "Camera state", "Fail-safe"]
    {
        assert!(titles.iter().any(|t| t.contains(needed)), "no panel titled like {needed:?} in {titles:?}");
    }
}

/// `linesight run` (the built-in demo station) with its admin listener on a free loopback port.
struct Station {
    _child: Guard,
    admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Station {
    fn start() -> Self {
        let mut cmd = linesight_run();
        // The demo's API too on a free port: 8080 may be taken on a developer's machine.
        cmd.args(["--api-listen", "127.0.0.1:0"]).current_dir(repo());
        let (child, admin, stderr) = spawn_with_admin(cmd);
        Self { _child: child, admin, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// A real Prometheus server on a free loopback port, scraping `target` every second as job
/// `linesight` and evaluating deploy/alerts.yml every second.
struct Prometheus {
    _child: Guard,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Self {
        let mut prometheus = tool("prometheus");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules:?}\nscrape_configs:\n  - job_name: linesight\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = deploy("alerts.yml").display().to_string(),
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let child = Guard(
            prometheus
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        Self { _child: child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET an API path; Some(json) when Prometheus answers 200 with status success.
    fn api(&self, path_and_query: &str) -> Option<serde_json::Value> {
        let (status, body) = http_get(self.addr, path_and_query).ok()?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && json["status"] == "success").then_some(json)
    }

    /// An instant query's result vector (None on an error reply, with the reply).
    fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = http_get(self.addr, &path).map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(json["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_station_and_the_alert_rules_evaluate() {
    let panels = dashboard_panels();
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start();
    let prom = Prometheus::start(dir.path(), station.admin);
    let what = || format!("station log:\n{}\nPrometheus log:\n{}", station.log(), prom.log());

    // Data flows: both demo cameras have a non-zero inspection rate over the dashboard's window.
    wait_for(
        Duration::from_secs(90),
        || format!("a non-zero inspection rate for both cameras; {}", what()),
        || {
            let result = prom.query("sum by (camera) (rate(linesight_inspections_total[30s])) > 0").ok()?;
            (result.len() >= 2).then_some(())
        },
    );

    let mut failures = Vec::new();
    let mut queries = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        for t in p["targets"].as_array().unwrap() {
            let expr = grafana_to_promql(t["expr"].as_str().unwrap());
            queries += 1;
            // A fresh Prometheus may need a few more scrapes for the longest windows: retry a while.
            let t0 = Instant::now();
            let outcome = loop {
                let outcome = prom.query(&expr);
                if matches!(&outcome, Ok(r) if !r.is_empty()) || t0.elapsed() > Duration::from_secs(20) {
                    break outcome;
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            match outcome {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => failures.push(format!("panel {title:?}: empty result for\n  {expr}")),
                Err(e) => failures.push(format!("panel {title:?}: query failed for\n  {expr}\n  {e}")),
            }
        }
    }
    assert!(queries >= panels.len());
    assert!(failures.is_empty(), "dashboard queries without data:\n{}\n{}", failures.join("\n"), what());

    // The alerting rules, loaded by the real server, evaluate without error (a misspelt metric
    // would evaluate to nothing, but a bad vector match or template errors here).
    let rules = wait_for(
        Duration::from_secs(30),
        || format!("rules evaluated; {}", what()),
        || {
            let json = prom.api("/api/v1/rules")?;
            let rules: Vec<serde_json::Value> = json["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001"))).then_some(rules)
        },
    );
    assert!(rules.len() >= 6, "{rules:?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "rule {} is unhealthy: {}", r["name"], r["lastError"]);
    }
    // A healthy station: none of the station's own alerts is even pending.
    let alerts = prom.query("ALERTS").unwrap();
    assert!(alerts.is_empty(), "alerts on a healthy demo station: {alerts:?}");
}
