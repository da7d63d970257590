//! The API's routes (JSON; reads are `GET`, the review labels `POST`): [`router`] is tested with
//! `oneshot`, without a server. Who may call what: [`super::auth`].
//!
//! Timestamps in query parameters are unix milliseconds or RFC 3339; in responses they are unix
//! milliseconds (`*_unix_ms`) plus an RFC 3339 copy in UTC for people (`captured_at`, `start`).

use super::auth::{Caller, Refusal, Role, Tokens};
use super::cache::{StatsCache, StatsKey};
use super::db::{self, Filter};
use super::error::ApiError;
use super::metrics::{self, ApiMetrics, CacheOutcome};
use super::params::{self, Bucket};
use crate::pipeline::accounting::Accounting;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// Largest request body accepted (a review label with its note fits many times over).
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;
/// A request still unanswered after this gets 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `stats` window when `from` is absent: the 24 hours before `to`.
const DEFAULT_WINDOW_MS: i64 = 86_400_000;

/// What the handlers share.
pub struct ApiState {
    /// The result store's database file (opened read-only per request).
    pub db: PathBuf,
    /// The running station's counters, for `/cameras`: set once the station is built (the API
    /// listens while the model loads; until then `/cameras` lists none).
    pub accounting: Arc<OnceLock<Arc<Accounting>>>,
    /// The running station's recipes and their switch: set once the station is built.
    pub recipes: Arc<OnceLock<Arc<super::recipes::LiveRecipes>>>,
    /// Teach jobs started through the API.
    pub teach_jobs: Arc<super::teach_jobs::TeachJobs>,
    /// The live view's pictures: set once the station is built.
    pub live: Arc<OnceLock<Arc<crate::ui::live::LiveView>>>,
    /// The station's readiness, for `/api/v1/health` (none in tests without a station).
    pub readiness: Option<Arc<crate::telemetry::Readiness>>,
    /// The tokens that may read and write, and their roles (see [`super::auth`]).
    pub tokens: Tokens,
    /// Local time's offset from UTC for day and shift buckets; `None` = this machine's.
    pub utc_offset_minutes: Option<i32>,
    /// The image archive's folder, when the station archives images.
    pub archive_dir: Option<PathBuf>,
    /// How long a `stats` answer is reused (`[api] stats_cache_ms`); zero: never (no cache).
    pub stats_cache_ttl: Duration,
    /// The process's metric registry, for the line links on `/api/v1/health`.
    pub registry: Option<prometheus::Registry>,
    /// The Grafana dashboard's address, linked from the health page (`[api] grafana_url`).
    pub grafana_url: Option<String>,
    /// Request and cache metrics (register them with [`ApiMetrics::new`] to export them).
    pub metrics: Arc<ApiMetrics>,
    stats_cache: Arc<StatsCache>,
    /// Last `/cameras` sample (time, frames captured per camera), for the frame rate.
    fps_sample: Mutex<Option<FpsSample>>,
    /// Database queries running at once (see [`max_concurrent_queries`]).
    queries: Arc<tokio::sync::Semaphore>,
}

/// At most this many database queries run at once: half this machine's cores, at least one. The
/// other requests wait (within [`REQUEST_TIMEOUT`]) rather than take CPU from the pipeline, and
/// the threads that run them have a lower CPU priority than the pipeline's (see
/// [`ListenerKind::nice`](crate::http_server::ListenerKind::nice)).
pub fn max_concurrent_queries() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// When, frames captured per camera then, and the rates computed then.
type FpsSample = (Instant, Vec<u64>, Vec<f64>);

impl ApiState {
    pub fn new(db: PathBuf, accounting: Option<Arc<Accounting>>) -> Self {
        Self {
            db,
            accounting: Arc::new(accounting.map_or_else(OnceLock::new, OnceLock::from)),
            recipes: Arc::default(),
            live: Arc::default(),
            readiness: None,
            teach_jobs: Arc::default(),
            tokens: Tokens::default(),
            utc_offset_minutes: None,
            archive_dir: None,
            stats_cache_ttl: Duration::from_millis(crate::config::ApiConfig::default().stats_cache_ms),
            registry: None,
            grafana_url: None,
            metrics: Arc::default(),
            stats_cache: Arc::default(),
            fps_sample: Mutex::new(None),
            queries: Arc::new(tokio::sync::Semaphore::new(max_concurrent_queries())),
        }
    }

