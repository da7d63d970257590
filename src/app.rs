//! The application edge: turns a parsed command line into work, and errors into one clear line.

use crate::api::ApiState;
use crate::cli::{CalibrateArgs, CheckArgs, Cli, Command, EvalArgs, RunArgs, SynthArgs, TeachArgs};
use crate::config::{self, LoadedConfig, StationConfig};
use crate::sinks::archive::{self, Archive};
use crate::sinks::line::LineOutput;
use crate::sinks::results::{self, RecordContext};
use crate::sinks::store::{Retention, Store, StoreContext};
use crate::sources::synthetic::CameraFault;
use crate::stages::infer::worker::OutputFault;
use crate::supervise::{PanicFault, Supervisor};
use crate::telemetry::Telemetry;
use crate::topology::accounting::{Accounting, CameraSnapshot};
use crate::topology::{InferenceStall, LineWiring, OUTPUT_QUEUE_DEPTH, RunOptions, Station};
use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

pub fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
        Command::Synth(args) => synth(args),
        Command::Calibrate(args) => calibrate(args),
        Command::Eval(args) => eval(args),
        Command::Teach(args) => teach(args),
    }
}

/// The backbone `teach` uses when none is named: the stronger Lite2 when it is there.
pub fn default_backbone() -> PathBuf {
    let models = project_dir().join("models");
    let lite2 = models.join("backbone-lite2");
    if lite2.join("backbone.toml").is_file() { lite2 } else { models.join("backbone-lite0") }
}

fn teach(args: TeachArgs) -> Result<()> {
    let input_mode = match args.input_mode.as_deref() {
        None => None,
        Some("resize") => Some(config::InputMode::Resize),
        Some("tile") => Some(config::InputMode::Tile),
        Some(other) => bail!("--input-mode {other:?}: use `resize` (squash each image) or `tile` (overlapping tiles)"),
    };
    let mut opts =
        crate::teach::TeachOptions::new(args.images, args.out, args.backbone.unwrap_or_else(default_backbone));
    opts.input_mode = input_mode;
    opts.size = args.size;
    opts.grid_stride = args.grid_stride;
    opts.tile_overlap_px = args.tile_overlap;
    opts.coreset_ratio = args.coreset_ratio;
    opts.max_bank_rows = args.max_bank_rows;
    opts.local_scale_k = args.local_scale;
    opts.pca_dims = args.pca_dims;
    opts.whiten = args.whiten;
    opts.holdout_fraction = args.holdout;
    opts.threshold_sigmas = args.threshold_sigmas;
    opts.max_overkill = args.max_overkill / 100.0;
    opts.target_escape = args.target_escape.map(|p| p / 100.0);
    opts.defects = args.defects;
    opts.time_budget_s = args.time_budget;
    opts.head = match args.head.as_str() {
        "auto" => crate::teach::head::HeadMode::Auto,
        "off" => crate::teach::head::HeadMode::Off,
        "always" => crate::teach::head::HeadMode::Always,
        other => bail!("--head {other:?}: use `auto`, `off` or `always`"),
    };
    opts.blur_sigma_px = args.blur_sigma;
    opts.top_fraction = args.top_fraction;
    opts.seed = args.seed;
    opts.threads = args.threads;
    opts.progress = std::io::stderr().is_terminal();
    let report = crate::teach::teach(&opts)?;
    print!("{}", crate::teach::summary::summary(&report));
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// The folder the demo config's relative paths start from: the current folder when it holds the
/// project's `models/`, else the checkout the binary was built in.
pub fn project_dir() -> PathBuf {
    let here = PathBuf::from(".");
    if here.join("models/demo/model.toml").is_file() {
        return here;
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("models/demo/model.toml").is_file() {
                return dir.to_path_buf();
            }
        }
    }
    here
}

/// The station config (or the demo's), with its model taught first if `[model.teach]` asks and
/// the package does not exist yet.
fn load(config: Option<&Path>) -> Result<LoadedConfig> {
    let loaded = match config {
        Some(path) => config::load_file(path)?,
        None => config::demo(project_dir())?,
    };
    crate::teach::ensure_taught(&loaded, std::io::stderr().is_terminal())?;
    Ok(loaded)
}

