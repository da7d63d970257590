//! Teach jobs from the station: `POST /api/v1/teach` teaches a recipe a new model in the
//! background, from a folder of good images on the station, from the OK parts the archive
//! kept, or from the next N parts of a camera (the operator vouches they are good);
//! `GET /api/v1/teach/{id}` shows its state and, once done, the teach's own validation figures; with `"install": true` the model is then installed like `POST .../model` (between two
//! frames, the old one kept for rollback), with `"shadow": true` run as the recipe's shadow
//! candidate instead.
//!
//! Each job's package is written to `taught/<recipe>-<unix ms>` beside the result store.
//!
//! The job runs on a thread of its own started from the API's threads, so it inherits their
//! lower CPU priority (nice +10): when the cores are busy the line wins and teaching slows down.

use super::error::ApiError;
use crate::api::recipes::LiveRecipes;
use crate::config::{ModelTeachConfig, TeachShare};
use crate::teach::learn::Stage;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Fewest good images a teach job starts with.
const MIN_IMAGES: usize = 8;
/// Most archived OK parts a job takes (the newest).
const MAX_ARCHIVED: usize = 2000;

/// `POST /api/v1/teach`'s body: the recipe, and where its good parts come from (one of
/// `images`, a folder on the station, or `archived_ok`, that recipe's OK parts in the archive).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeachRequest {
    pub recipe: String,
    #[serde(default)]
    pub images: Option<PathBuf>,
    #[serde(default)]
    pub archived_ok: bool,
    /// With `parts`: the next parts of this camera (id), which the operator vouches are good.
    #[serde(default)]
    pub camera: Option<String>,
    #[serde(default)]
    pub parts: Option<usize>,
    /// Install the taught model when done.
    #[serde(default)]
    pub install: bool,
    /// Run the taught model as the recipe's shadow candidate when done (see `crate::shadow`).
    #[serde(default)]
    pub shadow: bool,
    /// For this job instead of the recipe's `[recipe.teach]`: a folder of labelled defective
    /// parts on the station, and the operating point (shares, as in the config).
    #[serde(default)]
    pub defects: Option<PathBuf>,
    #[serde(default)]
    pub max_overkill: Option<f64>,
    #[serde(default)]
    pub target_escape: Option<f64>,
}

/// The jobs of this station run, by id.
#[derive(Default)]
pub struct TeachJobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Json>>,
    /// Running jobs' current teach step and when the job started.
    stages: Mutex<BTreeMap<u64, (Stage, std::time::Instant)>>,
}

