//! The station topology: builds every part from a validated config (model loaded and warmed up,
//! cameras opened), wires the threads with bounded queues, runs, and shuts down in order.
//!
//! ```text
//! camera threads ─► camera queues ─► preprocess ─► tile queue ─► infer workers ─► results queue ─┐
//!                                        └──────── frame starts ────────────────────────────────►  assembler ─► outputs
//! ```
//!
//! Shutdown cascades: cameras stop capturing and close their queues; each stage drains its input
//! and closes its output when the input is closed and empty; so every frame already captured gets
//! its verdict before the process exits.

pub mod assemble;
pub mod preprocess_thread;
pub mod recipes;
pub mod stitch;

use crate::calibration::{CameraGeometry, Undistorter};
use crate::config::{Backpressure, LoadedConfig};
use crate::model::ModelPackage;
use crate::pipeline::accounting::Accounting;
use crate::pipeline::messages::ScoreMap;
use crate::pipeline::{LineTap, LiveThresholds, OutputPort, RecipeSwitch, Slots};
use crate::pool::BufferPool;
use crate::sources::camera::{CameraSettings, CameraThread, SourceFactory};
use crate::sources::{self, Source};
use crate::stages::infer::cpu;
use crate::stages::infer::session::{InferSession, SessionOptions};
use crate::stages::infer::worker::InferenceStall;
use crate::stages::infer::worker::{BatchOutcome, ModelInstalls, OutputFault, Worker, WorkerModel};
use crate::supervise::Supervisor;
use crate::telemetry::{StationMetrics, Telemetry};
use assemble::{Assembler, AssemblerPlan};
use crossbeam_channel::{Sender, bounded, unbounded};
use recipes::build_recipe;
pub use recipes::{Installed, Installer, LoadedRecipe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

/// Tiles of one frame whose batches the batch pool keeps room for while the frame is cut (a
/// 2048² frame in 256² tiles is 81); a larger frame's extra batches are allocated and freed.
const TILES_HELD_WHILE_CUTTING: usize = 96;

/// Why a station could not be built. Each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Package(#[from] crate::model::PackageError),
    #[error(transparent)]
    Session(#[from] crate::stages::infer::session::SessionError),
    #[error(
        "camera {camera}: cannot open source: {message} (check the camera's [camera.source] settings; a camera that fails later is retried)"
    )]
    Camera { camera: String, message: String },
    #[error("config: {0}")]
    Config(String),
    #[error("camera {camera}: {message}")]
    Calibration { camera: String, message: String },
    #[error("metrics: {0}")]
    Telemetry(#[from] prometheus::Error),
    #[error("recipe {recipe}: {source}")]
    Recipe { recipe: String, source: Box<BuildError> },
}

impl BuildError {
    /// Name the recipe the error belongs to, when the station has more than one.
    fn in_recipe(self, recipe: &str, recipes: usize) -> Self {
        if recipes > 1 { BuildError::Recipe { recipe: recipe.into(), source: Box::new(self) } } else { self }
    }
}

/// Run-time choices that are not part of the station config.
#[derive(Default)]
pub struct RunOptions {
    /// Stop each camera after this many frames.
    pub max_frames: Option<u64>,
    /// Where each decided part goes, offered in this order (see [`OutputPort`]; `sinks::Outputs`
    /// wires the station's own).
    pub outputs: Vec<Box<dyn OutputPort>>,
    /// Per camera, in config order: where it registers its parts with the line output (empty
    /// without one).
    pub line_taps: Vec<LineTap>,
    /// Where the station's metrics are registered and its readiness reported (the admin
    /// listener serves both). Without it the metrics still count, unexported.
    pub telemetry: Option<Arc<Telemetry>>,
    /// Test and bench fault injection: stall inference (see [`InferenceStall`]).
    pub inference_stall: Option<InferenceStall>,
    /// Test fault injection: NaN model outputs (see [`OutputFault`]).
    pub output_fault: Option<OutputFault>,
    /// Watches every pipeline thread (see [`crate::supervise`]); its stop flag is the station's.
    /// Without one the station makes its own.
    pub supervisor: Option<Arc<Supervisor>>,
    /// The cameras' recipe switch, when the caller made it first (the line output's PLC job
    /// changes use it before the station is built); else the station makes its own.
    pub recipe_switch: Option<Arc<RecipeSwitch>>,
    /// Per camera, in config order: sources made by the caller instead of from the cameras'
    /// `[camera.source]` (a shadow model's copies of the line's frames). They are never reopened.
    pub sources: Option<Vec<Box<dyn Source>>>,
}

