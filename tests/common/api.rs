//! The HTTP API in-process, for tests that drive a station through it: a state over a fresh
//! store with tokens, and a client that sends requests to the router on a runtime of its own.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use linesight::api::{ApiState, router};
use linesight::config::{ApiConfig, ApiRole, ApiToken};
use linesight::sinks::store::{Retention, Store};
use serde_json::Value;
use std::path::Path;
use tower::ServiceExt;

/// The admin token of [`state`].
pub const ADMIN: &str = "admin-token";

/// An API state over a fresh store at `db`: admin token [`ADMIN`], and `tokens` as (name, role,
/// token).
pub fn state(db: &Path, tokens: &[(&str, ApiRole, &str)]) -> ApiState {
    drop(Store::open(db, Retention { days: 0, max_inspections: 0 }).unwrap());
    let mut state = ApiState::new(db.to_path_buf(), None);
    let tokens = tokens
        .iter()
        .map(|&(name, role, token)| ApiToken {
            name: name.into(),
            role,
            sha256: hex::encode(linesight::api::auth::sha256(token)),
        })
        .collect();
    let api = ApiConfig { tokens, ..Default::default() };
    state.tokens = linesight::api::auth::Tokens::from_config(&api, Some(ADMIN));
    state
}

/// Requests to one API router.
pub struct Client {
    app: axum::Router,
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(state: ApiState) -> Self {
        Self { app: router(state), rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap() }
    }

    /// `method uri` with `token` (bearer) and a JSON `body` ("" for none): the status and the
    /// answer's JSON (null when it has none).
    pub fn send(&self, method: &str, uri: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        self.rt.block_on(async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        })
    }

    /// `POST uri` with `token` and `body`.
    pub fn post(&self, uri: &str, token: &str, body: &str) -> (StatusCode, Value) {
        self.send("POST", uri, Some(token), body)
    }

    /// `GET uri` with no token: its JSON, which must come with 200.
    pub fn get(&self, uri: &str) -> Value {
        let (status, body) = self.send("GET", uri, None, "");
        assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
        body
    }
}
