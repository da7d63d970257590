//! Telemetry: the Prometheus registry the admin listener serves, the station's metric handles,
//! and readiness.
//!
//! Two kinds of metric, so that the frame path never takes a lock or allocates:
//! - the station's counters already live in [`Accounting`](crate::pipeline::accounting) as plain
//!   atomics; a collector reads them at scrape time (frames, verdicts, drops, cameras up);
//! - durations and defects are histograms and counters whose labelled handles are fetched once,
//!   when the station is built ([`StationMetrics`]), and only `observe`/`inc` (atomic adds) run
//!   per frame.
//!
//! Every name is in [`names`].

pub mod burst;
pub mod cpu_time;
pub mod names;
pub mod readiness;
mod station;

pub use readiness::Readiness;
pub use station::StationMetrics;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::Arc;

/// The process-wide registry and readiness, shared by the station and the admin listener.
pub struct Telemetry {
    pub registry: Registry,
    pub readiness: Arc<Readiness>,
}

impl Telemetry {
    /// A registry holding the process metrics, build info and the readiness gauge. The station
    /// adds its own metrics when it is built.
    pub fn new() -> Self {
        let registry = Registry::new();
        let readiness = Arc::new(Readiness::default());
        let register = |c: Box<dyn Collector>| registry.register(c).expect("fresh registry: names are unique");
        #[cfg(target_os = "linux")]
        register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        let build = IntGaugeVec::new(Opts::new(names::BUILD_INFO, names::BUILD_INFO_HELP), &[names::VERSION])
            .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        register(Box::new(build));
        register(Box::new(ReadyCollector::new(Arc::clone(&readiness))));
        Self { registry, readiness }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding to a Vec fails only on families without metrics, which gather() leaves out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// `linesight_ready`, read from the readiness latches at scrape time.
struct ReadyCollector {
    readiness: Arc<Readiness>,
    desc: Desc,
}

impl ReadyCollector {
    fn new(readiness: Arc<Readiness>) -> Self {
        let desc = Desc::new(names::READY.into(), names::READY_HELP.into(), Vec::new(), Default::default())
            .expect("valid metric");
        Self { readiness, desc }
    }
}

impl Collector for ReadyCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }
    fn collect(&self) -> Vec<MetricFamily> {
        let value = f64::from(u8::from(self.readiness.is_ready()));
        vec![family(names::READY, names::READY_HELP, MetricType::GAUGE, vec![gauge(&[], value)])]
    }
}

/// A metric family built at scrape time.
fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name((*name).into());
            l.set_value((*value).into());
            l
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_gauge(g);
    m
}
