//! The application edge: turns a parsed command line into work, and errors into one clear line.

use crate::cli::{CalibrateArgs, CheckArgs, Cli, Command, EvalArgs, ExportReviewedArgs, SynthArgs, TeachArgs};
use crate::config::{self, LoadedConfig};
use crate::teach::precision::{self, Precision};
use crate::topology::{RunOptions, Station};
use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Write};
use std::path::Path;

mod run;

use run::run;

pub fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
        Command::Synth(args) => synth(args),
        Command::Calibrate(args) => calibrate(args),
        Command::Eval(args) => eval(args),
        Command::Teach(args) => teach(*args),
        Command::ExportReviewed(args) => export_reviewed(args),
        Command::Hub(args) => crate::hub::run(&args.config),
        Command::PublishRecipe(args) => crate::hub::publish_recipe(
            &args.config,
            &args.product,
            &args.package,
            args.threshold,
            args.rules.as_deref(),
        ),
    }
}

fn teach(args: TeachArgs) -> Result<()> {
    let input_mode = match args.input_mode.as_deref() {
        None => None,
        Some("resize") => Some(config::InputMode::Resize),
        Some("tile") => Some(config::InputMode::Tile),
        Some(other) => bail!("--input-mode {other:?}: use `resize` (squash each image) or `tile` (overlapping tiles)"),
    };
    let input_contrast = match args.contrast.as_deref() {
        None => None,
        Some("standardised" | "standardized") => Some(config::InputContrast::Standardised),
        Some("raw") => Some(config::InputContrast::Raw),
        Some(other) => bail!(
            "--contrast {other:?}: use `standardised` (each image brought to one mean and spread) or `raw` (pixels as they come)"
        ),
    };
    let placed = match args.scorer.as_deref() {
        None => None,
        Some("bank") => Some(false),
        Some("placed") => Some(true),
        Some(other) => bail!(
            "--scorer {other:?}: use `bank` (nearest good patch anywhere) or `placed` (the good parts' patches at the same place)"
        ),
    };
    let place_scale = match args.place_scale.as_str() {
        "auto" => None,
        "on" => Some(true),
        "off" => Some(false),
        other => bail!(
            "--place-scale {other:?}: use `auto` (when the places differ enough), `on` or `off` (every place alike)"
        ),
    };
    let precision = Precision::parse(&args.precision).map_err(anyhow::Error::msg)?;
    let backbone = args.backbone.unwrap_or_else(config::default_backbone);
    if precision == Precision::Int8
        && let Some(w) = precision::int8_warning(precision::cpu_has_vnni())
    {
        eprintln!("warning: {w}");
    }
    let mut opts = crate::teach::TeachOptions::new(args.images, args.out, backbone);
    opts.input_mode = input_mode;
    opts.size = args.size;
    opts.grid_stride = args.grid_stride;
    opts.input_contrast = input_contrast;
    opts.placed = placed;
    opts.place_scale = place_scale;
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
    opts.precision = precision;
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

/// The station config (or the demo's), with its model taught first if `[model.teach]` asks and
/// the package does not exist yet.
fn load(config: Option<&Path>) -> Result<LoadedConfig> {
    let loaded = match config {
        Some(path) => config::load_file(path)?,
        None => config::demo(config::project_dir())?,
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
    let models: Vec<String> = station
        .recipes
        .iter()
        .map(|r| {
            let m = &r.package.manifest;
            let recipe = if station.recipes.len() > 1 { format!("recipe {}: ", r.name) } else { String::new() };
            format!("{recipe}model {} ({}, sha256 {})", m.name, m.task.kind(), &r.package.sha256[..12])
        })
        .collect();
    println!(
        "{}: OK — {} camera(s) deliver frames; {} loaded, I/O matches its manifest, warmed up",
        args.config.display(),
        loaded.config.cameras.len(),
        models.join("; "),
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

/// What `run` would teach on first start: each recipe with teach settings whose package holds
/// no model yet.
fn teach_pending(loaded: &LoadedConfig) -> Result<Option<String>> {
    let cfg = &loaded.config;
    let mut pending = Vec::new();
    for (index, recipe) in loaded.recipes().iter().enumerate() {
        let Some(t) = &recipe.teach else { continue };
        let package = loaded.resolve(&recipe.package);
        if package.join("model.toml").is_file() {
            continue;
        }
        let source = match (&t.images, t.synthetic_parts) {
            (Some(dir), _) => {
                let dir = loaded.resolve(dir);
                format!("{} images in {}", crate::teach::learn::list_images(&dir)?.files.len(), dir.display())
            }
            (None, parts) => {
                let mine = crate::teach::on_start::teach_cameras(loaded, index);
                let cameras = cfg
                    .cameras
                    .iter()
                    .filter(|c| mine.contains(&c.id) && matches!(c.source, config::SourceConfig::Synthetic(_)))
                    .count();
                format!("{} good parts from each of {cameras} synthetic camera(s)", parts.unwrap_or(0))
            }
        };
        pending.push(format!(
            "recipe {}'s model would be taught on first start into {} ({source})",
            recipe.name,
            package.display()
        ));
    }
    Ok((!pending.is_empty()).then(|| pending.join("; ")))
}

fn export_reviewed(args: ExportReviewedArgs) -> Result<()> {
    let loaded = config::load_file(&args.config)?;
    let cfg = &loaded.config;
    let Some(store) = &cfg.store else {
        bail!("{}: no [store]: the reviews live in the result store", args.config.display())
    };
    let Some(archive) = &cfg.archive else {
        bail!("{}: no [archive]: the reviewed parts' images live in the image archive", args.config.display())
    };
    if !loaded.recipes().iter().any(|r| r.name == args.recipe) {
        let names: Vec<String> = loaded.recipes().into_iter().map(|r| r.name).collect();
        bail!("--recipe {:?}: the station's recipes are {}", args.recipe, names.join(", "));
    }
    let summary = crate::api::export::export_reviewed(
        &loaded.resolve(&store.path),
        &loaded.resolve(&archive.dir),
        &args.recipe,
        &args.out,
    )?;
    println!("{summary}");
    Ok(())
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