fn check(args: CheckArgs) -> Result<()> {
    // `check` never writes: a model still to be taught is reported, not taught (`run` teaches it).
    let loaded = config::load_file(&args.config)?;
    // Every camera must deliver a frame within its open timeout; one that does not is named, and
    // check returns rather than hang on it.
    let silent: Vec<String> = crate::topology::probe_cameras(&loaded)
        .into_iter()
        .filter_map(|(id, r)| r.err().map(|e| format!("camera {id}: {e}")))
        .collect();
    if !silent.is_empty() {
        bail!("{}: {} camera(s) deliver no frame:\n  {}", args.config.display(), silent.len(), silent.join("\n  "));
    }
    if let Some(pending) = teach_pending(&loaded)? {
        println!(
            "{}: OK — {} camera(s) deliver frames; {pending}; its I/O is checked once it exists",
            args.config.display(),
            loaded.config.cameras.len(),
        );
        return Ok(());
    }
    let station = Station::build(&loaded, RunOptions::default())?;
    let m = &station.package.manifest;
    println!(
        "{}: OK — {} camera(s) deliver frames; model {} ({}, sha256 {}) loaded, I/O matches its manifest, warmed up",
        args.config.display(),
        loaded.config.cameras.len(),
        m.name,
        m.task.kind(),
        &station.package.sha256[..12],
    );
    for (cam, geo) in loaded.config.cameras.iter().zip(&loaded.geometry) {
        if let Some(cal) = &geo.calibration {
            println!(
                "  camera {}: calibrated for {}×{} (RMS {}), {}",
                cam.id,
                cal.image_width,
                cal.image_height,
                cal.rms_px.map_or_else(|| "unknown".into(), |r| format!("{r:.3} px")),
                if geo.undistort { "frames undistorted" } else { "frames not undistorted" }
            );
        }
        if let (Some(mm), Some(origin)) = (geo.mm_per_px, &geo.scale_origin) {
            println!("  camera {}: {mm} mm/px, from {origin}", cam.id);
        }
    }
    Ok(())
}

/// What `run` would teach on first start: `[model.teach]` is set and its package holds no model.
fn teach_pending(loaded: &LoadedConfig) -> Result<Option<String>> {
    let cfg = &loaded.config;
    let Some(t) = &cfg.model.teach else { return Ok(None) };
    let package = loaded.resolve(&cfg.model.package);
    if package.join("model.toml").is_file() {
        return Ok(None);
    }
    let source = match (&t.images, t.synthetic_parts) {
        (Some(dir), _) => {
            let dir = loaded.resolve(dir);
            format!("{} images in {}", crate::teach::learn::list_images(&dir)?.len(), dir.display())
        }
        (None, parts) => {
            let cameras = cfg.cameras.iter().filter(|c| matches!(c.source, config::SourceConfig::Synthetic(_))).count();
            format!("{} good parts from each of {cameras} synthetic camera(s)", parts.unwrap_or(0))
        }
    };
    Ok(Some(format!("the model would be taught on first start into {} ({source})", package.display())))
}