/// A camera ready to start: settings, opened source, queue depth, its frame size in bytes when
/// known in advance (so its pixel pool can be filled up front), and its undistortion tables.
struct BuiltCamera {
    settings: CameraSettings,
    /// The first source, and whether it is open (replays are; live cameras open in their thread).
    source: (Box<dyn Source>, bool),
    factory: SourceFactory,
    queue_depth: usize,
    frame_bytes: Option<usize>,
    undistort: Option<Undistorter>,
}

/// A built station, ready to run.
pub struct Station {
    /// By recipe index (see `config::recipe`): frames are judged by the recipe stamped on them.
    pub recipes: Vec<LoadedRecipe>,
    /// Which recipe each camera's frames are stamped with; switch it while the station runs.
    pub switch: Arc<RecipeSwitch>,
    /// Each recipe's threshold in force (anomaly models); change it while the station runs.
    pub thresholds: Arc<LiveThresholds>,
    accounting: Arc<Accounting>,
    metrics: Arc<StationMetrics>,
    stop: Arc<AtomicBool>,
    supervisor: Arc<Supervisor>,
    cameras: Vec<BuiltCamera>,
    /// Per camera: no frame for this long marks it down.
    stall_timeouts: Vec<Duration>,
    /// Per worker, per recipe: its own session of that recipe's model, and where models
    /// installed while the station runs come in.
    sessions: Vec<(Vec<InferSession>, ModelInstalls)>,
    /// The core each worker is pinned to, by worker (`[model] pin_workers`); `None`: the
    /// scheduler places them.
    pub worker_cores: Option<Vec<usize>>,
    /// Per model slot: how its model takes its input.
    cuts: Arc<Slots<preprocess_thread::Cut>>,
    /// Installs recipes' new models while the station runs.
    pub installer: Arc<Installer>,
    plan: AssemblerPlan,
    max_in_flight: usize,
    preprocess_workers: usize,
    overlap: u32,
    options: RunOptions,
    /// `linesight eval` only: per-pixel scores of every frame (see [`Station::with_score_maps`]).
    score_maps: Option<Sender<ScoreMap>>,
}