    /// The running station's recipes; 503 while it is still being built.
    pub(super) fn live_recipes(&self) -> Result<&Arc<super::recipes::LiveRecipes>, ApiError> {
        self.recipes.get().ok_or_else(|| ApiError::Unavailable("the station is still starting".into()))
    }
}

pub(super) type Shared = Arc<ApiState>;
pub(super) type Params = Query<HashMap<String, String>>;

pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    let metrics = Arc::clone(&state.metrics);
    let api = Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/inspections", get(list))
        .route("/api/v1/inspections/{id}", get(inspection))
        .route("/api/v1/inspections/{id}/image", get(image))
        .route("/api/v1/parts/{part_id}", get(part))
        .route("/api/v1/cameras", get(cameras))
        .route("/api/v1/inspections/{id}/review", post(review))
        .route("/api/v1/review/queue", get(review_queue))
        .route("/api/v1/operating-point", get(operating_point).post(set_operating_point))
        .route("/api/v1/recipes", get(recipes))
        .route("/api/v1/recipes/{name}", patch(change_recipe))
        .route("/api/v1/recipes/{name}/activate", post(activate))
        .route("/api/v1/recipes/{name}/model", post(install_model))
        .route("/api/v1/recipes/{name}/rollback", post(rollback))
        .route(
            "/api/v1/recipes/{name}/shadow",
            get(super::shadow::status).post(super::shadow::start).delete(super::shadow::stop),
        )
        .route("/api/v1/recipes/{name}/shadow/promote", post(super::shadow::promote))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/teach", post(start_teach))
        .route("/api/v1/teach/{id}", get(teach_job))
        .route("/api/v1/openapi.json", get(|| async { Json(super::openapi::document()) }))
        .route("/api/v1/live", get(super::live::stream))
        .route("/api/v1/health", get(super::health::health))
        .fallback(|| async { ApiError::NotFound("no such endpoint: see /api/v1/openapi.json".into()) })
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    Router::new()
        // Open to all: the pages carry no data, and the session says who a token is.
        .route("/api/v1/session", get(session))
        .merge(crate::ui::router())
        .merge(api)
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        // Outermost: counts every answer, the 401s, 408s and 413s of the layers above included.
        .layer(middleware::from_fn_with_state(metrics, metrics::observe))
        .with_state(state)
}

/// The role a request needs: reads are `viewer`; review labels and recipe switches `operator`;
/// any other write `admin` (a route added later is never writable by a weaker role by mistake).
fn needed_role(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Viewer
    } else if path.ends_with("/review") || path.ends_with("/activate") {
        Role::Operator
    } else {
        Role::Admin
    }
}

/// Every request is checked against the tokens (see [`super::auth`]); refusals are counted. The
/// caller, when known, travels with the request to the handlers (who changed what).
async fn auth(State(s): State<Shared>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let needed = needed_role(request.method(), request.uri().path());
    let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match s.tokens.check(given, needed) {
        Ok(caller) => {
            if let Some(caller) = caller.cloned() {
                request.extensions_mut().insert(caller);
            }
            Ok(next.run(request).await)
        }
        Err(refusal) => {
            s.metrics.refused(refusal, needed);
            Err(match refusal {
                Refusal::Unauthenticated => ApiError::Unauthorized,
                Refusal::Forbidden { needed, has } => ApiError::Forbidden(format!(
                    "this needs an {} token (or stronger); yours is {}: ask for one with that role in [[api.tokens]]",
                    needed.as_str(),
                    has.as_str()
                )),
            })
        }
    }
}

/// Run a query on a fresh read-only connection, off the runtime's thread. If the request goes
/// away first (its time limit passed, or the client left), the query is interrupted: it stops
/// at SQLite's next step instead of holding its slot and a core until it ends.
pub(super) async fn query<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    on_connection(s, false, move |c| f(c)).await
}