impl TeachJobs {
    /// Job `id`'s state; while it runs, also its teach step (`stage`) and `elapsed_s`.
    pub fn get(&self, id: u64) -> Option<Json> {
        let mut state = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()?;
        if let Some((stage, started)) = self.stages.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            if state["state"] == "running" {
                let stage = stage.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if !stage.is_empty() {
                    state["stage"] = json!(stage);
                } else if state.get("parts").is_some() {
                    // Still taking the camera's parts off the line.
                    state["state"] = json!("capturing");
                }
            }
            state["elapsed_s"] = json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        }
        Some(state)
    }

    fn set(&self, id: u64, state: Json) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).insert(id, state);
    }

    /// Check `request` and start its job; returns the job's id.
    pub fn start(
        self: &Arc<Self>,
        request: TeachRequest,
        live: Arc<LiveRecipes>,
        db: PathBuf,
        archive: Option<PathBuf>,
    ) -> Result<u64, ApiError> {
        let recipe = live.index(&request.recipe)?;
        let installer =
            live.installer.clone().ok_or_else(|| ApiError::Unavailable("this station cannot teach models".into()))?;
        let one_of = "teach from one source: {\"images\": \"a folder on the station\"}, {\"archived_ok\": true} or {\"camera\": ID, \"parts\": N}";
        let images = match (&request.images, request.archived_ok, &request.camera) {
            (Some(dir), false, None) => Source::Folder(installer.config().resolve(dir)),
            (None, true, None) => Source::Archived(archive.ok_or_else(|| {
                ApiError::BadRequest("archived_ok: the station has no [archive] to take OK parts from".into())
            })?),
            (None, false, Some(id)) => {
                let camera = live.cameras().iter().position(|c| c == id).ok_or_else(|| {
                    ApiError::BadRequest(format!("no camera {id:?}: the station has {}", live.cameras().join(", ")))
                })?;
                let parts = request.parts.filter(|n| (MIN_IMAGES..=MAX_ARCHIVED).contains(n)).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "camera: say how many of its next parts to teach from, \"parts\": {MIN_IMAGES}..={MAX_ARCHIVED}"
                    ))
                })?;
                let shadows = live
                    .shadows
                    .clone()
                    .ok_or_else(|| ApiError::Unavailable("this station cannot take parts off the line".into()))?;
                Source::Camera { camera: camera as u16, parts, shadows }
            }
            _ => return Err(ApiError::BadRequest(one_of.into())),
        };
        if request.parts.is_some() && request.camera.is_none() {
            return Err(ApiError::BadRequest("parts: only with \"camera\"".into()));
        }
        if request.install && request.shadow {
            return Err(ApiError::BadRequest(
                "install or shadow: a taught model is either installed or run as the recipe's shadow candidate first"
                    .into(),
            ));
        }
        if request.shadow && live.shadows.is_none() {
            return Err(ApiError::Unavailable("this station cannot run shadow models".into()));
        }
        let loaded = installer.config().clone();
        let mut rc = loaded.recipes()[recipe].clone();
        job_settings(&request, &loaded, &mut rc)?;
        // Station-made models live beside the result store, with the station's other data.
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let out = db.parent().unwrap_or(Path::new(".")).join("taught").join(format!("{}-{stamp}", rc.name));
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.set(id, json!({ "id": id, "recipe": rc.name, "state": "running", "package": out }));
        let stage = Stage::default();
        self.stages.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (stage.clone(), std::time::Instant::now()));
        let jobs = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("teach-job-{id}"))
            .spawn(move || {
                // Shown as `capturing` until the teach itself starts (see `get`).
                let progress = |captured: usize, parts: usize| {
                    jobs.set(id, json!({ "id": id, "recipe": rc.name, "state": "running", "captured": captured, "parts": parts }));
                };
                let result = teach(&loaded, &rc, images, &db, &out, stage, progress);
                let _ = std::fs::remove_dir_all(out.with_extension("images"));
                let mut state = match result {
                    Ok(report) => json!({
                        "id": id, "recipe": rc.name, "state": "done", "package": out,
                        "threshold": report.threshold, "teach": report.info, "warnings": report.warnings,
                    }),
                    Err(e) => {
                        tracing::warn!(job = id, recipe = %rc.name, error = %format!("{e:#}"), "teach job failed");
                        json!({ "id": id, "recipe": rc.name, "state": "failed", "error": format!("{e:#}") })
                    }
                };
                if request.install && state["state"] == "done" {
                    let from = live.slot(recipe);
                    match installer.install(&rc.name, &out) {
                        Ok(installed) => {
                            let first_seq = live.move_cameras_blocking(from, installed.slot);
                            state["installed"] = json!(true);
                            state["first_seq"] = first_seq;
                        }
                        Err(e) => {
                            state["installed"] = json!(false);
                            state["install_error"] = json!(e);
                        }
                    }
                }
                if request.shadow && state["state"] == "done" {
                    match live.shadows.as_ref().map(|s| s.start(recipe, &out, crate::shadow::DEFAULT_SHARE)) {
                        Some(Ok(run)) => state["shadow"] = run,
                        Some(Err(e)) => state["shadow_error"] = json!(e),
                        None => {}
                    }
                }
                jobs.set(id, state);
                jobs.stages.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            })
            .map_err(|e| ApiError::Internal(format!("starting the teach job: {e}")))?;
        Ok(id)
    }
}

