//! `[fleet]`: the station's link to the plant's hub over NATS JetStream (the fleet module).
//! Records go out from the result store (the outbox), recipes come in for the products named here.

use super::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a station does with a recipe the hub publishes for one of its products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipePolicy {
    /// Run it as the recipe's shadow model: compared with the live model, never on the line,
    /// until somebody promotes it (the safe default for a model proven on another line).
    #[default]
    Shadow,
    /// Make it the recipe's live model at once (the old one kept for rollback).
    Activate,
    /// Only fetch and verify it (reported to the hub), change nothing.
    Fetch,
}

impl RecipePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipePolicy::Shadow => "shadow",
            RecipePolicy::Activate => "activate",
            RecipePolicy::Fetch => "fetch",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct FleetConfig {
    /// NATS server URLs, tried in turn: `nats://host:4222`, or `tls://host:4222` for TLS (the
    /// system's roots). Usually the site's leaf node, else the hub's cluster.
    pub servers: Vec<String>,
    /// The site (plant) this station belongs to: 1-64 letters, digits, '-' or '_'.
    pub site: String,
    /// This station's id in the plant [default: `[station] name`].
    #[serde(default)]
    pub station: Option<String>,
    /// User and password for the NATS server (leave out for none).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding this station's NKey seed (`SU...`), relative to the config file; instead of
    /// user and password.
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// Products this station makes, each with the local recipe a published recipe for it
    /// replaces: `products = { "tile-a" = "default" }`.
    #[serde(default)]
    pub products: BTreeMap<String, String>,
    /// What to do with a published recipe: `shadow` (default), `activate` or `fetch`.
    #[serde(default)]
    pub recipe_policy: RecipePolicy,
    /// Where fetched recipe packages are unpacked, relative to the config file.
    #[serde(default = "default_packages_dir")]
    pub packages_dir: PathBuf,
    /// This station's API as the hub's users reach it (`http(s)://host:port`), sent with its
    /// status so the plant can fetch archived images from the station.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Records per published batch (each acknowledged by the stream before the next).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How often the station sends its status (recipes, rates, outbox lag), in ms.
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
}

fn default_packages_dir() -> PathBuf {
    "fleet-packages".into()
}
fn default_batch() -> usize {
    256
}
fn default_status_interval_ms() -> u64 {
    5_000
}

impl FleetConfig {
    /// The station id used in subjects: `station`, else the `[station] name`.
    pub fn station_id<'a>(&'a self, station_name: &'a str) -> &'a str {
        self.station.as_deref().unwrap_or(station_name)
    }
}

/// Letters, digits, '-' and '_' only: a NATS subject token and a safe folder name.
pub fn is_fleet_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Every problem with `[fleet]`, each with its path. `station_name`: `[station] name`;
/// `recipes`: the station's recipe names; `has_store`: whether `[store]` is set (the outbox).
pub(super) fn validate(f: &FleetConfig, station_name: &str, recipes: &[String], has_store: bool) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut check = |ok: bool, path: &str, value: &dyn std::fmt::Debug, problem: &str| {
        if !ok {
            errors.push(ConfigError { path: path.into(), value: format!("{value:?}"), problem: problem.into() });
        }
    };
    check(
        has_store,
        "fleet",
        &"no [store]",
        "the fleet publisher sends what the result store holds: add [store] path = \"linesight.db\"",
    );
    check(
        !f.servers.is_empty(),
        "fleet.servers",
        &f.servers,
        "give at least one NATS server, e.g. \"nats://hub:4222\"",
    );
    for (i, s) in f.servers.iter().enumerate() {
        check(
            s.starts_with("nats://") || s.starts_with("tls://"),
            &format!("fleet.servers[{i}]"),
            s,
            "a NATS URL: nats://host:port, or tls://host:port for TLS",
        );
    }
    check(is_fleet_id(&f.site), "fleet.site", &f.site, "use 1-64 letters, digits, '-' or '_'");
    let station = f.station_id(station_name);
    check(
        is_fleet_id(station),
        if f.station.is_some() { "fleet.station" } else { "station.name" },
        &station,
        "the station id in the plant: use 1-64 letters, digits, '-' or '_' (set [fleet] station)",
    );
    check(
        f.user.is_some() == f.password.is_some(),
        "fleet.password",
        &"<hidden>",
        "give both user and password, or neither",
    );
    check(
        !(f.user.is_some() && f.nkey_seed_file.is_some()),
        "fleet.nkey_seed_file",
        &f.nkey_seed_file,
        "use user and password or an NKey seed, not both",
    );
    for (product, recipe) in &f.products {
        check(
            is_fleet_id(product),
            &format!("fleet.products.{product}"),
            product,
            "use 1-64 letters, digits, '-' or '_'",
        );
        check(
            recipes.contains(recipe),
            &format!("fleet.products.{product}"),
            recipe,
            &format!("name one of the station's recipes: {}", recipes.join(", ")),
        );
    }
    check((1..=10_000).contains(&f.batch), "fleet.batch", &f.batch, "must be 1..=10000 records");
    check(
        (100..=3_600_000).contains(&f.status_interval_ms),
        "fleet.status_interval_ms",
        &f.status_interval_ms,
        "must be 100..=3600000 ms",
    );
    if let Some(url) = &f.api_url {
        check(
            url.starts_with("http://") || url.starts_with("https://"),
            "fleet.api_url",
            url,
            "the station API's http:// or https:// address as the plant reaches it",
        );
    }
    errors
}