/// Like [`query`], on a connection that may write (review labels).
async fn write<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    on_connection(s, true, f).await
}

async fn on_connection<T: Send + 'static>(
    s: &Shared,
    writable: bool,
    f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    // A few queries at a time, the rest wait their turn: the pipeline keeps its CPU however many
    // clients there are. The slot goes with the query, until it ends or is interrupted.
    let permit =
        Arc::clone(&s.queries).acquire_owned().await.map_err(|e| ApiError::Internal(format!("query slot: {e}")))?;
    let path = s.db.clone();
    let cancel = Arc::new(Cancel::default());
    let mut guard = CancelOnDrop(Some(Arc::clone(&cancel)));
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut conn = if writable {
            crate::sinks::store::open_for_review(&path)?
        } else {
            crate::sinks::store::open_read_only(&path)?
        };
        if !cancel.arm(conn.get_interrupt_handle()) {
            return Err(ApiError::Internal("query cancelled before it started".into()));
        }
        f(&mut conn)
    });
    let result = task.await;
    guard.0 = None;
    result.map_err(|e| ApiError::Internal(format!("query task: {e}")))?
}

/// A query's interrupt handle, once its connection is open, and whether its request went away.
#[derive(Default)]
struct Cancel(Mutex<(bool, Option<rusqlite::InterruptHandle>)>);

impl Cancel {
    /// Keep the connection's handle; false if the request has already gone.
    fn arm(&self, handle: rusqlite::InterruptHandle) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.1 = Some(handle);
        !state.0
    }
    fn cancel(&self) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = true;
        if let Some(handle) = &state.1 {
            tracing::debug!("request gone: interrupting its database query");
            handle.interrupt();
        }
    }
}

/// Cancels the query when dropped armed: the request's future was dropped mid-query.
struct CancelOnDrop(Option<Arc<Cancel>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}

pub(super) use params::check_known;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `from`, `to`, `camera` (and for lists `verdict`, `class`, `cursor`) as a filter.
fn filter(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let from = q.get("from").map(|v| params::time("from", v)).transpose()?;
    let to = q.get("to").map(|v| params::time("to", v)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        params::range(f, t)?;
    }
    Ok(Filter {
        from,
        to,
        camera: q.get("camera").cloned(),
        verdict: q.get("verdict").map(|v| params::verdict(v)).transpose()?,
        class: q.get("class").cloned(),
        before_id: q.get("cursor").map(|v| params::decode_cursor(v)).transpose()?,
    })
}

/// `stats`, through the cache (see [`super::cache`]) unless `[api] stats_cache_ms` is 0.
async fn stats(State(s): State<Shared>, Query(q): Params) -> Result<Response, ApiError> {
    check_known(&q, &["from", "to", "camera", "bucket"])?;
    let f = filter(&q)?;
    let bucket = Bucket::parse(q.get("bucket").map_or("hour", String::as_str))?;
    // Check the window now; a query of "up to now" that runs later only grows it by that delay.
    stats_window(f.from, f.to, bucket)?;
    let key = StatsKey { from: f.from, to: f.to, camera: f.camera, bucket };
    let compute = || {
        let (s, key) = (Arc::clone(&s), key.clone());
        async move {
            // "Now" is when the query runs, not when the request came: the answer is as fresh as
            // it can be, and its `to_unix_ms` says which now it is.
            let (from, to) = stats_window(key.from, key.to, key.bucket)?;
            let offset_ms =
                i64::from(s.utc_offset_minutes.unwrap_or_else(|| params::local_offset_minutes(to))) * 60_000;
            let f = Filter { from: Some(from), to: Some(to), camera: key.camera, ..Filter::default() };
            let answer = query(&s, move |c| db::stats(c, &f, key.bucket, offset_ms)).await?;
            serde_json::to_vec(&answer).map(Bytes::from).map_err(|e| ApiError::Internal(format!("encoding stats: {e}")))
        }
    };
    let (body, outcome) = if s.stats_cache_ttl.is_zero() {
        (compute().await?, CacheOutcome::Miss)
    } else {
        s.stats_cache.get(key.clone(), s.stats_cache_ttl, compute).await?
    };
    s.metrics.stats_answered(outcome);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `[from, to)` of a stats query: `to` defaults to now, `from` to 24 hours before `to`.
fn stats_window(from: Option<i64>, to: Option<i64>, bucket: Bucket) -> Result<(i64, i64), ApiError> {
    params::stats_window(from, to, now_ms(), DEFAULT_WINDOW_MS, bucket)
}

async fn list(State(s): State<Shared>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["verdict", "camera", "class", "from", "to", "limit", "cursor"])?;
    let f = filter(&q)?;
    let limit = params::limit(q.get("limit").map(String::as_str))?;
    Ok(Json(query(&s, move |c| db::list(c, &f, limit)).await?))
}