/// The request's own teach settings over the recipe's: checked as the config's are.
fn job_settings(
    request: &TeachRequest,
    loaded: &crate::config::LoadedConfig,
    rc: &mut crate::config::RecipeConfig,
) -> Result<(), ApiError> {
    for (kind, share) in
        [(TeachShare::MaxOverkill, request.max_overkill), (TeachShare::TargetEscape, request.target_escape)]
    {
        if let Some(problem) = share.and_then(|s| kind.problem(s)) {
            return Err(ApiError::BadRequest(format!("{}: {problem}", kind.key())));
        }
    }
    let defects = request.defects.as_ref().map(|d| loaded.resolve(d));
    if let Some(dir) = defects.as_ref().filter(|d| !d.is_dir()) {
        return Err(ApiError::BadRequest(format!(
            "defects: no folder {} on the station (labelled defective images of the product)",
            dir.display()
        )));
    }
    if defects.is_none() && request.max_overkill.is_none() && request.target_escape.is_none() {
        return Ok(());
    }
    let t = rc.teach.get_or_insert_with(ModelTeachConfig::default);
    if defects.is_some() {
        t.defects = defects;
    }
    if request.max_overkill.is_some() {
        t.max_overkill = request.max_overkill;
    }
    if request.target_escape.is_some() {
        t.target_escape = request.target_escape;
    }
    Ok(())
}

/// Where a job's good parts come from.
enum Source {
    Folder(PathBuf),
    /// The archive folder: the recipe's archived OK parts are copied out of it first.
    Archived(PathBuf),
    /// The next parts of a camera, copied off the line through the shadow tap.
    Camera {
        camera: u16,
        parts: usize,
        shadows: Arc<crate::shadow::Shadows>,
    },
}

/// Longest a job waits for a camera's next parts (an idle or triggered camera) before it
/// teaches from what it has, if that is enough.
const CAPTURE_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

fn teach(
    loaded: &crate::config::LoadedConfig,
    rc: &crate::config::RecipeConfig,
    source: Source,
    db: &Path,
    out: &Path,
    stage: Stage,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<crate::teach::learn::TeachReport> {
    let staging = out.with_extension("images");
    let images = match source {
        Source::Folder(dir) => dir,
        Source::Camera { camera, parts, shadows } => {
            progress(0, parts);
            let captured =
                crate::shadow::capture::capture_parts(shadows.tap(), camera, parts, &staging, CAPTURE_LIMIT, |n| {
                    progress(n, parts)
                })?;
            anyhow::ensure!(
                captured >= MIN_IMAGES,
                "the camera delivered {captured} parts the station could judge in {} s (at least {MIN_IMAGES} needed): is it running?",
                CAPTURE_LIMIT.as_secs()
            );
            staging.clone()
        }
        Source::Archived(archive) => {
            let copied = copy_archived_ok(db, &archive, &rc.name, &staging)?;
            anyhow::ensure!(
                copied >= MIN_IMAGES,
                "the archive holds {copied} OK parts of recipe {} (at least {MIN_IMAGES} needed): raise [archive] ok_sample_rate, or teach from a folder",
                rc.name
            );
            staging.clone()
        }
    };
    let t = rc.teach.clone().unwrap_or_default();
    let backbone = t.backbone_dir(loaded);
    anyhow::ensure!(
        backbone.join("backbone.toml").is_file(),
        "no backbone at {}: set the recipe's [recipe.teach] backbone",
        backbone.display()
    );
    // Camera, archive or folder: parts of the product, never renders made for teaching.
    let mut opts = crate::teach::on_start::options(&images, out, &t, crate::teach::on_start::Images::Real, loaded)?;
    opts.name = Some(format!("{}-{}", loaded.config.station.name, rc.name));
    opts.stage = Some(stage);
    let report = crate::teach::teach(&opts);
    let _ = std::fs::remove_dir_all(&staging);
    report
}

/// Copy the newest archived OK parts of `recipe` into `dir`; returns how many.
fn copy_archived_ok(db: &Path, archive: &Path, recipe: &str, dir: &Path) -> anyhow::Result<usize> {
    let conn = crate::sinks::store::open_read_only(db)?;
    let mut stmt = conn.prepare(
        "SELECT image_path FROM inspections WHERE verdict = 'OK' AND image_path IS NOT NULL AND recipe = ?1
         ORDER BY id DESC LIMIT ?2",
    )?;
    let paths: Vec<String> = stmt
        .query_map(rusqlite::params![recipe, MAX_ARCHIVED as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    std::fs::create_dir_all(dir)?;
    let mut copied = 0;
    for (k, rel) in paths.iter().enumerate() {
        let Some(source) = crate::sinks::archive::resolve(archive, rel).filter(|p| p.is_file()) else { continue };
        std::fs::copy(&source, dir.join(format!("ok-{k:05}.png")))?;
        copied += 1;
    }
    Ok(copied)
}
