//! Shadow models: a candidate model judging copies of a recipe's live frames beside its live
//! model, so that a newly taught model can be compared on the line before it is trusted. Its
//! verdicts and scores go to the result store (`shadow_results`), never to the line.
//!
//! A shadow is a second, small station built from the live one's config (same cameras, regions,
//! scales and rules; the candidate's model and threshold; one inference worker, one thread; no
//! outputs but its recorder), fed by the shadow tap (`pipeline::shadow_tap`). Its threads run
//! at the lowest CPU priority the kernel has (SCHED_IDLE): they get only cycles the line leaves
//! idle. When the CPU is short the shadow falls behind, has no free buffer for the next part, and
//! the tap skips it (counted): the shadow samples frames instead of slowing the line.

pub mod capture;
pub mod record;
pub mod source;

use crate::config::{Backpressure, CameraTrigger, LoadedConfig};
use crate::pipeline::shadow_tap::{Attachment, ShadowTap, TapTarget};
use crate::pipeline::{RecipeSwitch, RecordPort, Slots};
use crate::sinks::RecipeContext;
use crate::sources::Source;
use crate::topology::{RunOptions, Station};
use crossbeam_channel::{Receiver, TryRecvError, bounded};
use serde_json::{Value as Json, json};
use source::{ChannelSource, Waiting};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Frame buffers a shadow holds (shared by its cameras): as many parts as it can be behind by
/// before the tap skips parts.
const BUFFERS: usize = 2;
/// The most of a recipe's parts a shadow takes unless told otherwise. Even at idle priority a
/// shadow costs the line some throughput when the line runs flat out (shared caches and memory
/// bandwidth, the copies); capping its share keeps that within a few percent, and a fifth of the
/// parts is plenty to measure agreement on.
pub const DEFAULT_SHARE: f64 = 0.2;
/// Parts an agreement report covers when the caller does not say.
pub const DEFAULT_WINDOW: usize = 1000;

/// The station's shadows, at most one per recipe.
pub struct Shadows {
    tap: ShadowTap,
    loaded: LoadedConfig,
    db: PathBuf,
    switch: Arc<RecipeSwitch>,
    contexts: Arc<Slots<RecipeContext>>,
    running: Mutex<BTreeMap<usize, Running>>,
    /// Stopped shadows still writing their last comparisons, by recipe: each channel closes
    /// when its recorder has written everything.
    stopping: Mutex<BTreeMap<usize, Receiver<()>>>,
}

/// A shadow running now.
struct Running {
    run_id: i64,
    share: f64,
    package: PathBuf,
    offered: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    compared: Arc<AtomicU64>,
    /// Closes when its recorder ends (see `Shadows::stopping`).
    recorded: Receiver<()>,
}