impl Station {
    /// Load and check everything; open every camera. Nothing runs yet.
    pub fn build(loaded: &LoadedConfig, mut options: RunOptions) -> Result<Self, BuildError> {
        let cfg = &loaded.config;
        let mut given_sources = options.sources.take().map(Vec::into_iter);
        let recipe_configs = loaded.recipes();
        let opts = SessionOptions {
            provider: cfg.model.provider,
            device_id: cfg.model.device_id,
            intra_threads: cfg.model.intra_threads,
            intra_spinning: cfg.model.intra_spinning,
        };
        // Every recipe's model is loaded, checked and warmed up now, in every worker: a switch
        // is then instant, and a recipe whose model cannot load stops the start, naming it.
        let mut recipes = Vec::new();
        let mut cuts = Vec::new();
        let mut plans = Vec::new();
        let mut sessions: Vec<Vec<InferSession>> = (0..cfg.model.workers).map(|_| Vec::new()).collect();
        let mut metric_classes: Vec<String> = Vec::new();
        for rc in &recipe_configs {
            let built = build_recipe(loaded, rc, &opts, cfg.model.workers, &mut metric_classes)
                .map_err(|e| e.in_recipe(&rc.name, recipe_configs.len()))?;
            for (worker, session) in sessions.iter_mut().zip(built.sessions) {
                worker.push(session);
            }
            cuts.push(built.cut);
            plans.push(built.plan);
            recipes.push(built.recipe);
        }
        let camera_ids: Vec<String> = cfg.cameras.iter().map(|c| c.id.clone()).collect();
        let accounting = Arc::new(Accounting::new(&camera_ids));
        let mut cameras = Vec::new();
        for (i, cam) in cfg.cameras.iter().enumerate() {
            let given = given_sources.as_mut().and_then(Iterator::next);
            let is_given = given.is_some();
            let mut source = match given {
                Some(source) => source,
                None => sources::build(&cam.source, loaded)
                    .map_err(|e| BuildError::Camera { camera: cam.id.clone(), message: e.to_string() })?,
            };
            // A replay (local files) opens now, so a missing folder fails the start; a live camera
            // opens on its own thread, within its open timeout, and is retried while the others
            // run: one camera that never delivers must not keep the station from starting.
            let opened = source.is_replay();
            if opened {
                source.open().map_err(|e| BuildError::Camera { camera: cam.id.clone(), message: e.to_string() })?;
            }
            let factory: SourceFactory = if is_given {
                Box::new(|| {
                    Err(sources::SourceError::Disconnected("a source given by the caller is not reopened".into()))
                })
            } else {
                let (config, loaded) = (cam.source.clone(), loaded.clone());
                Box::new(move || sources::build(&config, &loaded))
            };
            let backpressure = cam.backpressure.unwrap_or(if source.is_replay() {
                Backpressure::Block
            } else {
                Backpressure::DropOldest
            });
            let mut frame_bytes = None;
            if let crate::config::SourceConfig::Synthetic(s) = &cam.source {
                frame_bytes = Some((s.width * s.height) as usize);
            }
            let undistort = build_undistort(cam, &loaded.geometry[i], source.as_ref())?;
            if let (Some(mm), Some(origin)) = (loaded.geometry[i].mm_per_px, &loaded.geometry[i].scale_origin) {
                tracing::info!(camera = %cam.id, mm_per_px = mm, origin = %origin, undistort = undistort.is_some(), "camera scale");
            }
            let settings = CameraSettings {
                index: i as u16,
                id: cam.id.clone(),
                fps: cam.fps,
                backpressure,
                max_frames: options.max_frames,
                reconnect_initial: cam.reconnect_initial(),
                reconnect_max: cam.reconnect_max(),
                open_timeout: cam.open_timeout(),
                grab_timeout: cam.stall_timeout(),
                max_frame_age: cam.max_frame_age(),
            };
            cameras.push(BuiltCamera {
                settings,
                source: (source, opened),
                factory,
                queue_depth: cam.queue_depth,
                frame_bytes,
                undistort,
            });
        }
        let (cuts, plans) = (Arc::new(Slots::from_vec(cuts)), Arc::new(Slots::from_vec(plans)));
        let plan = AssemblerPlan {
            recipes: Arc::clone(&plans),
            mm_per_px: loaded.geometry.iter().map(|g| g.mm_per_px.map(|m| m as f32)).collect(),
            verdict_deadline: Duration::from_millis(cfg.pipeline.verdict_deadline_ms),
        };
        let registry = options.telemetry.as_ref().map(|t| &t.registry);
        let models: Vec<(&str, &str)> =
            recipes.iter().map(|r| (r.package.manifest.name.as_str(), r.package.sha256.as_str())).collect();
        let metrics = Arc::new(StationMetrics::new(&accounting, &metric_classes, &models, registry)?);
        let switch = match &options.recipe_switch {
            Some(s) if s.recipes() == recipes.len() && s.cameras() == cfg.cameras.len() => Arc::clone(s),
            Some(_) => return Err(BuildError::Config("the recipe switch given does not match the config".into())),
            None => Arc::new(RecipeSwitch::new(&loaded.starting_recipes(), recipes.len()).named(
                recipes.iter().map(|r| r.name.clone()).collect(),
                cfg.cameras.iter().map(|c| c.id.clone()).collect(),
            )),
        };
        let thresholds = Arc::new(LiveThresholds::new(&recipes.iter().map(|r| r.threshold).collect::<Vec<_>>()));
        let contexts = Arc::new(Slots::from_vec(recipe_contexts(&recipes)));
        let (install_txs, install_rxs): (Vec<_>, Vec<_>) = (0..sessions.len()).map(|_| unbounded()).unzip();
        let sessions: Vec<_> = sessions.into_iter().zip(install_rxs).collect();
        let installer = Arc::new(Installer::new(
            loaded,
            opts,
            cfg.model.workers,
            Arc::clone(&cuts),
            plans,
            contexts,
            Arc::clone(&thresholds),
            Arc::clone(&switch),
            install_txs,
            metric_classes,
            Arc::clone(&metrics),
            recipes.iter().map(|r| (recipes::absolute(&r.package.dir), r.rules.clone())).collect(),
        ));
        if let Some(t) = &options.telemetry {
            // Sessions are checked and warmed up, cameras opened: the model part is ready.
            t.readiness.watch_cameras(Arc::clone(&accounting));
            t.readiness.model.release();
        }
        let supervisor = options.supervisor.clone().unwrap_or_else(Supervisor::standalone);
        Ok(Self {
            recipes,
            switch,
            thresholds,
            accounting,
            metrics,
            stop: supervisor.stop_flag(),
            supervisor,
            cameras,
            // A camera triggered by the line is idle whenever the line is: no frames is no stall.
            stall_timeouts: cfg
                .cameras
                .iter()
                .map(|c| match c.trigger {
                    crate::config::CameraTrigger::Line => Duration::MAX,
                    crate::config::CameraTrigger::Free => Duration::from_millis(c.stall_timeout_ms),
                })
                .collect(),
            worker_cores: (cfg.model.pin_workers && cfg.model.provider == crate::config::Provider::Cpu)
                .then(|| {
                    let usable = crate::config::available_cores();
                    cpu::worker_cores(sessions.len(), cfg.model.intra_threads == 1, &cpu::allowed_cores(), usable)
                })
                .flatten(),
            sessions,
            cuts,
            installer,
            plan,
            max_in_flight: cfg.pipeline.max_in_flight,
            preprocess_workers: cfg.pipeline.preprocess_workers,
            overlap: cfg.pipeline.tile_overlap_px,
            options,
            score_maps: None,
        })
    }

