//! Plant-scale test rig: a real NATS server (JetStream, data in a temp dir) and a throw-away
//! PostgreSQL cluster (`initdb` + `pg_ctl` on a loopback port), both from the Debian packages the
//! set-up installs, started and stopped by the tests; hubs and stations as `linesight` processes.

use super::{Guard, http_get, linesight, repo, spawn_with_admin, wait_for};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use super::free_port;

fn wait_port(port: u16, what: &str) {
    wait_for(
        Duration::from_secs(30),
        || format!("{what} on port {port}"),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
}

/// `nats-server` on a loopback port: with JetStream and its store in `dir`, or from a config file.
pub struct Nats {
    pub port: u16,
    args: Vec<String>,
    child: Option<Guard>,
}

impl Nats {
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let store = dir.join("nats").display().to_string();
        let args = ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd", &store].map(String::from).to_vec();
        let mut nats = Self { port, args, child: None };
        nats.up();
        nats
    }

    /// A server from the config `text` (written to `path`), listening on `port`.
    pub fn from_config(path: &Path, port: u16, text: &str) -> Self {
        std::fs::write(path, text).unwrap();
        let mut nats = Self { port, args: vec!["-c".into(), path.display().to_string()], child: None };
        nats.up();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start it again on the same port and store (after [`Self::down`]).
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "nats-server is running already");
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"].into_iter().find(|p| Path::new(p).exists());
        let bin =
            bin.expect("nats-server is not installed: run `make setup` (it installs the Debian package nats-server)");
        let child = Command::new(bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(Guard(child));
        wait_port(self.port, "nats-server");
    }

    /// Stop it (SIGTERM, as a service manager would), keeping its store.
    pub fn down(&mut self) {
        if let Some(mut g) = self.child.take() {
            terminate(&mut g);
        }
    }
}

/// SIGTERM, then wait for the process to exit.
pub fn terminate(g: &mut Guard) -> std::process::ExitStatus {
    let _ = Command::new("kill").args(["-TERM", &g.0.id().to_string()]).status();
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = g.0.try_wait().unwrap() {
            return status;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = g.0.kill();
            return g.0.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL cluster of its own, in `dir`, on a loopback port; dropped with the test.
pub struct Postgres {
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    fsync: bool,
}

/// The server's programs (Debian keeps them out of PATH, per major version).
fn pg_bin() -> PathBuf {
    let found = glob::glob("/usr/lib/postgresql/*/bin/pg_ctl").ok().and_then(|mut g| g.find_map(Result::ok));
    found
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("PostgreSQL's server is not installed: run `make setup` (it installs the Debian package postgresql)")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Run a PostgreSQL program as the `postgres` user when we are root (the server refuses root).
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// A cluster for tests: fsync off (a crash of the test machine loses nothing we need).
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, false)
    }

    /// `fsync`: on for benchmarks whose figures must hold for a real server.
    pub fn start_with(dir: &Path, fsync: bool) -> Self {
        let bin = pg_bin();
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).unwrap();
        if is_root() {
            // The server runs as `postgres`: it must reach and own its folder.
            let mut p = data.clone();
            while let Some(parent) = p.parent() {
                if parent == Path::new("/") || parent == Path::new("") {
                    break;
                }
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(parent).unwrap().permissions().mode();
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
                p = parent.to_path_buf();
            }
            assert!(Command::new("chown").args(["postgres:postgres"]).arg(&data).status().unwrap().success());
        }
        let out = as_pg_user(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Self { port: free_port(), data, bin, fsync };
        pg.up();
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-c", "CREATE DATABASE plant"])
            .output()
            .unwrap();
        assert!(out.status.success(), "createdb failed: {}", String::from_utf8_lossy(&out.stderr));
        pg
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync={} -c max_connections=50",
            self.port,
            self.data.display(),
            if self.fsync { "on" } else { "off" }
        );
        let out = as_pg_user(&self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.data)
            .args(["-o", &opts, "-l"])
            .arg(self.data.join("server.log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=plant", self.port)
    }

    /// One query through psql: rows of `|`-separated fields.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "plant", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql)[0][0].parse().unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_pg_user(&self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A `linesight hub` process.
pub struct Hub {
    pub api: SocketAddr,
    pub config: PathBuf,
    child: Option<Guard>,
    pub log: Arc<Mutex<String>>,
}

/// Write a hub config into `dir/<id>.toml`.
pub fn hub_config(dir: &Path, id: &str, nats: &Nats, pg: &Postgres, batch: usize) -> PathBuf {
    let port = free_port();
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "[hub]\nid = \"{id}\"\nbatch = {batch}\n\n[nats]\nservers = [\"{}\"]\n\n[postgres]\nurl = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\nutc_offset_minutes = 0\n",
            nats.url(),
            pg.url()
        ),
    )
    .unwrap();
    path
}

