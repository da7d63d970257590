//! `linesight run`: build the station and everything around it, run it until it is stopped or
//! its sources end, and shut down in order — the line acts on every part it registered, the
//! outputs write what is queued, the listeners go last.

use super::load;
use crate::admin::AdminServer;
use crate::api::{ApiServer, ApiState};
use crate::cli::RunArgs;
use crate::config::{LoadedConfig, StationConfig};
use crate::pipeline::accounting::{Accounting, CameraSnapshot};
use crate::shadow::Shadows;
use crate::sinks::outputs::{Outputs, StationInfo};
use crate::sources::synthetic::CameraFault;
use crate::stages::infer::worker::{InferenceStall, OutputFault};
use crate::supervise::{PanicFault, Supervisor};
use crate::telemetry::Telemetry;
use crate::topology::{RunOptions, Station};
use anyhow::{Context, Result, bail};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

pub fn run(args: RunArgs) -> Result<()> {
    let running = Running::build(args)?;
    let stopped = running.run()?;
    stopped.shutdown()
}

/// A station built with its listeners and outputs, ready to run.
struct Running {
    args: RunArgs,
    loaded: LoadedConfig,
    supervisor: Arc<Supervisor>,
    admin: Option<AdminServer>,
    api: Option<ApiServer>,
    outputs: Outputs,
    station: Station,
    fleet: Option<crate::fleet::Fleet>,
}

/// A station that has stopped and drained; its outputs and listeners still to close.
struct Stopped {
    args: RunArgs,
    supervisor: Arc<Supervisor>,
    admin: Option<AdminServer>,
    api: Option<ApiServer>,
    outputs: Outputs,
    fleet: Option<crate::fleet::Fleet>,
    accounting: Arc<Accounting>,
    elapsed: Duration,
}

/// Fault injection for tests and soaks, read from the environment; each one set is logged
/// loudly. Never set on a production line.
struct Faults {
    inference_stall: Option<InferenceStall>,
    output_fault: Option<OutputFault>,
}

impl Faults {
    fn from_env() -> Result<Self> {
        if let Ok(text) = std::env::var(PanicFault::ENV) {
            let fault = PanicFault::parse(&text).map_err(anyhow::Error::msg)?;
            tracing::warn!(
                stage = %fault.stage,
                after = fault.after,
                "FAULT INJECTION: a stage panics on purpose ({} is set); never use this on a production line",
                PanicFault::ENV
            );
        }
        let inference_stall = match std::env::var(InferenceStall::ENV) {
            Ok(text) => {
                let stall = InferenceStall::parse(&text).map_err(anyhow::Error::msg)?;
                tracing::warn!(
                    every = stall.every,
                    stall_ms = stall.stall.as_millis() as u64,
                    "FAULT INJECTION: inference stalls on purpose ({} is set); never use this on a production line",
                    InferenceStall::ENV
                );
                Some(stall)
            }
            Err(_) => None,
        };
        if let Ok(text) = std::env::var(CameraFault::ENV) {
            let fault = CameraFault::parse(&text).map_err(anyhow::Error::msg)?;
            tracing::warn!(
                ?fault,
                "FAULT INJECTION: synthetic cameras freeze and unplug on purpose ({} is set); never use this on a production line",
                CameraFault::ENV
            );
        }
        let output_fault = match std::env::var(OutputFault::ENV) {
            Ok(text) => {
                let fault = OutputFault::parse(&text).map_err(anyhow::Error::msg)?;
                tracing::warn!(
                    from = fault.from,
                    count = fault.count,
                    "FAULT INJECTION: model outputs become NaN on purpose ({} is set); never use this on a production line",
                    OutputFault::ENV
                );
                Some(fault)
            }
            Err(_) => None,
        };
        Ok(Self { inference_stall, output_fault })
    }
}

