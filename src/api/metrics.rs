//! The API's own metrics: requests and their durations per route template and status, and where
//! `stats` answers came from. Served with the station's on the admin listener's `/metrics`.

use crate::telemetry::names;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::Arc;
use std::time::Instant;

/// Where a `stats` answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A cached answer, younger than `[api] stats_cache_ms`.
    Hit,
    /// A cached answer old enough that this request started a background query to replace it.
    HitRefreshing,
    /// The answer of an identical query already running when this one came.
    Shared,
    /// Queried for this request (cache off, new query, or expired).
    Miss,
}

impl CacheOutcome {
    fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit | CacheOutcome::HitRefreshing => names::API_CACHE_HIT,
            CacheOutcome::Shared => names::API_CACHE_SHARED,
            CacheOutcome::Miss => names::API_CACHE_MISS,
        }
    }
}

/// The API's metric handles. Cloning shares them.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    stats_cache: IntCounterVec,
    refused: IntCounterVec,
}

impl ApiMetrics {
    /// The handles, registered in `registry` when given (else they count, unexported).
    pub fn new(registry: Option<&Registry>) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(names::API_REQUESTS, names::API_REQUESTS_HELP),
            &[names::API_ROUTE, names::API_STATUS],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(names::API_REQUEST_SECONDS, names::API_REQUEST_SECONDS_HELP)
                .buckets(names::API_REQUEST_BUCKETS.to_vec()),
            &[names::API_ROUTE],
        )?;
        let stats_cache = IntCounterVec::new(
            Opts::new(names::API_STATS_CACHE, names::API_STATS_CACHE_HELP),
            &[names::API_CACHE_RESULT],
        )?;
        // Every cache result shows from the first scrape, at 0.
        for result in [names::API_CACHE_HIT, names::API_CACHE_SHARED, names::API_CACHE_MISS, names::API_CACHE_REFRESH] {
            stats_cache.with_label_values(&[result]);
        }
        let refused = IntCounterVec::new(
            Opts::new(names::API_REFUSED, names::API_REFUSED_HELP),
            &[names::API_REFUSED_REASON, names::API_REFUSED_ROLE],
        )?;
        if let Some(registry) = registry {
            registry.register(Box::new(refused.clone()))?;
            registry.register(Box::new(requests.clone()))?;
            registry.register(Box::new(seconds.clone()))?;
            registry.register(Box::new(stats_cache.clone()))?;
        }
        Ok(Self { requests, seconds, stats_cache, refused })
    }

    pub(super) fn stats_answered(&self, outcome: CacheOutcome) {
        self.stats_cache.with_label_values(&[outcome.label()]).inc();
        if outcome == CacheOutcome::HitRefreshing {
            self.stats_cache.with_label_values(&[names::API_CACHE_REFRESH]).inc();
        }
    }
}

impl ApiMetrics {
    /// A request refused by the token check, with the role it needed.
    pub(super) fn refused(&self, refusal: super::auth::Refusal, needed: super::auth::Role) {
        let reason = match refusal {
            super::auth::Refusal::Unauthenticated => "unauthenticated",
            super::auth::Refusal::Forbidden { .. } => "forbidden",
        };
        self.refused.with_label_values(&[reason, needed.as_str()]).inc();
    }

    /// Requests refused so far for `reason` (`unauthenticated` or `forbidden`), any role.
    pub fn refused_count(&self, reason: &str) -> u64 {
        ["viewer", "operator", "admin"].iter().map(|r| self.refused.with_label_values(&[reason, r]).get()).sum()
    }
}

impl Default for ApiMetrics {
    /// Unregistered handles (tests, benchmarks).
    fn default() -> Self {
        Self::new(None).expect("valid metric definitions")
    }
}

/// Middleware (outermost, so 401, 408 and 413 answers count too): one count and one duration
/// per request, labelled with the route template that matched (`/api/v1/inspections/{id}`),
/// never the path itself, so the label set stays bounded whatever clients send.
pub(super) async fn observe(State(metrics): State<Arc<ApiMetrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or(names::API_ROUTE_UNMATCHED, MatchedPath::as_str);
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.seconds.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[route, response.status().as_str()]).inc();
    response
}
