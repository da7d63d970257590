//! The station's side of plant scale: its records out to the hub, recipes in from it, over NATS
//! JetStream (`[fleet]`; the hub is `linesight hub`; topology and sizing in docs/FLEET.md).
//!
//! One thread of its own, with a small async runtime, at a low CPU priority: the line never waits
//! for it. It tails the result store (the durable [`outbox`]) and publishes each inspection with a
//! message id that makes a redelivery harmless, moving the outbox cursor only over what the stream
//! acknowledged; it sends the station's status (recipes and models per camera, rates, outbox
//! lag); and it watches the recipes published for the station's products ([`recipes`]). A link
//! that is down for hours costs nothing but the outbox growing (alarmed near the store's
//! retention); a restart resumes from the cursor.

pub mod outbox;
pub mod recipes;
pub mod wire;

pub mod connect;
mod metrics;
mod publisher;

pub use metrics::FleetMetrics;

use crate::api::LiveRecipes;
use crate::config::LoadedConfig;
use crate::config::fleet::FleetConfig;
use crate::pipeline::Accounting;
use crate::sinks::store::Retention;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;

/// What the fleet thread needs from the station.
pub struct StationLink {
    pub config: FleetConfig,
    pub site: String,
    pub station: String,
    pub store: PathBuf,
    pub retention: Retention,
    pub packages_dir: PathBuf,
    pub accounting: Arc<Accounting>,
    /// The station's recipes (for its status, and to install what the hub publishes).
    pub recipes: Arc<LiveRecipes>,
}

/// The running fleet link; [`Fleet::stop`] ends it.
pub struct Fleet {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Sleep `d` in short steps; true when told to stop meanwhile.
pub async fn sleep_or_stop(stop: &AtomicBool, d: std::time::Duration) -> bool {
    let step = std::time::Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Relaxed) {
            return true;
        }
        let s = left.min(step);
        tokio::time::sleep(s).await;
        left -= s;
    }
    stop.load(Relaxed)
}

impl Fleet {
    /// Start the link for the station's `[fleet]` section. The outbox opens here (a store it
    /// cannot use fails the start); the NATS connection is made in the background and retried
    /// for as long as it takes.
    pub fn start(
        loaded: &LoadedConfig,
        store: PathBuf,
        retention: Retention,
        accounting: Arc<Accounting>,
        recipes: Arc<LiveRecipes>,
        registry: Option<&prometheus::Registry>,
    ) -> Result<Self> {
        let config = loaded.config.fleet.clone().context("no [fleet] section")?;
        let station = config.station_id(&loaded.config.station.name).to_string();
        let link = StationLink {
            site: config.site.clone(),
            station,
            store,
            retention,
            packages_dir: loaded.resolve(&config.packages_dir),
            accounting,
            recipes,
            config,
        };
        let outbox = outbox::Outbox::open(&link.store, retention, &link.site, &link.station, &link.config.products)
            .with_context(|| format!("fleet: cannot use the result store {} as the outbox", link.store.display()))?;
        let metrics = FleetMetrics::new(registry)?;
        let nkey = match &link.config.nkey_seed_file {
            Some(f) => Some(
                std::fs::read_to_string(loaded.resolve(f))
                    .with_context(|| format!("fleet.nkey_seed_file {}: cannot read the NKey seed", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("fleet".into()).spawn(move || {
            lower_priority();
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "fleet: cannot start its runtime; nothing is published"),
            };
            rt.block_on(publisher::run(link, outbox, nkey, metrics, thread_stop));
        })?;
        tracing::info!("fleet link started");
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stop publishing (what is unsent stays in the outbox for the next start).
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The fleet thread yields the CPU to the pipeline's (nice 10, as the API's threads).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = crate::http_server::priority::set(10) {
        tracing::debug!(error = %e, "fleet: cannot lower its thread's priority");
    }
}