impl Running {
    /// Everything that can fail fast does so before the model loads: the admin listener (so
    /// /healthz answers at once and /readyz says what is not ready yet), the outputs (a locked
    /// database, a bad archive folder or events file; the PLC sees "not ready" meanwhile) and
    /// the API's port. Then the model loads, the cameras open, and the outputs start.
    fn build(args: RunArgs) -> Result<Self> {
        let loaded = load(args.config.as_deref())?;
        let cfg = &loaded.config;
        let telemetry = Arc::new(Telemetry::new());
        let supervisor = Supervisor::new(Arc::clone(&telemetry.readiness), Some(&telemetry.registry))?;
        let faults = Faults::from_env()?;
        let admin = match admin_address(&args, cfg)? {
            Some(addr) => {
                let server = crate::admin::start(addr, Arc::clone(&telemetry))?;
                tracing::info!(address = %server.local_addr(), "admin listener serving /metrics, /healthz and /readyz");
                Some(server)
            }
            None => None,
        };
        let api_addr = api_address(&args, cfg)?;
        if cfg.store.is_none() && api_addr.is_some() && args.api_listen.is_some() {
            bail!("--api-listen: the API reads the result store: add [store] path = \"linesight.db\" to the config");
        }
        let results = args.results.clone().or_else(|| cfg.outputs.results.clone());
        // Made before the station: a PLC's job change may come while the models load.
        let recipe_switch =
            Arc::new(crate::pipeline::RecipeSwitch::new(&loaded.starting_recipes(), loaded.recipes().len()).named(
                loaded.recipes().into_iter().map(|r| r.name).collect(),
                cfg.cameras.iter().map(|c| c.id.clone()).collect(),
            ));
        let mut outputs = Outputs::open(&loaded, results.as_deref(), &telemetry, &supervisor, &recipe_switch)?;
        // `/cameras` and `/recipes` show the station once it is built.
        let (api, api_slots) = start_api(api_addr, &outputs, cfg, &telemetry)?;

        // Shadow models get copies of the line's frames here (started through the API).
        let (shadow_port, shadow_tap) = crate::pipeline::shadow_tap::shadow_port(Arc::clone(&recipe_switch));
        let options = RunOptions {
            max_frames: args.max_frames,
            outputs: outputs.ports_with_shadow(shadow_port),
            line_taps: outputs.line_taps(cfg.cameras.len()),
            telemetry: Some(Arc::clone(&telemetry)),
            inference_stall: faults.inference_stall,
            output_fault: faults.output_fault,
            supervisor: Some(Arc::clone(&supervisor)),
            recipe_switch: Some(recipe_switch),
            sources: None,
        };
        let station = Station::build(&loaded, options)?;
        if let Some(slots) = &api_slots {
            let _ = slots.counters.set(station.accounting());
            let cameras = cfg.cameras.iter().map(|c| c.id.clone()).collect();
            let _ = slots.live.set(crate::ui::live::LiveView::start(&shadow_tap, cameras)?);
        }
        // The API and the fleet link (recipes from the hub) change the same recipes and shadows.
        let live_recipes = (api_slots.is_some() || cfg.fleet.is_some()).then(|| {
            let mut live = crate::api::LiveRecipes::of(&station);
            if let Some(db) = outputs.store_path() {
                let shadows =
                    Shadows::new(shadow_tap, &loaded, db.to_path_buf(), live.switch.clone(), live.models.clone());
                live.shadows = Some(Arc::new(shadows));
            }
            Arc::new(live)
        });
        if let (Some(slots), Some(live)) = (&api_slots, &live_recipes) {
            let _ = slots.recipes.set(Arc::clone(live));
        }
        let info = StationInfo {
            station: cfg.station.name.clone(),
            cameras: cfg.cameras.iter().map(|c| c.id.clone()).collect(),
            recipes: station.recipe_contexts(),
            accounting: station.accounting(),
        };
        outputs.start(&info, &supervisor)?;
        let fleet = match (&cfg.store, outputs.store_path(), live_recipes) {
            (Some(s), Some(db), Some(live)) if cfg.fleet.is_some() => {
                let retention =
                    crate::sinks::store::Retention { days: s.retention_days, max_inspections: s.max_inspections };
                Some(crate::fleet::Fleet::start(
                    &loaded,
                    db.to_path_buf(),
                    retention,
                    station.accounting(),
                    live,
                    Some(&telemetry.registry),
                )?)
            }
            _ => None,
        };
        Ok(Self { args, loaded, supervisor, admin, api, outputs, station, fleet })
    }

    /// Run until SIGINT/SIGTERM or the sources end; the pipeline drains before this returns.
    fn run(self) -> Result<Stopped> {
        let Self { args, loaded, supervisor, admin, api, outputs, station, fleet } = self;
        let stop = station.stop_handle();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // A second signal while draining exits at once.
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
            signal_hook::flag::register(signal, Arc::clone(&stop))?;
        }
        let accounting = station.accounting();
        tracing::info!(
            station = %loaded.config.station.name,
            cameras = loaded.config.cameras.len(),
            workers = loaded.config.model.workers,
            intra_threads = loaded.config.model.intra_threads,
            max_batch = loaded.config.pipeline.max_batch,
            pinned_to_cores = %station.worker_cores.as_ref().map_or("no".into(), |c| format!("{c:?}")),
            recipes = %station.recipes.iter().map(|r| format!("{} ({})", r.name, r.package.manifest.name)).collect::<Vec<_>>().join(", "),
            "station ready"
        );
        let status = std::io::stderr().is_terminal().then(|| spawn_status_line(Arc::clone(&accounting)));
        let started = Instant::now();
        station.run();
        if let Some((done, handle)) = status {
            done.store(true, Relaxed);
            let _ = handle.join();
        }
        Ok(Stopped { args, supervisor, admin, api, outputs, fleet, accounting, elapsed: started.elapsed() })
    }
}

