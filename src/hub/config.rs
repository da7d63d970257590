//! `hub.toml`: where the hub reads (NATS), writes (PostgreSQL) and answers (its API).

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    #[serde(default)]
    pub hub: HubSection,
    pub nats: NatsSection,
    pub postgres: PostgresSection,
    #[serde(default)]
    pub api: HubApiSection,
    /// The folder relative paths are resolved against (the config file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// This hub process's name, recorded with every row it writes [default: host name and pid].
    #[serde(default)]
    pub id: Option<String>,
    /// The durable consumer the hubs share: several hub processes with the same name split the
    /// work.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Messages taken and written per PostgreSQL transaction.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

impl Default for HubSection {
    fn default() -> Self {
        Self { id: None, consumer: default_consumer(), batch: default_batch() }
    }
}

fn default_consumer() -> String {
    "hub".into()
}
fn default_batch() -> usize {
    1000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// `nats://host:4222` (or `tls://`), one per cluster node.
    pub servers: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// Copies JetStream keeps of the stream and the recipe buckets: 1 on one server, 3 on a
    /// 3-node cluster (survives the loss of one node).
    #[serde(default = "one")]
    pub replicas: usize,
}

fn one() -> usize {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// A libpq connection string or URL: `host=db port=5432 user=linesight dbname=plant` or
    /// `postgresql://linesight@db/plant`. The password may come from `PGPASSWORD` instead.
    pub url: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubApiSection {
    /// `IP:PORT` of the plant API and `/metrics`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// When set, every `/api/v1` request must carry `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
    /// Offset of local time from UTC, in minutes, for day and shift buckets [default: this
    /// machine's].
    #[serde(default)]
    pub utc_offset_minutes: Option<i32>,
}

impl Default for HubApiSection {
    fn default() -> Self {
        Self { listen: default_listen(), token: None, utc_offset_minutes: None }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}

impl HubConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the hub config {}", path.display()))?;
        let mut cfg: HubConfig =
            toml::from_str(&text).with_context(|| format!("hub config {}: not a valid hub.toml", path.display()))?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.validate().with_context(|| format!("hub config {}", path.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if self.nats.servers.is_empty() {
            bail!("nats.servers: give at least one NATS server, e.g. \"nats://127.0.0.1:4222\"");
        }
        if let Some(s) = self.nats.servers.iter().find(|s| !(s.starts_with("nats://") || s.starts_with("tls://"))) {
            bail!("nats.servers: {s:?} is not a NATS URL: nats://host:port (or tls://)");
        }
        if self.nats.user.is_some() != self.nats.password.is_some() {
            bail!("nats.password: give both user and password, or neither");
        }
        if !(1..=5).contains(&self.nats.replicas) {
            bail!("nats.replicas = {}: must be 1..=5 (3 on a 3-node cluster)", self.nats.replicas);
        }
        if !crate::config::fleet::is_fleet_id(&self.hub.consumer) {
            bail!("hub.consumer = {:?}: use 1-64 letters, digits, '-' or '_'", self.hub.consumer);
        }
        if !(1..=10_000).contains(&self.hub.batch) {
            bail!("hub.batch = {}: must be 1..=10000 messages", self.hub.batch);
        }
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!("api.listen = {:?}: give IP:PORT, e.g. \"0.0.0.0:8090\"", self.api.listen);
        }
        if self.api.token.as_ref().is_some_and(|t| t.len() < 16) {
            bail!("api.token: use at least 16 characters (or remove it)");
        }
        if let Some(o) = self.api.utc_offset_minutes
            && !(-840..=840).contains(&o)
        {
            bail!("api.utc_offset_minutes = {o}: must be -840..=840");
        }
        self.postgres.url.parse::<tokio_postgres::Config>().map_err(|e| {
            anyhow::anyhow!("postgres.url: {e}: give e.g. \"host=127.0.0.1 port=5432 user=linesight dbname=plant\"")
        })?;
        Ok(())
    }

    /// This hub's id: `[hub] id`, else host name and pid.
    pub fn hub_id(&self) -> String {
        self.hub.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
            format!("{}-{}", if host.is_empty() { "hub" } else { &host }, std::process::id())
        })
    }

    /// The NATS credentials, the NKey seed read from its file.
    pub fn credentials(&self) -> Result<crate::fleet::connect::Credentials> {
        let nkey_seed = match &self.nats.nkey_seed_file {
            Some(f) => {
                let path = self.base_dir.join(f);
                Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("nats.nkey_seed_file {}: cannot read", path.display()))?
                        .trim()
                        .to_string(),
                )
            }
            None => None,
        };
        Ok(crate::fleet::connect::Credentials {
            user: self.nats.user.clone(),
            password: self.nats.password.clone(),
            nkey_seed,
        })
    }
}