    /// `linesight eval`: also send every decided frame's per-pixel scores (segmentation and
    /// anomaly models) to `tx`. The send blocks, so the reader must keep up; it allocates a map
    /// per frame, so a production station never sets it.
    pub fn with_score_maps(mut self, tx: Sender<ScoreMap>) -> Self {
        self.score_maps = Some(tx);
        self
    }

    /// The first recipe's model package (the only one of a station without `[[recipe]]`s).
    pub fn package(&self) -> &ModelPackage {
        &self.recipes[0].package
    }

    /// What records need to know about each model slot, by slot index: the recipes', and those
    /// installed while the station runs.
    pub fn recipe_contexts(&self) -> Arc<Slots<crate::sinks::RecipeContext>> {
        Arc::clone(&self.installer.contexts)
    }

    /// The station's counters (live while it runs).
    pub fn accounting(&self) -> Arc<Accounting> {
        Arc::clone(&self.accounting)
    }

    /// The station's supervisor: whether a stage failed (see [`crate::supervise`]).
    pub fn supervisor(&self) -> Arc<Supervisor> {
        Arc::clone(&self.supervisor)
    }

    /// Set to true to stop capture; the pipeline then drains and `run` returns.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Start every thread and block until the station has stopped and drained.
    pub fn run(self) -> Arc<Accounting> {
        let Station {
            recipes,
            switch,
            thresholds,
            accounting,
            metrics,
            stop,
            supervisor,
            cameras,
            stall_timeouts,
            sessions,
            worker_cores,
            cuts,
            installer: _,
            plan,
            max_in_flight,
            preprocess_workers,
            overlap,
            options,
            score_maps,
        } = self;
        let (slot_tx, slot_rx) = bounded(max_in_flight);
        for s in 0..max_in_flight {
            slot_tx.send(s as u16).expect("slot queue has room for every slot");
        }
        let (start_tx, start_rx) = bounded(max_in_flight);
        // Batches waiting for a worker: enough to keep every worker busy, few enough that a slow
        // model pushes back on preprocessing (and so on the camera queues) at once.
        let batch_queue = 2 * sessions.len();
        let (job_tx, job_rx) = bounded(batch_queue);
        let (result_tx, result_rx) = bounded(max_in_flight.max(batch_queue));
        let mut handles: Vec<JoinHandle<()>> = Vec::new();

        let cameras_done = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (accounting, done) = (Arc::clone(&accounting), Arc::clone(&cameras_done));
            spawn(&supervisor, "watchdog".into(), "watchdog", move || {
                watch_cameras(&accounting, &stall_timeouts, &done)
            })
        };
        let mut camera_rxs = Vec::new();
        let mut line_taps = options.line_taps.into_iter();
        // Frames the outputs may hold (the archive's queue and the one it writes).
        let held_by_outputs: usize = options.outputs.iter().map(|o| o.frames_held()).sum();
        for BuiltCamera { settings, source, factory, queue_depth: depth, frame_bytes, undistort } in cameras {
            let (tx, rx) = bounded(depth);
            camera_rxs.push(rx.clone());
            // Pixel buffers in flight per camera: its queue, every slot, one held by each
            // preprocess thread while it waits for a slot, one being captured (and one being
            // undistorted into), and those the outputs hold.
            let buffers =
                depth + max_in_flight + preprocess_workers + 1 + usize::from(undistort.is_some()) + held_by_outputs;
            let pool = match frame_bytes {
                Some(len) => BufferPool::preallocated(buffers, len),
                // Unknown frame size: each buffer grows once, on its first frame.
                None => BufferPool::new(buffers),
            };
            let thread = CameraThread {
                line: line_taps.next(),
                settings,
                source: Some(source),
                factory,
                pool,
                tx,
                rx,
                accounting: Arc::clone(&accounting),
                stop: Arc::clone(&stop),
                on_grab: observe_seconds(&metrics.capture),
                undistort,
                on_undistort: observe_seconds(&metrics.undistort),
                recipes: Arc::clone(&switch),
            };
            let name = format!("camera-{}", thread.settings.id);
            handles.push(spawn(&supervisor, name, "camera", move || thread.run()));
        }