impl Stopped {
    /// The line acts on the parts still before their deadlines and reports "not ready", the
    /// outputs write what is queued, then the listeners close; the accounting must add up.
    fn shutdown(self) -> Result<()> {
        let Self { args, supervisor, admin, api, outputs, fleet, accounting, elapsed } = self;
        // Supervised threads catch their own panics and errors (see `supervise`).
        outputs.finish();
        // What it has not sent stays in the store's outbox for the next start.
        if let Some(fleet) = fleet {
            fleet.stop();
        }
        if let Some(server) = api {
            server.shutdown();
        }
        if let Some(server) = admin {
            server.shutdown();
        }
        let snaps = accounting.snapshot();
        report(&snaps, &accounting, elapsed);
        if let Some(target) = &args.summary {
            write_summary(target, &snaps, &accounting, elapsed, &supervisor.cpu_by_stage())?;
        }
        if let Some(failure) = supervisor.failure() {
            bail!(
                "{failure}; the line acted on every part it had registered, and the station exits non-zero so its service manager restarts it"
            );
        }
        if let Some(bad) = snaps.iter().find(|s| s.in_flight() != 0) {
            bail!("frame accounting does not add up for camera {}: {:?}", bad.id, bad);
        }
        Ok(())
    }
}

/// Where the API finds the station's counters and recipes once it is built.
struct ApiSlots {
    counters: Arc<std::sync::OnceLock<Arc<Accounting>>>,
    recipes: Arc<std::sync::OnceLock<Arc<crate::api::LiveRecipes>>>,
    live: Arc<std::sync::OnceLock<Arc<crate::ui::live::LiveView>>>,
}

/// The API listener, when it is on and there is a store for it to read; it listens before the
/// model loads (a taken port fails at once). Also returns where the built station's counters
/// go, for `/cameras`.
fn start_api(
    addr: Option<SocketAddr>,
    outputs: &Outputs,
    cfg: &StationConfig,
    telemetry: &Telemetry,
) -> Result<(Option<ApiServer>, Option<ApiSlots>)> {
    match (outputs.store_path(), addr) {
        (Some(store), Some(addr)) => {
            let mut state = ApiState::new(store.to_path_buf(), None);
            let slots = ApiSlots {
                counters: Arc::clone(&state.accounting),
                recipes: Arc::clone(&state.recipes),
                live: Arc::clone(&state.live),
            };
            state.readiness = Some(Arc::clone(&telemetry.readiness));
            let env_admin = std::env::var(crate::api::auth::ENV_ADMIN_TOKEN).ok();
            state.tokens = crate::api::auth::Tokens::from_config(&cfg.api, env_admin.as_deref());
            state.utc_offset_minutes = cfg.api.utc_offset_minutes;
            state.archive_dir = outputs.archive_dir().map(|d| d.to_path_buf());
            state.stats_cache_ttl = Duration::from_millis(cfg.api.stats_cache_ms);
            state.registry = Some(telemetry.registry.clone());
            state.grafana_url = cfg.api.grafana_url.clone();
            state.metrics = Arc::new(crate::api::ApiMetrics::new(Some(&telemetry.registry))?);
            let server = crate::api::start(addr, state)?;
            tracing::info!(address = %server.local_addr(), "API listener serving /api/v1 (see /api/v1/openapi.json)");
            Ok((Some(server), Some(slots)))
        }
        (None, Some(_)) => {
            tracing::warn!(
                "the API is enabled but there is no [store] for it to read: API off (add [store] path = \"linesight.db\", or set [api] enabled = false)"
            );
            Ok((None, None))
        }
        _ => Ok((None, None)),
    }
}

/// `--summary`: the run's counters as one JSON object, to a file or stdout (`-`), with the CPU
/// time each stage's threads used and the whole process's (`cpu_s`; what the stages do not
/// account for is ONNX Runtime's own threads, the sources' readers, start-up and the services).
fn write_summary(
    target: &str,
    snaps: &[CameraSnapshot],
    accounting: &Accounting,
    elapsed: Duration,
    cpu_by_stage: &std::collections::BTreeMap<&'static str, Duration>,
) -> Result<()> {
    let mut cpu_s: serde_json::Map<String, serde_json::Value> =
        cpu_by_stage.iter().map(|(stage, spent)| (stage.to_string(), spent.as_secs_f64().into())).collect();
    if let Some(total) = crate::telemetry::cpu_time::this_process() {
        cpu_s.insert("process".into(), total.as_secs_f64().into());
    }
    let json = serde_json::json!({
        "elapsed_s": elapsed.as_secs_f64(),
        "cpu_s": cpu_s,
        "results_dropped": accounting.results_dropped.load(Relaxed),
        "store_dropped": accounting.store_dropped.load(Relaxed),
        "store_written": accounting.store_written.load(Relaxed),
        "store_errors": accounting.store_errors.load(Relaxed),
        "archive_written": accounting.archive_written.load(Relaxed),
        "archive_dropped": accounting.archive_dropped_queue_full.load(Relaxed),
        "archive_errors": accounting.archive_errors.load(Relaxed),
        "line_dropped": accounting.line_dropped.load(Relaxed),
        "line_untracked": accounting.line_untracked.load(Relaxed),
        "cameras": snaps,
    });
    if target == "-" {
        println!("{json}");
    } else {
        std::fs::write(target, json.to_string() + "\n").with_context(|| format!("writing summary {target}"))?;
    }
    Ok(())
}

