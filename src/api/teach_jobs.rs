//! Teach jobs from the station: `POST /api/v1/teach` teaches a recipe a new model in the
//! background, from a folder of good images on the station or from the OK parts the archive
//! kept; `GET /api/v1/teach/{id}` shows its state and, once done, the teach's own validation
//! figures; with `"install": true` the model is then installed like `POST .../model` (between two
//! frames, the old one kept for rollback).
//!
//! Each job's package is written to `taught/<recipe>-<unix ms>` beside the result store.
//!
//! The job runs on a thread of its own started from the API's threads, so it inherits their
//! lower CPU priority (nice +10): when the cores are busy the line wins and teaching slows down.

use super::error::ApiError;
use crate::api::recipes::LiveRecipes;
use crate::config::ModelTeachConfig;
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
    /// Install the taught model when done.
    #[serde(default)]
    pub install: bool,
}

/// The jobs of this station run, by id.
#[derive(Default)]
pub struct TeachJobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Json>>,
}

impl TeachJobs {
    pub fn get(&self, id: u64) -> Option<Json> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
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
        let images = match (&request.images, request.archived_ok) {
            (Some(dir), false) => Source::Folder(installer.config().resolve(dir)),
            (None, true) => Source::Archived(archive.ok_or_else(|| {
                ApiError::BadRequest("archived_ok: the station has no [archive] to take OK parts from".into())
            })?),
            _ => {
                return Err(ApiError::BadRequest(
                    "teach from one source: {\"images\": \"a folder on the station\"} or {\"archived_ok\": true}"
                        .into(),
                ));
            }
        };
        let loaded = installer.config().clone();
        let rc = loaded.recipes()[recipe].clone();
        // Station-made models live beside the result store, with the station's other data.
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let out = db.parent().unwrap_or(Path::new(".")).join("taught").join(format!("{}-{stamp}", rc.name));
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.set(id, json!({ "id": id, "recipe": rc.name, "state": "running", "package": out }));
        let jobs = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("teach-job-{id}"))
            .spawn(move || {
                let result = teach(&loaded, &rc, images, &db, &out);
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
                jobs.set(id, state);
            })
            .map_err(|e| ApiError::Internal(format!("starting the teach job: {e}")))?;
        Ok(id)
    }
}

/// Where a job's good parts come from.
enum Source {
    Folder(PathBuf),
    /// The archive folder: the recipe's archived OK parts are copied out of it first.
    Archived(PathBuf),
}

fn teach(
    loaded: &crate::config::LoadedConfig,
    rc: &crate::config::RecipeConfig,
    source: Source,
    db: &Path,
    out: &Path,
) -> anyhow::Result<crate::teach::learn::TeachReport> {
    let staging = out.with_extension("images");
    let images = match source {
        Source::Folder(dir) => dir,
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
    let t = match &rc.teach {
        Some(t) => t.clone(),
        None => toml::from_str::<ModelTeachConfig>("")?,
    };
    let backbone = loaded.resolve(&t.backbone);
    anyhow::ensure!(
        backbone.join("backbone.toml").is_file(),
        "no backbone at {}: set the recipe's [recipe.teach] backbone",
        backbone.display()
    );
    let mut opts = crate::teach::TeachOptions::new(&images, out, backbone);
    crate::teach::on_start::apply(
        &mut opts,
        &t,
        loaded.config.pipeline.input_mode,
        loaded.config.pipeline.tile_overlap_px,
    );
    opts.name = Some(format!("{}-{}", loaded.config.station.name, rc.name));
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