async fn inspection(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = params::id(&id)?;
    Ok(Json(query(&s, move |c| db::get(c, id)).await?))
}

/// The inspection's archived frame as PNG (`overlay=true`: with its defects outlined;
/// `heat=true`: the anomaly map's heat map, grey levels, 128 = the threshold). The file is found
/// through the id's row in the store, never from a path in the request.
async fn image(State(s): State<Shared>, Path(id): Path<String>, Query(q): Params) -> Result<Response, ApiError> {
    check_known(&q, &["overlay", "heat"])?;
    let id = params::id(&id)?;
    let flag = |name: &str| match q.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(ApiError::BadRequest(format!("{name} = {v:?}: expected true or false"))),
    };
    let (overlay, heat) = (flag("overlay")?, flag("heat")?);
    if overlay && heat {
        return Err(ApiError::BadRequest("overlay or heat: ask for one picture at a time".into()));
    }
    let none =
        || ApiError::NotFound(format!("inspection {id} has no archived {}", if heat { "heat map" } else { "image" }));
    let dir = s.archive_dir.clone().ok_or_else(none)?;
    let relative = query(&s, move |c| db::image_path(c, id)).await?.ok_or_else(none)?;
    let relative = if overlay {
        crate::sinks::archive::overlay_path(&relative)
    } else if heat {
        crate::sinks::archive::heat_path(&relative)
    } else {
        relative
    };
    let path = crate::sinks::archive::resolve(&dir, &relative).ok_or_else(|| {
        ApiError::Internal(format!("inspection {id}: stored image path {relative:?} is not a safe relative path"))
    })?;
    let bytes = match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => bytes,
        // Deleted by retention, or never written (the archive fell behind or failed).
        Ok(Err(e)) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Err(none());
        }
        Ok(Err(e)) => return Err(ApiError::Internal(format!("reading the archived image: {e}"))),
        Err(e) => return Err(ApiError::Internal(format!("read task: {e}"))),
    };
    Ok(([(header::CONTENT_TYPE, "image/png")], bytes).into_response())
}

async fn part(State(s): State<Shared>, Path(part_id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(query(&s, move |c| db::part(c, &part_id)).await?))
}

/// Each camera's state from the live counters: up/down, frame rate since the previous call (or
/// since start, on the first), last frame time, verdict and drop counts.
async fn cameras(State(s): State<Shared>) -> Json<Value> {
    let Some(acc) = s.accounting.get() else { return Json(json!({ "cameras": [] })) };
    let snaps = acc.snapshot();
    let now = Instant::now();
    let captured: Vec<u64> = snaps.iter().map(|c| c.captured).collect();
    let fps = {
        let mut sample = s.fps_sample.lock().unwrap_or_else(|e| e.into_inner());
        let (since, before, last_fps) = sample.clone().unwrap_or((acc.epoch, vec![0; captured.len()], Vec::new()));
        let dt = now.duration_since(since).as_secs_f64();
        if dt >= 1.0 || last_fps.is_empty() {
            let fps: Vec<f64> =
                captured.iter().zip(&before).map(|(n, b)| n.saturating_sub(*b) as f64 / dt.max(1e-3)).collect();
            *sample = Some((now, captured.clone(), fps.clone()));
            fps
        } else {
            last_fps
        }
    };
    let wall_now = now_ms();
    let since_epoch = acc.epoch.elapsed().as_millis() as i64;
    let list: Vec<Value> = snaps
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let last_ns = acc.cameras[i].last_frame_ns.load(std::sync::atomic::Ordering::Relaxed);
            let last = (last_ns > 0).then(|| wall_now - (since_epoch - (last_ns / 1_000_000) as i64));
            json!({
                "id": c.id, "state": if c.up { "up" } else { "down" },
                "down_reason": (!c.up).then(|| acc.cameras[i].down_reason()),
                "fps": fps.get(i).copied().unwrap_or(0.0),
                "last_frame_unix_ms": last, "captured": c.captured, "ok": c.ok, "ng": c.ng, "failsafe": c.failsafe(),
                "dropped": c.dropped(), "reconnects": c.reconnects,
            })
        })
        .collect();
    Json(json!({ "cameras": list }))
}