fn run(args: RunArgs) -> Result<()> {
    let loaded = load(args.config.as_deref())?;
    let cfg = &loaded.config;
    let results_target = args.results.clone().or_else(|| cfg.outputs.results.clone());

    let mut outputs = Vec::new();
    let mut sink_thread = None;
    let (tx, rx) = crossbeam_channel::bounded(OUTPUT_QUEUE_DEPTH);
    if let Some(target) = &results_target {
        let writer: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            let path = loaded.resolve(Path::new(target));
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| {
                format!("cannot open results file {} (check the folder exists and is writable)", path.display())
            })?)
        };
        outputs.push(tx);
        let station_name = cfg.station.name.clone();
        let cameras = cfg.cameras.iter().map(|c| c.id.clone()).collect();
        sink_thread = Some((rx, station_name, cameras, writer));
    } else {
        drop((tx, rx));
    }

    // The admin listener starts before the model loads: /healthz answers at once, /readyz says
    // what is not ready yet, and a port already in use fails before any slow work.
    let telemetry = Arc::new(Telemetry::new());
    let supervisor = Supervisor::new(Arc::clone(&telemetry.readiness), Some(&telemetry.registry))?;
    if let Ok(text) = std::env::var(PanicFault::ENV) {
        let fault = PanicFault::parse(&text).map_err(anyhow::Error::msg)?;
        tracing::warn!(
            stage = %fault.stage,
            after = fault.after,
            "FAULT INJECTION: a stage panics on purpose ({} is set); never use this on a production line",
            PanicFault::ENV
        );
    }
    let admin = match admin_address(&args, cfg)? {
        Some(addr) => {
            let server = crate::admin::start(addr, Arc::clone(&telemetry))?;
            tracing::info!(address = %server.local_addr(), "admin listener serving /metrics, /healthz and /readyz");
            Some(server)
        }
        None => None,
    };
    // The store opens (and migrates) before the model loads: a damaged or locked database fails
    // at once, naming the file.
    let api_addr = api_address(&args, cfg)?;
    let store = match &cfg.store {
        Some(s) => {
            let retention = Retention { days: s.retention_days, max_inspections: s.max_inspections };
            Some(Store::open(&loaded.resolve(&s.path), retention)?)
        }
        None if api_addr.is_some() && args.api_listen.is_some() => {
            bail!("--api-listen: the API reads the result store: add [store] path = \"linesight.db\" to the config")
        }
        None => None,
    };
    let archive = match &cfg.archive {
        Some(a) => {
            let cameras = cfg.cameras.iter().map(|c| c.id.clone()).collect();
            Some((Archive::open(&loaded.resolve(&a.dir), cameras, a.max_bytes, a.max_age_days)?, a.ok_sample_rate))
        }
        None => None,
    };
    // The line output starts before the model loads too: the PLC sees "not ready" (error code
    // "starting") at once, and a bad events file fails before any slow work.
    let mut line = match &cfg.line {
        Some(line_cfg) => Some(LineOutput::start(
            line_cfg,
            &loaded,
            Arc::clone(&telemetry.readiness),
            Some(&telemetry.registry),
            &supervisor,
        )?),
        None => None,
    };
    let line_wiring = line.as_mut().map(|l| LineWiring {
        taps: (0..cfg.cameras.len()).map(|i| l.tap(i)).collect(),
        verdicts: l.verdicts(),
        wake: l.wakeup(),
    });
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
    // The API listens before the model loads too (a taken port fails at once); `/cameras`
    // lists the cameras once the station is built.
    let mut api_cameras = None;
    let api = match (&store, api_addr) {
        (Some(store), Some(addr)) => {
            let mut state = ApiState::new(store.path().to_path_buf(), None);
            api_cameras = Some(Arc::clone(&state.accounting));
            state.token = cfg.api.token.clone();
            state.utc_offset_minutes = cfg.api.utc_offset_minutes;
            state.archive_dir = archive.as_ref().map(|(a, _)| a.dir().to_path_buf());
            state.stats_cache_ttl = Duration::from_millis(cfg.api.stats_cache_ms);
            state.metrics = Arc::new(crate::api::ApiMetrics::new(Some(&telemetry.registry))?);
            let server = crate::api::start(addr, state)?;
            tracing::info!(address = %server.local_addr(), "API listener serving /api/v1 (see /api/v1/openapi.json)");
            Some(server)
        }
        (None, Some(_)) => {
            tracing::warn!(
                "the API is enabled but there is no [store] for it to read: API off (add [store] path = \"linesight.db\", or set [api] enabled = false)"
            );
            None
        }
        _ => None,
    };
    let (store_tx, store_rx) = crossbeam_channel::bounded(OUTPUT_QUEUE_DEPTH);
    let (archive_tx, archive_rx) = crossbeam_channel::bounded(archive::QUEUE_DEPTH);
    let options = RunOptions {
        max_frames: args.max_frames,
        outputs,
        store: store.is_some().then_some(store_tx),
        archive: archive.as_ref().map(|(_, rate)| (archive_tx, *rate)),
        telemetry: Some(Arc::clone(&telemetry)),
        line: line_wiring,
        inference_stall,
        output_fault,
        supervisor: Some(Arc::clone(&supervisor)),
    };
    let station = Station::build(&loaded, options)?;
    if let Some(cameras) = api_cameras {
        let _ = cameras.set(station.accounting());
    }
    let classes = station.package.manifest.task.classes();
    let store_handle = store
        .map(|store| {
            let m = &station.package.manifest;
            let ctx = StoreContext {
                station: cfg.station.name.clone(),
                cameras: cfg.cameras.iter().map(|c| c.id.clone()).collect(),
                classes: classes.clone(),
                model_name: m.name.clone(),
                model_sha256: station.package.sha256.clone(),
                rules_json: serde_json::to_string(&cfg.rules).unwrap_or_else(|_| "[]".into()),
            };
            let accounting = station.accounting();
            supervisor.spawn("store".into(), "store", move || store.run(store_rx, ctx, accounting))
        })
        .transpose()?;
    let archive_handle = archive
        .map(|(archive, _)| {
            let accounting = station.accounting();
            supervisor.spawn("archive".into(), "archive", move || archive.run(archive_rx, accounting))
        })
        .transpose()?;
    let sink_handle = sink_thread
        .map(|(rx, station, cameras, writer)| {
            let ctx = RecordContext { station, cameras, classes };
            supervisor.spawn_fallible("results".into(), "results", move || results::run(rx, ctx, writer))
        })
        .transpose()?;

    let stop = station.stop_handle();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while draining exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let accounting = station.accounting();
    tracing::info!(
        station = %cfg.station.name,
        cameras = cfg.cameras.len(),
        model = %station.package.manifest.name,
        "station ready"
    );
    let status = std::io::stderr().is_terminal().then(|| spawn_status_line(Arc::clone(&accounting)));
    let started = Instant::now();
    station.run();
    // The line acts on the parts still before their deadlines, then reports "not ready".
    if let Some(line) = line {
        line.finish();
    }
    if let Some((done, handle)) = status {
        done.store(true, Relaxed);
        let _ = handle.join();
    }
    // Supervised threads catch their own panics and errors (see `supervise`).
    for h in [sink_handle, store_handle, archive_handle].into_iter().flatten() {
        let _ = h.join();
    }
    // The pipeline has drained and the outputs are flushed: the listeners go last.
    if let Some(server) = api {
        server.shutdown();
    }
    if let Some(server) = admin {
        server.shutdown();
    }
    let snaps = accounting.snapshot();
    report(&snaps, &accounting, started.elapsed());
    if let Some(target) = &args.summary {
        let json = serde_json::json!({
            "elapsed_s": started.elapsed().as_secs_f64(),
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

fn synth(args: SynthArgs) -> Result<()> {
    let surface = args.surface.parse()?;
    let params = crate::synth::SynthParams {
        width: args.width,
        height: args.height,
        surface,
        defect_probability: args.defect_probability,
        seed: args.seed,
    };
    let summary = crate::synth::write_dataset(&args.out, args.count, &params)?;
    println!("wrote {} parts ({} defective) to {}", summary.parts, summary.defective, args.out.display());
    Ok(())
}

fn calibrate(args: CalibrateArgs) -> Result<()> {
    use crate::calibration::{TargetSpec, command};
    let spec = match (&args.target, &args.board, args.spacing_mm) {
        (Some(target), Some(board), Some(spacing)) => Some(TargetSpec::new(target.parse()?, board.parse()?, spacing)?),
        _ => None, // clap requires all three unless only the scale is set by hand
    };
    let opts = command::CalibrateOptions {
        images: args.images,
        spec,
        out: args.out,
        from: args.from,
        plane_image: args.plane_image,
        mm_per_px: args.mm_per_px,
        min_views: usize::from(args.min_views),
        drop_outliers: args.drop_outliers,
    };
    command::run(&opts, &mut std::io::stdout().lock())?;
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let opts = crate::eval::EvalOptions {
        model: args.model,
        dataset: args.dataset,
        config: args.config,
        threshold: args.threshold,
        target_escape_pct: args.target_escape,
        progress: std::io::stderr().is_terminal(),
    };
    let (report, results) = crate::eval::run(&opts)?;
    if let Some(path) = &args.csv {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create CSV file {}", path.display()))?,
        );
        crate::eval::report::write_csv(&results, &mut file)
            .and_then(|()| file.flush())
            .with_context(|| format!("writing CSV file {}", path.display()))?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    match args.json.as_deref() {
        Some("-") => println!("{json}"),
        Some(path) => {
            std::fs::write(path, json + "\n").with_context(|| format!("writing JSON report {path}"))?;
            print!("{}", report.table());
        }
        None => print!("{}", report.table()),
    }
    Ok(())
}