        // Batch tensors in flight: the batch queue, one running per worker, one being filled per
        // preprocess thread and recipe, allocated up front. Each holds the largest padded batch of
        // any recipe. (A model installed later whose batches are larger grows the buffers it gets.)
        // Batches a frame fills while it is being cut wait for its FrameStart: with small batches
        // and many tiles per frame there are many, so the pool keeps room for them too, allocated
        // on the first large frame.
        let largest = cuts.iter().map(|c| c.policy.padded(c.policy.gather_limit()) * c.item_len()).max().unwrap_or(0);
        let held_while_cutting =
            cuts.iter().map(|c| TILES_HELD_WHILE_CUTTING.div_ceil(c.policy.gather_limit().max(1))).max();
        let in_flight = batch_queue + sessions.len() + preprocess_workers * cuts.len() + 1;
        let batch_pool = BufferPool::partly_preallocated(
            in_flight + preprocess_workers * held_while_cutting.unwrap_or(0),
            in_flight,
            largest,
        );
        // Several preprocess threads share the camera queues (crossbeam queues are MPMC).
        for i in 0..preprocess_workers {
            let pre = preprocess_thread::Preprocessor {
                cuts: Arc::clone(&cuts),
                overlap,
                batch_pool: batch_pool.clone(),
                accounting: Arc::clone(&accounting),
                on_frame: observe_seconds(&metrics.preprocess),
                invalid_log: crate::telemetry::burst::Burst::new(
                    "frames that cannot be inspected are dropped (invalid_frame), never judged",
                ),
            };
            let out = preprocess_thread::Downstream {
                free_slots: slot_rx.clone(),
                starts: start_tx.clone(),
                jobs: job_tx.clone(),
            };
            let cams = camera_rxs.clone();
            handles.push(spawn(&supervisor, format!("preprocess-{i}"), "preprocess", move || pre.run(cams, out)));
        }
        metrics.watch_queues(camera_rxs);
        drop((start_tx, job_tx, slot_rx));