/// `POST /api/v1/inspections/{id}/review`: an operator's label, stored with who and when.
async fn review(
    State(s): State<Shared>,
    Path(id): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = params::id(&id)?;
    let review: super::review::NewReview = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "review body: {e}: send {{\"label\": \"defect\" | \"good\" | \"unsure\", \"class\"?: text, \"note\"?: text}}"
        ))
    })?;
    // The auth layer always names the caller of a write.
    let reviewer = caller_name(caller);
    let now = now_ms();
    let stored = write(&s, move |c| super::review::add(c, id, &review, &reviewer, now)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "review": stored }))).into_response())
}

/// `GET /api/v1/session`: who the request's token is (`{"signed_in", "name", "role"}`), and
/// whether reads need a token. Open to all, always 200: the UI asks it before anything else.
async fn session(State(s): State<Shared>, headers: axum::http::HeaderMap) -> Json<Value> {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = s.tokens.identify(given);
    Json(json!({
        "signed_in": caller.is_some(),
        "token_refused": given.is_some() && caller.is_none(),
        "name": caller.map(|c| c.name.as_str()),
        "role": caller.map_or(if s.tokens.reads_need_token() { None } else { Some("viewer") }, |c| Some(c.role.as_str())),
        "reads_need_token": s.tokens.reads_need_token(),
    }))
}

/// `GET /api/v1/recipes`: each recipe, its model, threshold, and the cameras running it.
async fn recipes(State(s): State<Shared>) -> Json<Value> {
    Json(s.recipes.get().map_or_else(|| json!({ "recipes": [] }), |r| r.list()))
}

/// `POST /api/v1/recipes/{name}/activate`: switch cameras to a recipe (see [`super::recipes`]),
/// audited.
async fn activate(
    State(s): State<Shared>,
    Path(name): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let live = s.live_recipes()?;
    let activation: super::recipes::Activation = if body.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "activate body: {e}: send {{\"cameras\": [camera ids]}} or nothing (all cameras)"
            ))
        })?
    };
    let (recipe, cameras) = live.resolve(&name, &activation)?;
    let (first_seq, before) = live.activate(recipe, &cameras).await;
    let changes: Vec<(String, String)> = before.into_iter().filter(|(_, old)| *old != name).collect();
    record_change(&s, caller, "recipe.activate", changes, name.clone()).await?;
    Ok(Json(json!({ "recipe": name, "first_seq": first_seq })))
}

