//! Shadow models through the API (see `crate::shadow`): start a candidate beside a recipe's live
//! model (`POST .../shadow`, admin), read the agreement (`GET .../shadow?window=N`), stop it
//! (`DELETE`), or promote it (`POST .../shadow/promote`, admin): the candidate becomes the
//! recipe's model between two frames of each camera, the old one kept for rollback. Audited.

use super::error::ApiError;
use super::router::{Params, Shared, check_known, model_label, model_moved, record_change};
use crate::api::auth::Caller;
use crate::api::recipes::LiveRecipes;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;

/// Most parts an agreement report may cover.
const MAX_WINDOW: usize = 100_000;

fn shadows(live: &LiveRecipes) -> Result<Arc<crate::shadow::Shadows>, ApiError> {
    live.shadows.clone().ok_or_else(|| ApiError::Unavailable("this station cannot run shadow models".into()))
}

/// `GET /api/v1/recipes/{name}/shadow?window=N`: the recipe's shadow (running, else its latest
/// run): candidate, parts offered / skipped / compared, and over the newest `window` parts
/// (default 1000) the live × candidate verdict matrix, agreement rate and disagreeing parts.
pub async fn status(
    State(s): State<Shared>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let q = params.0;
    check_known(&q, &["window"])?;
    let window = match q.get("window") {
        None => crate::shadow::DEFAULT_WINDOW,
        Some(w) => w.parse::<usize>().ok().filter(|n| (1..=MAX_WINDOW).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!("window = {w:?}: expected a number of parts 1..={MAX_WINDOW}"))
        })?,
    };
    let live = s.live_recipes()?;
    let recipe = live.index(&name)?;
    let shadows = shadows(live)?;
    tokio::task::spawn_blocking(move || shadows.status(recipe, window))
        .await
        .map_err(|e| ApiError::Internal(format!("shadow status: {e}")))?
        .map(Json)
        .map_err(ApiError::Internal)
}

/// `POST /api/v1/recipes/{name}/shadow` `{"package": "path on the station", "share"?: x}`
/// (admin): load the candidate (on the API's low-priority threads) and start comparing at most
/// `share` of the recipe's parts (default [`crate::shadow::DEFAULT_SHARE`]); 201 with the run. A package
/// that cannot load changes nothing (422). Replaces the recipe's running shadow.
pub async fn start(
    State(s): State<Shared>,
    Path(name): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        package: std::path::PathBuf,
        #[serde(default)]
        share: Option<f64>,
    }
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "shadow model: {e}: send {{\"package\": \"a model package folder on the station\", \"share\"?: 0..1}}"
        ))
    })?;
    let share = body.share.unwrap_or(crate::shadow::DEFAULT_SHARE);
    if !(share > 0.0 && share <= 1.0) {
        return Err(ApiError::BadRequest(format!(
            "share = {share}: the part of the recipe's parts the shadow may take, 0 < share <= 1 (default {})",
            crate::shadow::DEFAULT_SHARE
        )));
    }
    let live = s.live_recipes()?;
    let recipe = live.index(&name)?;
    let shadows = shadows(live)?;
    let before = shadows.candidate(recipe).map_or_else(String::new, |p| p.display().to_string());
    let package = body.package.clone();
    let run = tokio::task::spawn_blocking(move || shadows.start(recipe, &package, share))
        .await
        .map_err(|e| ApiError::Internal(format!("shadow start: {e}")))?
        .map_err(ApiError::Unprocessable)?;
    record_change(&s, caller, "recipe.shadow.start", vec![(name, before)], body.package.display().to_string()).await?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}

/// `DELETE /api/v1/recipes/{name}/shadow` (admin): stop the recipe's shadow. Its comparisons
/// stay in the store (`GET` still reports its last run).
pub async fn stop(
    State(s): State<Shared>,
    Path(name): Path<String>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Json<Value>, ApiError> {
    let live = s.live_recipes()?;
    let recipe = live.index(&name)?;
    let shadows = shadows(live)?;
    let stopped = tokio::task::spawn_blocking(move || shadows.stop(recipe, "stopped"))
        .await
        .map_err(|e| ApiError::Internal(format!("shadow stop: {e}")))?
        .ok_or_else(|| ApiError::NotFound(format!("recipe {name} has no shadow model running")))?;
    record_change(&s, caller, "recipe.shadow.stop", vec![(name.clone(), stopped.display().to_string())], String::new())
        .await?;
    Ok(Json(serde_json::json!({ "recipe": name, "stopped": stopped })))
}

/// `POST /api/v1/recipes/{name}/shadow/promote` (admin): the running candidate becomes the
/// recipe's model (installed like `POST .../model`: between two frames, the old model kept for
/// `.../rollback`), and the shadow stops. Audited.
pub async fn promote(
    State(s): State<Shared>,
    Path(name): Path<String>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Json<Value>, ApiError> {
    let live = s.live_recipes()?;
    let recipe = live.index(&name)?;
    let shadows = shadows(live)?;
    let installer =
        live.installer.clone().ok_or_else(|| ApiError::Unavailable("this station cannot install models".into()))?;
    let package = shadows
        .candidate(recipe)
        .ok_or_else(|| ApiError::Conflict(format!("recipe {name} has no shadow model to promote: start one first")))?;
    let before = model_label(live.model(recipe));
    let from = live.slot(recipe);
    let recipe_name = name.clone();
    let installed = tokio::task::spawn_blocking(move || {
        let installed = installer.install(&recipe_name, &package)?;
        shadows.stop(recipe, "promoted");
        Ok::<_, String>(installed)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("promote task: {e}")))?
    .map_err(ApiError::Unprocessable)?;
    model_moved(&s, live, (recipe, &name), caller, "recipe.shadow.promote", before, (from, installed.slot)).await
}