        for (i, (worker_sessions, installs)) in sessions.into_iter().enumerate() {
            let models = worker_sessions
                .into_iter()
                .zip(&recipes)
                .map(|(session, r)| {
                    let m = &r.package.manifest;
                    WorkerModel {
                        session,
                        name: m.name.clone(),
                        input_name: m.input.name.clone(),
                        input_shape: [m.input.channels as usize, m.input.height as usize, m.input.width as usize],
                        output_names: m.task.output_names().iter().map(|s| s.to_string()).collect(),
                    }
                })
                .collect();
            let worker = Worker {
                installs,
                stall: options.inference_stall,
                output_fault: options.output_fault,
                models,
                on_batch: {
                    let accounting = Arc::clone(&accounting);
                    let (inference, batch_size) = (Arc::clone(&metrics.inference), metrics.batch_size.clone());
                    Box::new(move |recipe, tiles, took, outcome| {
                        accounting.batches.fetch_add(1, Relaxed);
                        accounting.batch_tiles.fetch_add(tiles as u64, Relaxed);
                        accounting.infer_busy_ns.fetch_add(took.as_nanos() as u64, Relaxed);
                        match outcome {
                            BatchOutcome::Ok => accounting.invalid_output_streak.store(0, Relaxed),
                            BatchOutcome::Failed => {
                                accounting.inference_errors.fetch_add(1, Relaxed);
                            }
                            BatchOutcome::InvalidOutput => {
                                accounting.invalid_output_batches.fetch_add(1, Relaxed);
                                accounting.invalid_output_streak.fetch_add(1, Relaxed);
                            }
                        }
                        if let Some(h) = inference.get(usize::from(recipe)) {
                            h.observe(took.as_secs_f64());
                        }
                        batch_size.observe(tiles as f64);
                    })
                },
            };
            let (jobs, results) = (job_rx.clone(), result_tx.clone());
            let core = worker_cores.as_ref().map(|cores| cores[i]);
            handles.push(spawn(&supervisor, format!("infer-{i}"), "infer", move || {
                if let Some(core) = core
                    && let Err(e) = cpu::pin_current_thread(core)
                {
                    // Unpinned it still judges every part; only its latency's tail is longer.
                    tracing::warn!(worker = i, core, error = %e, "could not pin the inference worker to its core; the scheduler places it");
                }
                worker.run(jobs, results)
            }));
        }
        drop((job_rx, result_tx));

        let assembler =
            Assembler::new(plan, max_in_flight, slot_tx, options.outputs, thresholds, Arc::clone(&accounting), metrics)
                .with_score_maps(score_maps);
        let assembler_handle =
            spawn(&supervisor, "assemble".into(), "assemble", move || assembler.run(start_rx, result_rx));
        if let Some(t) = &options.telemetry {
            t.readiness.pipeline.release();
        }

        for h in handles {
            join_logging_panics(h);
        }
        cameras_done.store(true, Relaxed);
        join_logging_panics(watchdog);
        join_logging_panics(assembler_handle);
        if let Some(t) = &options.telemetry {
            t.readiness.pipeline.reset();
        }
        accounting
    }
}

/// What records need to know about each recipe, by recipe index.
fn recipe_contexts(recipes: &[LoadedRecipe]) -> Vec<crate::sinks::RecipeContext> {
    recipes
        .iter()
        .map(|r| crate::sinks::RecipeContext {
            name: r.name.clone(),
            model_name: r.package.manifest.name.clone(),
            model_sha256: r.package.sha256.clone(),
            classes: r.classes(),
            rules_json: r.rules_json.clone(),
        })
        .collect()
}

/// A camera's id and its first frame's size, or why it delivered none.
pub type CameraProbe = (String, Result<(u32, u32), String>);