/// `PATCH /api/v1/recipes/{name}` `{"threshold": x}` and/or `{"rules": [...]}` (admin token),
/// audited. A threshold applies from the next frame decided. New rules are an install of the
/// recipe's model with those rules (between two frames of each camera, the rules before kept for
/// `.../rollback`); the answer then has each camera's first frame under them (`first_seq`).
async fn change_recipe(
    State(s): State<Shared>,
    Path(name): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let live = s.live_recipes()?;
    let change: super::recipes::Change = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("recipe change: {e}: send {{\"threshold\": number}} and/or {{\"rules\": [...]}}"))
    })?;
    let recipe = live.index(&name)?;
    if change.threshold.is_none() && change.rules.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to change: send {\"threshold\": number} and/or {\"rules\": [...]}".into(),
        ));
    }
    if let Some(t) = change.threshold {
        // Checked before any rules change, so that a change is all or nothing.
        live.thresholds
            .check(usize::from(live.slot(recipe)), t)
            .map_err(|why| ApiError::BadRequest(format!("threshold {t}: {why}")))?;
    }
    let mut first_seq = None;
    if let Some(rules) = &change.rules {
        let installer =
            live.installer.clone().ok_or_else(|| ApiError::Unavailable("this station cannot change rules".into()))?;
        let rules = super::recipes::parse_rules(rules, installer.config())?;
        let before = live.model(recipe).map_or_else(String::new, |m| m.rules_json.clone());
        let from = live.slot(recipe);
        let recipe_name = name.clone();
        let installed = tokio::task::spawn_blocking(move || installer.install_rules(&recipe_name, rules))
            .await
            .map_err(|e| ApiError::Internal(format!("rules task: {e}")))?
            .map_err(ApiError::Unprocessable)?;
        first_seq = Some(live.move_cameras(from, installed.slot).await);
        let after = installed.recipe.rules_json.clone();
        record_change(&s, caller.clone(), "recipe.rules", vec![(name.clone(), before)], after).await?;
    }
    if let Some(threshold) = change.threshold {
        let (action, old, new) = live.change_threshold(&name, threshold)?;
        record_change(&s, caller, &action, vec![(name.clone(), old)], new).await?;
    }
    let mut answer = live.recipe_json(recipe);
    if let Some(first_seq) = first_seq {
        answer["first_seq"] = first_seq;
    }
    Ok(Json(answer))
}

/// "name (sha256 prefix)": a model in the audit log.
pub(super) fn model_label(m: Option<&crate::sinks::RecipeContext>) -> String {
    m.map_or_else(|| "?".into(), |m| format!("{} ({})", m.model_name, &m.model_sha256[..m.model_sha256.len().min(12)]))
}

/// `POST /api/v1/recipes/{name}/model` `{"package": "path on the station"}` (admin): load,
/// check and warm the package in the background (low priority: the API's threads), then move
/// the recipe's cameras to it between two frames; the model it replaces stays loaded for
/// `.../rollback`. A package that fails changes nothing and says why (422). Audited.
async fn install_model(
    State(s): State<Shared>,
    Path(name): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let live = s.live_recipes()?;
    let recipe = live.index(&name)?;
    let installer =
        live.installer.clone().ok_or_else(|| ApiError::Unavailable("this station cannot install models".into()))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        package: std::path::PathBuf,
    }
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "model install: {e}: send {{\"package\": \"a model package folder on the station\"}}"
        ))
    })?;
    let before = model_label(live.model(recipe));
    let from = live.slot(recipe);
    let recipe_name = name.clone();
    let installed = tokio::task::spawn_blocking(move || installer.install(&recipe_name, &body.package))
        .await
        .map_err(|e| ApiError::Internal(format!("install task: {e}")))?
        .map_err(ApiError::Unprocessable)?;
    model_moved(&s, live, (recipe, &name), caller, "recipe.model", before, (from, installed.slot)).await
}