impl Hub {
    pub fn start(config: &Path) -> Self {
        let text = std::fs::read_to_string(config).unwrap();
        let listen = text.split("listen = \"").nth(1).unwrap().split('"').next().unwrap();
        let api: SocketAddr = listen.parse().unwrap();
        let mut cmd = linesight();
        cmd.args(["hub", "--config"]).arg(config);
        let (child, log) = spawn_logged(cmd);
        let hub = Self { api, config: config.to_path_buf(), child: Some(child), log };
        wait_for(
            Duration::from_secs(60),
            || format!("the hub's /readyz; its log:\n{}", hub.log.lock().unwrap()),
            || http_get(hub.api, "/readyz").ok().filter(|(s, _)| *s == 200),
        );
        hub
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.api, path).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn stop(&mut self) {
        if let Some(mut g) = self.child.take() {
            let status = terminate(&mut g);
            assert!(status.success(), "the hub exited with {status}; its log:\n{}", self.log.lock().unwrap());
        }
    }
}

/// Start a process with its stderr collected.
pub fn spawn_logged(mut cmd: Command) -> (Guard, Arc<Mutex<String>>) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .env("LINESIGHT_LOG", "info,ort=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let lines = BufReader::new(child.stderr.take().unwrap());
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(super::strip_ansi(&line) + "\n"));
        }
    });
    (Guard(child), log)
}

/// A station's folder and config: one synthetic camera at `fps`, the demo model, a store, the API
/// on a free port, and `[fleet]` to `nats` as `site`/`name`.
pub fn station_config(dir: &Path, name: &str, nats: &Nats, fps: f64, seed: u64, fleet_extra: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("station.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[station]
name = "{name}"

[[camera]]
id = "cam"
fps = {fps}
[camera.source]
kind = "synthetic"
surface = "brushed_metal"
defect_probability = 0.4
seed = {seed}

[model]
package = "{model}"

[[rule]]
class = "defect"
min_score = 0.5
min_area_px = 12

[store]
path = "station.db"

[api]
listen = "127.0.0.1:0"

[fleet]
servers = ["{nats}"]
site = "plant1"
status_interval_ms = 500
{fleet_extra}
"#,
            model = repo().join("models/demo").display(),
            nats = nats.url(),
        ),
    )
    .unwrap();
    path
}

/// A running station: its process, admin address and log.
pub struct Station {
    pub child: Guard,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Station {
    pub fn start(config: &Path, max_frames: Option<u64>) -> Self {
        let mut cmd = super::linesight_run();
        cmd.arg("--config").arg(config);
        if let Some(n) = max_frames {
            cmd.args(["--max-frames", &n.to_string()]);
        }
        let (child, admin, log) = spawn_with_admin(cmd);
        Self { child, admin, log }
    }

    /// The station API's address, from its log.
    pub fn api(&self) -> SocketAddr {
        wait_for(
            Duration::from_secs(60),
            || format!("the API address; log:\n{}", self.log.lock().unwrap()),
            || {
                let log = self.log.lock().unwrap();
                let line = log.lines().find(|l| l.contains("API listener"))?;
                line.split("address=").nth(1)?.split_whitespace().next()?.parse().ok()
            },
        )
    }

    /// Wait for the process to end by itself (`--max-frames`), successfully.
    pub fn wait(mut self) {
        let status =
            wait_for(Duration::from_secs(120), || "the station to finish".into(), || self.child.0.try_wait().unwrap());
        assert!(status.success(), "the station failed; log:\n{}", self.log.lock().unwrap());
    }
}

/// `(station_row, camera, seq, verdict, counted classes)` of every row in a station's store.
pub fn station_rows(db: &Path) -> Vec<(i64, String, i64, String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT i.id, i.camera, i.seq, i.verdict, COALESCE((SELECT GROUP_CONCAT(c, ',') FROM (SELECT d.class || ':' || COUNT(*) AS c \
             FROM defects d WHERE d.inspection_id = i.id AND d.counted = 1 GROUP BY d.class ORDER BY d.class)), '') \
             FROM inspections i ORDER BY i.id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The same rows as the hub holds them for `station`.
pub fn hub_rows(pg: &Postgres, station: &str) -> Vec<(i64, String, i64, String, String)> {
    pg.query(&format!(
        "SELECT i.station_row, i.camera, i.seq, i.verdict, COALESCE((SELECT string_agg(c.class || ':' || c.defects, ',' ORDER BY c.class) \
         FROM inspection_classes c WHERE c.inspection_id = i.id), '') FROM inspections i WHERE i.station = '{station}' ORDER BY i.station_row"
    ))
    .into_iter()
    .map(|r| (r[0].parse().unwrap(), r[1].clone(), r[2].parse().unwrap(), r[3].clone(), r.get(4).cloned().unwrap_or_default()))
    .collect()
}