impl Shadows {
    /// `db`: the result store the comparisons go to.
    pub fn new(
        tap: ShadowTap,
        loaded: &LoadedConfig,
        db: PathBuf,
        switch: Arc<RecipeSwitch>,
        contexts: Arc<Slots<RecipeContext>>,
    ) -> Self {
        Self {
            tap,
            loaded: loaded.clone(),
            db,
            switch,
            contexts,
            running: Mutex::new(BTreeMap::new()),
            stopping: Mutex::new(BTreeMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Receiver<()>>> {
        self.stopping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether recipe `recipe`'s stopped shadow is still writing its last comparisons.
    fn draining(&self, recipe: usize) -> bool {
        let mut stopping = self.stopping();
        let busy = stopping.get(&recipe).is_some_and(|r| matches!(r.try_recv(), Err(TryRecvError::Empty)));
        if !busy {
            stopping.remove(&recipe);
        }
        busy
    }

    /// Load `package` as the candidate of recipe `recipe` (index) and start comparing at most
    /// `share` of its parts (see [`DEFAULT_SHARE`]); it replaces the recipe's running shadow, if
    /// any. Blocks while the model loads and warms up.
    /// Returns the run's description.
    pub fn start(&self, recipe: usize, package: &Path, share: f64) -> Result<Json, String> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(format!("share = {share}: the part of the line's parts the shadow may take, 0 < share <= 1"));
        }
        let recipes = self.loaded.recipes();
        let rc = recipes.get(recipe).ok_or("no such recipe")?;
        let package = self.loaded.resolve(package);
        let shadow_config = shadow_config(&self.loaded, rc, &package);
        let cameras = self.loaded.config.cameras.len();
        let waiting = Arc::new(Waiting::default());
        let (spare_tx, spare_rx) = bounded(BUFFERS);
        for _ in 0..BUFFERS {
            let _ = spare_tx.send(Vec::new());
        }
        let mut frames = Vec::with_capacity(cameras);
        let mut sources: Vec<Box<dyn Source>> = Vec::with_capacity(cameras);
        for _ in 0..cameras {
            let (tx, rx) = bounded(BUFFERS);
            frames.push(tx);
            sources.push(Box::new(ChannelSource::new(rx, spare_tx.clone(), Arc::clone(&waiting))));
        }
        let (verdict_tx, verdict_rx) = bounded(crate::pipeline::messages::OUTPUT_QUEUE_DEPTH);
        let options =
            RunOptions { outputs: vec![RecordPort::results(verdict_tx)], sources: Some(sources), ..Default::default() };
        let station = Station::build(&shadow_config, options)
            .map_err(|e| format!("candidate {} not started as a shadow of {}: {e}", package.display(), rc.name))?;
        let (model_name, sha256) = (station.package().manifest.name.clone(), station.package().sha256.clone());
        self.stop(recipe, "replaced");
        let run_id = record::start_run(&self.db, &rc.name, &package, &model_name, &sha256)
            .map_err(|e| format!("the result store refused the shadow run: {e}"))?;
        let (recording, recorded) = bounded::<()>(0);
        let running = Running {
            run_id,
            share,
            package: package.clone(),
            offered: Arc::new(AtomicU64::new(0)),
            skipped: Arc::new(AtomicU64::new(0)),
            compared: Arc::new(AtomicU64::new(0)),
            recorded,
        };
        let contexts = Arc::clone(&self.contexts);
        let target = record::RecordTarget {
            run_id,
            cameras: self.loaded.config.cameras.iter().map(|c| c.id.clone()).collect(),
            live_sha: Box::new(move |slot| {
                contexts.get(usize::from(slot)).map_or_else(String::new, |c| c.model_sha256.clone())
            }),
        };
        let (db, compared, recorder_waiting) = (self.db.clone(), Arc::clone(&running.compared), Arc::clone(&waiting));
        std::thread::Builder::new()
            .name("shadow-record".into())
            .spawn(move || {
                record::record(&db, target, verdict_rx, recorder_waiting, compared);
                drop(recording);
            })
            .map_err(|e| format!("cannot start the shadow's recorder thread: {e}"))?;
        let name = rc.name.clone();
        std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                // Inherited by every thread the shadow station starts.
                lowest_cpu_priority();
                station.run();
                tracing::info!(recipe = %name, "shadow model stopped");
            })
            .map_err(|e| format!("cannot start the shadow's thread: {e}"))?;
        self.tap.attach(Attachment {
            target: TapTarget::Recipe(recipe as u16),
            credit: 0.0,
            min_interval: None,
            last_taken: None,
            share,
            frames,
            spares: spare_rx,
            offered: Arc::clone(&running.offered),
            skipped: Arc::clone(&running.skipped),
            watchers: None,
        });
        tracing::info!(recipe = %rc.name, model = %model_name, sha256 = %sha256, run = run_id, "shadow model started");
        self.running().insert(recipe, running);
        let conn = crate::sinks::store::open_read_only(&self.db).map_err(|e| e.to_string())?;
        record::run_info(&conn, run_id).map_err(|e| e.to_string()).map(|r| r.unwrap_or(Json::Null))
    }

    /// Where copies of the line's parts are taken (teach jobs capture a camera's next parts).
    pub fn tap(&self) -> &ShadowTap {
        &self.tap
    }

