//! `linesight hub`: the plant's side of plant scale. It takes every station's records from the
//! NATS JetStream stream (a durable consumer that several hub processes share) into PostgreSQL,
//! answers the plant API (the station's statistics and traceability across stations, and the
//! stations' health), and publishes recipes to the stations (`linesight publish-recipe`). The
//! station's side is `crate::fleet`; topology and sizing are in docs/FLEET.md.

pub mod api;
pub mod config;
pub mod ingest;
mod metrics;
pub mod pg;
pub mod publish;
pub mod schema;

pub use config::HubConfig;
pub use metrics::HubMetrics;

use anyhow::{Context, Result};
use async_nats::jetstream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Run a hub until SIGINT or SIGTERM.
pub fn run(config: &Path) -> Result<()> {
    let cfg = HubConfig::load(config)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    runtime()?.block_on(serve(cfg, stop))
}

async fn serve(cfg: HubConfig, stop: Arc<AtomicBool>) -> Result<()> {
    let hub_id = cfg.hub_id();
    let metrics = Arc::new(HubMetrics::new()?);
    let pg = Arc::new(pg::Pg::new(&cfg.postgres.url)?);
    // The schema first: a hub that cannot reach its database, or finds a newer schema, says so
    // and exits rather than serving errors.
    let mut client = pg.connect().await.context("cannot connect to PostgreSQL ([postgres] url)")?;
    let found = schema::migrate(&mut client).await?;
    drop(client);
    tracing::info!(from = found, to = schema::VERSION, "hub database schema ready");

    let listener = tokio::net::TcpListener::bind(&cfg.api.listen)
        .await
        .with_context(|| format!("api.listen {}: cannot listen (taken?)", cfg.api.listen))?;
    tracing::info!(address = %listener.local_addr()?, hub = %hub_id, "hub API listening");
    let state = Arc::new(api::HubState {
        pg: Arc::clone(&pg),
        metrics: Arc::clone(&metrics),
        token_sha256: cfg.api.token.as_ref().map(|t| {
            use sha2::{Digest, Sha256};
            Sha256::digest(t.as_bytes()).into()
        }),
        utc_offset_minutes: cfg.api.utc_offset_minutes,
    });
    let server_stop = Arc::clone(&stop);
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        while !server_stop.load(Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let server = tokio::spawn(async move { server.await });

    let client =
        crate::fleet::connect::connect(&cfg.nats.servers, &format!("linesight-hub {hub_id}"), &cfg.credentials()?)
            .await
            .context("NATS ([nats] servers)")?;
    let js = jetstream::new(client.clone());
    let settings = ingest::Settings {
        consumer: cfg.hub.consumer.clone(),
        batch: cfg.hub.batch,
        hub_id,
        replicas: cfg.nats.replicas,
    };
    ingest::run(js, client.clone(), pg, settings, metrics, Arc::clone(&stop)).await;
    let _ = client.flush().await;
    server.await.context("hub API task")?.context("hub API")?;
    tracing::info!("hub stopped");
    Ok(())
}

/// `linesight publish-recipe`: publish a model package as a product's recipe, through the hub
/// config's NATS servers.
pub fn publish_recipe(
    config: &Path,
    product: &str,
    package: &Path,
    threshold: Option<f32>,
    rules: Option<&Path>,
) -> Result<()> {
    let cfg = HubConfig::load(config)?;
    let rules: Option<serde_json::Value> = match rules {
        Some(f) => Some(
            serde_json::from_str(&std::fs::read_to_string(f).with_context(|| format!("--rules {}", f.display()))?)
                .with_context(|| format!("--rules {}: not JSON", f.display()))?,
        ),
        None => None,
    };
    runtime()?.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .name("linesight publish-recipe")
            .connection_timeout(std::time::Duration::from_secs(10));
        let creds = cfg.credentials()?;
        let client = match (&creds.user, &creds.password, &creds.nkey_seed) {
            (Some(u), Some(p), _) => client.user_and_password(u.clone(), p.clone()),
            (_, _, Some(seed)) => client.nkey(seed.clone()),
            _ => client,
        }
        .connect(&cfg.nats.servers)
        .await
        .context("cannot reach NATS ([nats] servers)")?;
        let js = jetstream::new(client.clone());
        let published =
            publish::publish(&js, product, package, threshold, rules, &cfg.hub_id(), cfg.nats.replicas).await?;
        client.flush().await?;
        println!("{}", serde_json::to_string_pretty(&published)?);
        Ok(())
    })
}