/// `linesight check`: open every camera and grab one frame, each on its own thread, all at once,
/// waiting at most the camera's open timeout plus its stall timeout. Returns, per camera in config
/// order, its first frame's size or why it did not deliver. A camera that hangs is abandoned on
/// its thread (never waited for beyond its timeout).
pub fn probe_cameras(loaded: &LoadedConfig) -> Vec<CameraProbe> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut waits = Vec::new();
    for (i, cam) in loaded.config.cameras.iter().enumerate() {
        let (config, loaded, tx) = (cam.source.clone(), loaded.clone(), tx.clone());
        let spawned = std::thread::Builder::new().name(format!("probe-{}", cam.id)).spawn(move || {
            let frame = sources::build(&config, &loaded).and_then(|mut source| {
                source.open()?;
                let mut pixels = Vec::new();
                let g = source.grab(&mut pixels);
                source.close();
                match g {
                    Ok(g) => Ok((g.width, g.height)),
                    // It delivers; that one image is bad (the run logs and skips such images).
                    Err(sources::SourceError::BadFrame { .. }) => Ok((0, 0)),
                    Err(e) => Err(e),
                }
            });
            let _ = tx.send((i, frame.map_err(|e| e.to_string())));
        });
        let limit = cam.open_timeout() + cam.stall_timeout();
        waits.push((cam.id.clone(), spawned.map_err(|e| e.to_string()).err(), limit));
    }
    drop(tx);
    let late = |limit: Duration| {
        format!(
            "did not deliver a frame within {} ms (open_timeout_ms + stall_timeout_ms): check the device, stream or pipeline",
            limit.as_millis()
        )
    };
    let start = std::time::Instant::now();
    let deadline = start + waits.iter().map(|w| w.2).max().unwrap_or_default();
    let mut results: Vec<Option<Result<(u32, u32), String>>> =
        waits.iter().map(|(_, spawn_error, _)| spawn_error.clone().map(Err)).collect();
    while results.iter().any(Option::is_none) {
        match rx.recv_deadline(deadline) {
            Ok((i, r)) => results[i] = Some(if start.elapsed() <= waits[i].2 { r } else { Err(late(waits[i].2)) }),
            Err(_) => break,
        }
    }
    waits.into_iter().zip(results).map(|((id, _, limit), r)| (id, r.unwrap_or_else(|| Err(late(limit))))).collect()
}

/// A camera's undistortion tables, built once here, when it has a calibration and undistorts.
/// A source that already knows its frame size must match the calibration's.
fn build_undistort(
    cam: &crate::config::CameraConfig,
    geometry: &CameraGeometry,
    source: &dyn Source,
) -> Result<Option<Undistorter>, BuildError> {
    let Some(cal) = &geometry.calibration else { return Ok(None) };
    let fail = |message: String| BuildError::Calibration { camera: cam.id.clone(), message };
    if let Some((w, h)) = source.frame_size()
        && (w, h) != (cal.image_width, cal.image_height)
    {
        return Err(fail(format!(
            "calibration {} was made for {}×{} images, but the source delivers {w}×{h}: calibrate at the camera's resolution",
            cam.calibration.as_deref().unwrap_or(std::path::Path::new("?")).display(),
            cal.image_width,
            cal.image_height
        )));
    }
    if !geometry.undistort {
        return Ok(None);
    }
    Undistorter::new(cal).map(Some).map_err(|e| fail(format!("building the undistortion tables: {e}")))
}

/// Mark a camera down when it has delivered no frame for its stall timeout (a source blocked
/// inside a grab cannot say so itself). The camera thread marks it up again with its next frame,
/// and reopens it when the grab finally fails.
fn watch_cameras(accounting: &Accounting, stall_timeouts: &[Duration], done: &AtomicBool) {
    while !done.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let now = accounting.epoch.elapsed();
        for (i, cam) in accounting.cameras.iter().enumerate() {
            // Before the first frame this is 0: the stall is counted from the start of the run.
            let last = Duration::from_nanos(cam.last_frame_ns.load(Relaxed));
            if cam.up.load(Relaxed) && now.saturating_sub(last) > stall_timeouts[i] {
                cam.set_down(&format!("no frame for {} ms (stall_timeout_ms)", now.saturating_sub(last).as_millis()));
                tracing::warn!(camera = %cam.id, stalled_ms = now.saturating_sub(last).as_millis() as u64, "camera stalled: no frame within its stall timeout");
            }
        }
    }
}

/// Supervised threads catch their own panics (see [`crate::supervise`]), and one that panicked
/// has already closed its queues, so the rest drains.
fn join_logging_panics(handle: JoinHandle<()>) {
    let name = handle.thread().name().unwrap_or("?").to_string();
    if handle.join().is_err() {
        tracing::error!(thread = %name, "pipeline thread panicked outside its supervisor");
    }
}

/// A stage-duration hook: one histogram observation (atomic adds, no allocation).
fn observe_seconds(histogram: &prometheus::Histogram) -> Box<dyn FnMut(Duration) + Send> {
    let histogram = histogram.clone();
    Box::new(move |took| histogram.observe(took.as_secs_f64()))
}

fn spawn(
    supervisor: &Arc<Supervisor>,
    name: String,
    stage: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> JoinHandle<()> {
    supervisor.spawn(name, stage, f).expect("spawning a pipeline thread")
}