/// `POST /api/v1/recipes/{name}/rollback` (admin): back to the model the recipe ran before the
/// last install (or rollback), between two frames of each camera. Audited.
async fn rollback(
    State(s): State<Shared>,
    Path(name): Path<String>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Json<Value>, ApiError> {
    let live = s.live_recipes()?;
    let recipe = live.index(&name)?;
    let before = model_label(live.model(recipe));
    let installer =
        live.installer.clone().ok_or_else(|| ApiError::Unavailable("this station cannot change models".into()))?;
    let (from, to) = installer
        .rollback(recipe)
        .ok_or_else(|| ApiError::Conflict(format!("recipe {name} has no earlier model to roll back to")))?;
    model_moved(&s, live, (recipe, &name), caller, "recipe.rollback", before, (from, to)).await
}

/// After an install or a rollback moved recipe `(index, name)` from slot `from` to `to`: move
/// its cameras (waiting for each one's first frame there), audit `before` → the model now, and
/// answer the recipe with the cameras' first frames.
pub(super) async fn model_moved(
    s: &Shared,
    live: &super::recipes::LiveRecipes,
    (recipe, name): (usize, &str),
    caller: Option<axum::Extension<Caller>>,
    action: &str,
    before: String,
    (from, to): (u16, u16),
) -> Result<Json<Value>, ApiError> {
    let first_seq = live.move_cameras(from, to).await;
    let after = model_label(live.model(recipe));
    record_change(s, caller, action, vec![(name.to_string(), before)], after).await?;
    Ok(Json(json!({ "recipe": live.recipe_json(recipe), "first_seq": first_seq })))
}

/// The name of the token a request came with ("anonymous" for an open read; writes always name
/// one, see [`auth`]).
pub(super) fn caller_name(caller: Option<axum::Extension<Caller>>) -> String {
    caller.map_or_else(|| "anonymous".to_string(), |c| c.0.name)
}

/// Record in the audit log that the request's caller changed each `(target, old)` to `new`.
pub(super) async fn record_change(
    s: &Shared,
    caller: Option<axum::Extension<Caller>>,
    action: &str,
    changes: Vec<(String, String)>,
    new: String,
) -> Result<(), ApiError> {
    let (who, now, action) = (caller_name(caller), now_ms(), action.to_string());
    write(s, move |c| super::review::audit(c, now, &who, &action, &changes, &new)).await
}

/// `POST /api/v1/teach` (admin): teach a recipe a new model in the background (see
/// [`super::teach_jobs`]); 202 with the job's id. Audited.
async fn start_teach(
    State(s): State<Shared>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let live = Arc::clone(s.live_recipes()?);
    let request: super::teach_jobs::TeachRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "teach job: {e}: send {{\"recipe\": NAME, \"images\": \"folder\" | \"archived_ok\": true, \"install\"?: bool}}"
        ))
    })?;
    let recipe = request.recipe.clone();
    let id = s.teach_jobs.start(request, live, s.db.clone(), s.archive_dir.clone())?;
    record_change(&s, caller, "teach.start", vec![(recipe, String::new())], format!("job {id}")).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "state": "running" }))).into_response())
}

/// `GET /api/v1/teach/{id}`: a teach job's state, and its result once done.
async fn teach_job(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = params::id(&id)?;
    s.teach_jobs.get(id as u64).map(Json).ok_or_else(|| ApiError::NotFound(format!("no teach job {id}")))
}

/// `GET /api/v1/audit?limit`: the changes made through the API, newest first.
async fn audit(State(s): State<Shared>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["limit"])?;
    let limit = params::limit(q.get("limit").map(String::as_str))?;
    Ok(Json(query(&s, move |c| super::review::audit_log(c, limit)).await?))
}

/// `GET /api/v1/review/queue`: what to review next (see [`super::review::queue`]); the window
/// defaults to the 7 days before `to` (default now).
async fn review_queue(State(s): State<Shared>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["from", "to", "camera", "recipe", "class", "label", "limit"])?;
    let to = q.get("to").map(|v| params::time("to", v)).transpose()?.unwrap_or_else(now_ms);
    let from = q.get("from").map(|v| params::time("from", v)).transpose()?.unwrap_or(to - 7 * DEFAULT_WINDOW_MS);
    params::range(from, to)?;
    let limit = params::limit(q.get("limit").map(String::as_str))?;
    let filter = super::review::QueueFilter {
        camera: q.get("camera").cloned(),
        recipe: q.get("recipe").cloned(),
        class: q.get("class").cloned(),
        label: q.get("label").cloned(),
    };
    Ok(Json(query(&s, move |c| super::review::queue(c, from, to, &filter, limit)).await?))
}

/// `GET /api/v1/operating-point?recipe=NAME` (or `model=NAME|SHA256`): escape and overkill
/// measured on the reviewed inspections of one recipe's current model (default: the newest
/// inspection's model).
async fn operating_point(State(s): State<Shared>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["model", "recipe"])?;
    let (model, recipe) = (q.get("model").cloned(), q.get("recipe").cloned());
    // The running station's threshold, when it runs that recipe (it may have changed since the
    // newest stored inspection).
    let live = match (s.recipes.get(), &recipe) {
        (Some(live), Some(name)) => {
            live.index(name).ok().and_then(|i| live.thresholds.get(usize::from(live.slot(i)))).map(f64::from)
        }
        _ => None,
    };
    Ok(Json(query(&s, move |c| super::review::operating_point(c, model.as_deref(), recipe.as_deref(), live)).await?))
}