    /// Stop recipe `recipe`'s shadow (its frames stop at once; it drains what it holds). Returns
    /// the candidate's package, or none when no shadow ran.
    pub fn stop(&self, recipe: usize, outcome: &str) -> Option<PathBuf> {
        let running = self.running().remove(&recipe)?;
        self.tap.detach(TapTarget::Recipe(recipe as u16));
        self.stopping().insert(recipe, running.recorded);
        if let Err(e) = record::stop_run(&self.db, running.run_id, outcome) {
            tracing::warn!(error = %e, "shadow model: its run's end was not recorded");
        }
        Some(running.package)
    }

    /// The candidate package recipe `recipe`'s shadow runs, if one does.
    pub fn candidate(&self, recipe: usize) -> Option<PathBuf> {
        self.running().get(&recipe).map(|r| r.package.clone())
    }

    /// Recipe `recipe`'s shadow (running, else its latest run): the candidate, how many parts
    /// were offered, skipped and compared, and the agreement over the newest `window` parts.
    pub fn status(&self, recipe: usize, window: usize) -> Result<Json, String> {
        let name = self.switch.recipe_names().get(recipe).cloned().unwrap_or_default();
        let conn = crate::sinks::store::open_read_only(&self.db).map_err(|e| e.to_string())?;
        let (run_id, counters) = match self.running().get(&recipe) {
            Some(r) => (
                Some(r.run_id),
                Some(json!({
                    "offered": r.offered.load(Relaxed),
                    "skipped": r.skipped.load(Relaxed),
                    "compared": r.compared.load(Relaxed),
                })),
            ),
            None => (record::latest_run(&conn, &name).map_err(|e| e.to_string())?, None),
        };
        let Some(run_id) = run_id else {
            return Ok(json!({ "recipe": name, "state": "none" }));
        };
        let share = self.running().get(&recipe).map(|r| r.share);
        let mut out = json!({
            "recipe": name,
            "share": share,
            "state": match (counters.is_some(), self.draining(recipe)) {
                (true, _) => "running",
                (false, true) => "stopping",
                (false, false) => "stopped",
            },
            "candidate": record::run_info(&conn, run_id).map_err(|e| e.to_string())?,
            "window": window,
        });
        if let Some(c) = counters {
            out["counts"] = c;
        }
        let report = record::report(&conn, run_id, window).map_err(|e| e.to_string())?;
        if let (Json::Object(out), Json::Object(report)) = (&mut out, report) {
            out.extend(report);
        }
        Ok(out)
    }
}

/// The shadow station's config: the live one's cameras (fed copies, never paced or reopened,
/// already undistorted, never stalled), the recipe's regions and rules with the candidate's
/// model and threshold, one worker with one thread, no verdict deadline to speak of (it judges
/// agreement, not speed), and none of the live station's outputs.
fn shadow_config(live: &LoadedConfig, recipe: &crate::config::RecipeConfig, package: &Path) -> LoadedConfig {
    let mut loaded = live.clone();
    let cfg = &mut loaded.config;
    let mut rc = recipe.clone();
    rc.package = package.to_path_buf();
    rc.teach = None;
    rc.threshold = None;
    rc.cameras = Vec::new();
    rc.rules = Some(recipe.rules.clone().unwrap_or_else(|| cfg.rules.clone()));
    cfg.recipes = vec![rc];
    cfg.model.teach = None;
    cfg.model.workers = 1;
    cfg.model.intra_threads = 1;
    cfg.pipeline.verdict_deadline_ms = 3_600_000;
    cfg.pipeline.preprocess_workers = 1;
    for cam in &mut cfg.cameras {
        cam.fps = 0.0;
        cam.backpressure = Some(Backpressure::Block);
        cam.trigger = CameraTrigger::Line;
        cam.max_frame_age_ms = None;
    }
    for g in &mut loaded.geometry {
        g.undistort = false;
    }
    cfg.line = None;
    cfg.store = None;
    cfg.archive = None;
    loaded
}

/// Put the calling thread (and the threads it starts) at the lowest CPU priority: SCHED_IDLE,
/// else nice 19.
fn lowest_cpu_priority() {
    use crate::http_server::priority;
    if let Err(e) = priority::idle().or_else(|_| priority::set(19)) {
        tracing::warn!(error = %e, "shadow model: could not lower its CPU priority; it may take CPU from the line");
    }
}
