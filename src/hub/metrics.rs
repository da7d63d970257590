//! The hub's metrics on its `/metrics`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

pub struct HubMetrics {
    pub registry: Registry,
    /// Inspections written (first time seen).
    pub ingested: IntCounter,
    /// Inspections seen again (a redelivery, a republish) and not written twice.
    pub duplicates: IntCounter,
    /// Messages that could not be read, parked in `parked`.
    pub parked: IntCounter,
    /// Status messages taken.
    pub statuses: IntCounter,
    /// Batches that failed to write (retried).
    pub write_errors: IntCounter,
    /// Seconds from the station's verdict to the row in PostgreSQL.
    pub lag_seconds: Histogram,
    /// Seconds to write one batch.
    pub batch_seconds: Histogram,
    /// Messages in the stream the shared consumer has not delivered yet.
    pub pending: IntGauge,
    /// 1 while PostgreSQL is reachable.
    pub postgres_up: IntGauge,
    /// 1 while NATS is connected.
    pub nats_up: IntGauge,
}

impl HubMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| -> prometheus::Result<Histogram> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let lag_buckets = vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];
        let m = Self {
            ingested: counter("linesight_hub_ingested_total", "Inspections written to PostgreSQL.")?,
            duplicates: counter(
                "linesight_hub_duplicates_total",
                "Inspections received again (redelivered or republished) and not written twice.",
            )?,
            parked: counter(
                "linesight_hub_parked_total",
                "Messages that could not be read, parked in the parked table.",
            )?,
            statuses: counter("linesight_hub_statuses_total", "Station status messages taken.")?,
            write_errors: counter("linesight_hub_write_errors_total", "Batches that failed to write (retried).")?,
            lag_seconds: histogram(
                "linesight_hub_lag_seconds",
                "Seconds from a station's verdict to its row in PostgreSQL.",
                lag_buckets,
            )?,
            batch_seconds: histogram(
                "linesight_hub_batch_seconds",
                "Seconds to write one batch to PostgreSQL.",
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            )?,
            pending: gauge(
                "linesight_hub_consumer_pending",
                "Messages the hubs' shared consumer has not delivered yet.",
            )?,
            postgres_up: gauge("linesight_hub_postgres_up", "1 while PostgreSQL is reachable.")?,
            nats_up: gauge("linesight_hub_nats_up", "1 while the hub is connected to NATS.")?,
            registry,
        };
        Ok(m)
    }
}