/// `POST /api/v1/operating-point?recipe=NAME` with `{"target_escape": x}` or
/// `{"max_overkill": y}` (shares, 0 ≤ v < 1): set the recipe's threshold to the one that meets
/// it on the reviewed parts (admin token), audited; answers the operating point there.
async fn set_operating_point(
    State(s): State<Shared>,
    Query(q): Params,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["recipe"])?;
    let live = s.live_recipes()?;
    let name = match (q.get("recipe"), live.switch.recipe_names()) {
        (Some(name), _) => name.clone(),
        (None, [only]) => only.clone(),
        (None, _) => return Err(ApiError::BadRequest("name the recipe: ?recipe=NAME".into())),
    };
    let index = live.index(&name)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        target_escape: Option<f64>,
        max_overkill: Option<f64>,
    }
    let bad = |why: String| {
        ApiError::BadRequest(format!(
            "{why}: send {{\"target_escape\": x}} or {{\"max_overkill\": y}}, shares in [0, 1)"
        ))
    };
    let body: Body = serde_json::from_slice(&body).map_err(|e| bad(format!("operating point: {e}")))?;
    let target = match (body.target_escape, body.max_overkill) {
        (Some(x), None) if (0.0..1.0).contains(&x) => super::review::Target::Escape(x),
        (None, Some(y)) if (0.0..1.0).contains(&y) => super::review::Target::Overkill(y),
        _ => return Err(bad("exactly one target, a share in [0, 1)".into())),
    };
    let sha = live.model(index).map(|m| m.model_sha256.clone()).unwrap_or_default();
    let recipe = name.clone();
    let threshold = query(&s, move |c| {
        let labelled = super::review::labelled(c, &sha, Some(&recipe))?;
        super::review::threshold_for(&labelled, target)
    })
    .await?;
    let old = live
        .thresholds
        .set(usize::from(live.slot(index)), threshold as f32)
        .map_err(|why| ApiError::BadRequest(format!("recipe {name}: {why}")))?;
    let action = match target {
        super::review::Target::Escape(_) => "recipe.threshold (target_escape)",
        super::review::Target::Overkill(_) => "recipe.threshold (max_overkill)",
    };
    let change = vec![(name.clone(), old.to_string())];
    record_change(&s, caller, action, change, (threshold as f32).to_string()).await?;
    let recipe = name.clone();
    let live_threshold = Some(f64::from(threshold as f32));
    Ok(Json(query(&s, move |c| super::review::operating_point(c, None, Some(&recipe), live_threshold)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query whose request goes away (here: a 200 ms limit) is interrupted, not left running.
    #[test]
    fn a_dropped_request_interrupts_its_query() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        let retention = crate::sinks::store::Retention { days: 0, max_inspections: 0 };
        drop(crate::sinks::store::Store::open(&db, retention).unwrap());
        let state: Shared = Arc::new(ApiState::new(db, None));
        let (tx, rx) = std::sync::mpsc::channel();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // Counts for ever unless interrupted.
            let endless = query(&state, move |c| {
                let r = c.query_row(
                    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                );
                let _ = tx.send(r.map_err(|e| e.to_string()));
                Ok(())
            });
            assert!(tokio::time::timeout(Duration::from_millis(200), endless).await.is_err(), "it cannot finish");
        });
        let ended = rx.recv_timeout(Duration::from_secs(10));
        // Without waiting for a query that may still run (the failure this test looks for).
        rt.shutdown_background();
        let ended = ended.expect("the query still runs after its request went");
        assert!(ended.as_ref().is_err_and(|e| e.contains("interrupt")), "{ended:?}");
        // Its slot is free again (the closure returns just after it reported).
        let t0 = Instant::now();
        while state.queries.available_permits() < max_concurrent_queries() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(state.queries.available_permits(), max_concurrent_queries());
    }
}
