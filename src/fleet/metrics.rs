//! The fleet link's metrics on the station's `/metrics`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

pub struct FleetMetrics {
    /// Records the stream acknowledged.
    pub published: IntCounter,
    /// Publishes or acknowledgements that failed (each retried).
    pub publish_errors: IntCounter,
    /// 1 while the NATS connection is up.
    pub link_up: IntGauge,
    /// Rows in the store not yet acknowledged by the stream.
    pub unsent: IntGauge,
    /// Age of the oldest unsent row, in seconds (0 when none).
    pub oldest_unsent_age_s: IntGauge,
    /// 1 when the unsent rows near the store's retention (they would be deleted unsent).
    pub near_retention: IntGauge,
    /// Recipes fetched from the hub, by outcome (`ok`, `failed`).
    pub recipes: IntCounterVec,
}

impl FleetMetrics {
    pub fn new(registry: Option<&prometheus::Registry>) -> prometheus::Result<Self> {
        let m = Self {
            published: IntCounter::new("linesight_fleet_published_total", "Records the plant's stream acknowledged.")?,
            publish_errors: IntCounter::new(
                "linesight_fleet_publish_errors_total",
                "Fleet publishes or acknowledgements that failed (each retried from the outbox).",
            )?,
            link_up: IntGauge::new("linesight_fleet_link_up", "1 while the station is connected to the plant's NATS.")?,
            unsent: IntGauge::new(
                "linesight_fleet_outbox_unsent",
                "Stored records not yet acknowledged by the plant's stream.",
            )?,
            oldest_unsent_age_s: IntGauge::new(
                "linesight_fleet_outbox_oldest_unsent_age_seconds",
                "Age of the oldest record not yet acknowledged by the plant's stream (0: none).",
            )?,
            near_retention: IntGauge::new(
                "linesight_fleet_outbox_near_retention",
                "1 when unsent records near the store's retention and would be deleted unsent: restore the link or raise [store] retention.",
            )?,
            recipes: IntCounterVec::new(
                Opts::new("linesight_fleet_recipes_total", "Recipes fetched from the hub, by outcome."),
                &["outcome"],
            )?,
        };
        if let Some(r) = registry {
            r.register(Box::new(m.published.clone()))?;
            r.register(Box::new(m.publish_errors.clone()))?;
            r.register(Box::new(m.link_up.clone()))?;
            r.register(Box::new(m.unsent.clone()))?;
            r.register(Box::new(m.oldest_unsent_age_s.clone()))?;
            r.register(Box::new(m.near_retention.clone()))?;
            r.register(Box::new(m.recipes.clone()))?;
        }
        Ok(m)
    }
}
