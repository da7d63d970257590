//! Shared helpers for the integration tests: station configs written to temporary folders,
//! pointing at the repository's demo model.
#![allow(dead_code)]

pub mod api;
pub mod fleet;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn demo_model() -> String {
    repo().join("models/demo").display().to_string()
}

/// A loopback port nothing listens on now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A one-camera synthetic station config.
pub fn synthetic_station(fps: f64, extra_camera: &str, extra_pipeline: &str) -> String {
    format!(
        r#"
[[camera]]
id = "cam"
fps = {fps}
{extra_camera}
[camera.source]
kind = "synthetic"
surface = "brushed_metal"
defect_probability = 0.5
seed = 11

[model]
package = "{model}"

[pipeline]
{extra_pipeline}

[[rule]]
class = "defect"
min_score = 0.5
min_area_px = 12
"#,
        model = demo_model()
    )
}

/// A one-camera folder-replay station config.
pub fn folder_station(dir: &Path) -> String {
    format!(
        r#"
[[camera]]
id = "replay"
[camera.source]
kind = "folder"
path = "{dir}"

[model]
package = "{model}"
"#,
        dir = dir.display(),
        model = demo_model()
    )
}

/// Write config text into `dir/station.toml` and return its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The `linesight` binary under test, with quiet logs.
pub fn linesight() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_linesight"));
    cmd.env("LINESIGHT_LOG", "warn");
    cmd
}

/// `linesight run` with its admin listener on a free loopback port, so that tests running
/// stations side by side (and a station already on the default port) never collide.
pub fn linesight_run() -> Command {
    let mut cmd = linesight();
    cmd.args(["run", "--admin-listen", "127.0.0.1:0"]);
    cmd
}

/// Run and return (success, stdout, stderr).
pub fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A copy of the demo model package in `dir/model`, its manifest passed through `edit`.
pub fn edited_demo_model(dir: &Path, edit: impl Fn(&str) -> String) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(repo().join("models/demo/model.onnx"), model.join("model.onnx")).unwrap();
    let manifest = std::fs::read_to_string(repo().join("models/demo/model.toml")).unwrap();
    std::fs::write(model.join("model.toml"), edit(&manifest)).unwrap();
    model
}

/// A child process killed when the test ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus tool from the Debian package, or a failure that says how to get it.
pub fn tool(name: &str) -> Command {
    match Command::new(name).arg("--version").output() {
        Ok(out) if out.status.success() => Command::new(name),
        _ => panic!(
            "`{name}` is not installed: run `make setup` (it installs the Debian package `prometheus`, which provides prometheus and promtool)"
        ),
    }
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    let status = reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Poll `f` until it returns Some, or fail after `limit` with `what`.
pub fn wait_for<T>(limit: Duration, what: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {}", what());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Start a station command (with `--admin-listen 127.0.0.1:0`, as `linesight_run` sets it),
/// collect its log, and wait for the admin listener's bound address in it.
/// Returns the guarded child, the address, and the log collected so far (it keeps growing).
pub fn spawn_with_admin(mut cmd: Command) -> (Guard, SocketAddr, Arc<Mutex<String>>) {
    let mut child = cmd
        .env("LINESIGHT_LOG", "info,ort=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = BufReader::new(child.stderr.take().unwrap());
    let log = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            if line.contains("admin listener")
                && let Some(addr) = line.split("address=").nth(1)
            {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
            }
            log.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let child = Guard(child);
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no admin listener address logged:\n{}", stderr.lock().unwrap()));
    (child, addr.parse().unwrap(), stderr)
}

/// A log line without its terminal colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the end of the escape sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every JSON line of a file (none when it does not exist yet).
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// The line's terminal record per part in an audit trail (`fired`, `passed` or `missed`), keyed
/// by the part's seq; a part acted on twice fails the test. One camera per station.
pub fn line_actions(audit: &[serde_json::Value]) -> std::collections::HashMap<u64, serde_json::Value> {
    let mut out = std::collections::HashMap::new();
    for r in audit {
        if ["fired", "passed", "missed"].contains(&r["fate"].as_str().unwrap_or("")) {
            let seq = r["seq"].as_u64().unwrap();
            assert!(out.insert(seq, r.clone()).is_none(), "part {seq} was acted on twice");
        }
    }
    out
}

/// A Prometheus sample `name{labels}` from the admin listener's /metrics.
pub fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http_get(admin, "/metrics").ok()?;
    body.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Wait for a child to exit, failing the test after `limit`.
pub fn wait_exit(guard: &mut Guard, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            return status;
        }
        assert!(t0.elapsed() < limit, "the station did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Station runs whose timing a test checks take the machine's cores: one at a time per test
/// binary (cargo runs test binaries one after another).
pub fn one_station() -> std::sync::MutexGuard<'static, ()> {
    static STATION: Mutex<()> = Mutex::new(());
    STATION.lock().unwrap_or_else(|e| e.into_inner())
}

/// A package of the tiny anomaly model (tests/fixtures, 8×8 gray input, resize) named `name`,
/// judging at `threshold`, in `dir/<name>`.
pub fn tiny_anomaly_package(dir: &Path, name: &str, threshold: f32) -> PathBuf {
    use sha2::Digest;
    let bytes = std::fs::read(repo().join("tests/fixtures/anomalib_tiny.onnx")).unwrap();
    let package = dir.join(name);
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("model.onnx"), &bytes).unwrap();
    let manifest = format!(
        "name = \"{name}\"\nonnx_file = \"model.onnx\"\nsha256 = \"{}\"\n\n[input]\nname = \"input\"\nwidth = 8\nheight = 8\nchannels = 1\nlayout = \"NCHW\"\nbatch = 0\nmode = \"resize\"\n\n[task]\nkind = \"anomaly\"\nthreshold = {threshold:?}\n",
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    std::fs::write(package.join("model.toml"), manifest).unwrap();
    package
}