/// Where the admin listener binds: `--admin-listen` (an address or `off`), else `[admin]`.
fn admin_address(args: &RunArgs, cfg: &StationConfig) -> Result<Option<SocketAddr>> {
    let listener = (cfg.admin.enabled, cfg.admin.listen.as_str(), "admin.listen", "--admin-listen", "127.0.0.1:9464");
    listen_address(args.admin_listen.as_deref(), listener)
}

/// Where the API binds: `--api-listen` (an address or `off`), else `[api]`.
fn api_address(args: &RunArgs, cfg: &StationConfig) -> Result<Option<SocketAddr>> {
    let listener = (cfg.api.enabled, cfg.api.listen.as_str(), "api.listen", "--api-listen", "127.0.0.1:8080");
    listen_address(args.api_listen.as_deref(), listener)
}

/// A listener's address: the flag's value (an address or `off`) wins over the config's
/// `(enabled, listen)`; `None` means the listener is off. `key`, `flag` and `example` name it in
/// the error for an address that does not parse.
fn listen_address(
    flag_value: Option<&str>,
    (enabled, listen, key, flag, example): (bool, &str, &str, &str, &str),
) -> Result<Option<SocketAddr>> {
    let (text, origin) = match flag_value {
        Some("off") => return Ok(None),
        Some(text) => (text, flag),
        None if !enabled => return Ok(None),
        None => (listen, key),
    };
    let addr = text.parse().with_context(|| {
        format!("{origin} = {text:?}: expected IP:PORT (e.g. {example}, port 0 = any free port) or off")
    })?;
    Ok(Some(addr))
}

/// One line per camera on stderr at the end: the accounting, which must add up.
fn report(snaps: &[CameraSnapshot], accounting: &Accounting, elapsed: Duration) {
    for s in snaps {
        eprintln!(
            "camera {}: captured {} = OK {} + NG {} + fail-safe {} (inference {} / timeout {} / invalid output {}) + dropped {} (queue full {} / invalid {} / stale {}); capture errors {}, reconnects {}",
            s.id,
            s.captured,
            s.ok,
            s.ng,
            s.failsafe(),
            s.failsafe_inference_error,
            s.failsafe_timeout,
            s.failsafe_invalid_output,
            s.dropped(),
            s.dropped_queue_full,
            s.dropped_invalid_frame,
            s.dropped_stale,
            s.capture_errors,
            s.reconnects
        );
    }
    let inspected: u64 = snaps.iter().map(|s| s.inspected() + s.failsafe()).sum();
    eprintln!(
        "{inspected} parts decided in {:.1} s ({:.1} parts/s); results records dropped: {}",
        elapsed.as_secs_f64(),
        inspected as f64 / elapsed.as_secs_f64().max(1e-9),
        accounting.results_dropped.load(Relaxed)
    );
}

/// The live status line for interactive runs: rate, verdict counts, drops, cameras up.
fn spawn_status_line(accounting: Arc<Accounting>) -> (Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>) {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let handle = std::thread::spawn(move || {
        let mut last = (Instant::now(), 0u64);
        while !flag.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            if last.0.elapsed() < Duration::from_secs(1) {
                continue;
            }
            let snaps = accounting.snapshot();
            let decided: u64 = snaps.iter().map(|s| s.inspected() + s.failsafe()).sum();
            let fps = (decided - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), decided);
            let sum = |f: fn(&CameraSnapshot) -> u64| snaps.iter().map(f).sum::<u64>();
            let up = snaps.iter().filter(|s| s.up).count();
            eprint!(
                "\r\x1b[2K{fps:6.1} parts/s | OK {} NG {} fail-safe {} | dropped {} | cameras up {up}/{}",
                sum(|s| s.ok),
                sum(|s| s.ng),
                sum(CameraSnapshot::failsafe),
                sum(CameraSnapshot::dropped),
                snaps.len()
            );
        }
        eprintln!();
    });
    (done, handle)
}
