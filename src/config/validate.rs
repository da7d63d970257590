//! Semantic checks of a parsed config. Every problem is collected, not just the first, so one
//! `linesight check` run shows everything to fix.

use super::timing::{self, MAX_DURATION_MS};
use super::{LoadedConfig, SourceConfig, TeachShare};
use crate::calibration::{Calibration, CalibrationError, CameraGeometry};
use std::collections::HashSet;
use std::fmt;

/// One invalid setting: where it is, what it holds, and what is wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    /// Field path, e.g. `camera[1].source.defect_probability`.
    pub path: String,
    /// The offending value as written.
    pub value: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

/// All the problems found in one config.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {} = {}: {}", e.path, e.value, e.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

struct Collector(Vec<ConfigError>);

impl Collector {
    fn check(&mut self, ok: bool, path: impl Into<String>, value: impl fmt::Debug, problem: &str) {
        if !ok {
            self.0.push(ConfigError { path: path.into(), value: format!("{value:?}"), problem: problem.to_string() });
        }
    }
}

const SURFACES: [&str; 2] = ["brushed_metal", "ceramic_tile"];
/// Largest image side a region of interest may reach, in pixels.
const MAX_IMAGE_SIDE: u64 = 65_536;
/// Largest model input side teach mode may build.
const MAX_TEACH_SIZE: u32 = 2048;
/// Largest overlap between tiles (the exact limit, the model input's side, is checked at load).
const MAX_TILE_OVERLAP_PX: u32 = 4096;
const MAX_BANK_ROWS: usize = 100_000_000;
const MAX_LOCAL_SCALE_K: usize = 100;
const MAX_THRESHOLD_SIGMAS: f32 = 100.0;
/// Longest teach time budget (a day).
const MAX_TEACH_SECONDS: f64 = 86_400.0;
const MAX_INSPECTIONS: u64 = 1_000_000_000_000;
const MAX_MM_PER_PX: f64 = 1000.0;

/// Check everything; on success, return each camera's geometry (calibration file loaded and
/// checked, scale resolved).
pub(super) fn validate(loaded: &LoadedConfig) -> Result<Vec<CameraGeometry>, ConfigErrors> {
    let cfg = &loaded.config;
    let mut c = Collector(Vec::new());

    c.check(!cfg.cameras.is_empty(), "camera", "[]", "a station needs at least one [[camera]]");
    let mut geometry = Vec::with_capacity(cfg.cameras.len());
    let mut ids = HashSet::new();
    for (i, cam) in cfg.cameras.iter().enumerate() {
        let p = format!("camera[{i}]");
        let id_ok = !cam.id.is_empty()
            && cam.id.len() <= 64
            && cam.id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        c.check(id_ok, format!("{p}.id"), &cam.id, "use 1-64 letters, digits, '-' or '_'");
        c.check(ids.insert(cam.id.as_str()), format!("{p}.id"), &cam.id, "camera ids must be unique");
        c.check(
            cam.fps == 0.0 || timing::checked_frame_period(cam.fps).is_some(),
            format!("{p}.fps"),
            cam.fps,
            "must be 0 (as fast as the source) or 0.000278..=10000 frames per second (at least one frame an hour)",
        );
        c.check((1..=1024).contains(&cam.queue_depth), format!("{p}.queue_depth"), cam.queue_depth, "must be 1..=1024");
        c.check(
            (100..=MAX_DURATION_MS).contains(&cam.stall_timeout_ms),
            format!("{p}.stall_timeout_ms"),
            cam.stall_timeout_ms,
            "must be 100..=3600000 ms (1 hour)",
        );
        c.check(
            (100..=MAX_DURATION_MS).contains(&cam.open_timeout_ms),
            format!("{p}.open_timeout_ms"),
            cam.open_timeout_ms,
            "must be 100..=3600000 ms (1 hour)",
        );
        if let Some(age) = cam.max_frame_age_ms {
            c.check(
                (1..=MAX_DURATION_MS).contains(&age),
                format!("{p}.max_frame_age_ms"),
                age,
                "must be 1..=3600000 ms (1 hour); leave it out for twice stall_timeout_ms",
            );
        }
        c.check(
            (1..=MAX_DURATION_MS).contains(&cam.reconnect_initial_ms),
            format!("{p}.reconnect_initial_ms"),
            cam.reconnect_initial_ms,
            "must be 1..=3600000 ms (1 hour)",
        );
        c.check(
            (cam.reconnect_initial_ms..=MAX_DURATION_MS).contains(&cam.reconnect_max_ms),
            format!("{p}.reconnect_max_ms"),
            cam.reconnect_max_ms,
            "must be at least reconnect_initial_ms and at most 3600000 ms (1 hour)",
        );
        for (r, roi) in cam.roi_px.iter().enumerate() {
            c.check(roi[2] > 0 && roi[3] > 0, format!("{p}.roi_px[{r}]"), roi, "width and height must be > 0");
            let ends = [u64::from(roi[0]) + u64::from(roi[2]), u64::from(roi[1]) + u64::from(roi[3])];
            c.check(
                ends.iter().all(|e| *e <= MAX_IMAGE_SIDE),
                format!("{p}.roi_px[{r}]"),
                roi,
                "must lie within 65536 × 65536 pixels (x + width and y + height at most 65536)",
            );
        }
        geometry.push(camera_geometry(loaded, i, &mut c));
        match &cam.source {
            SourceConfig::Synthetic(s) => {
                let sp = format!("{p}.source");
                c.check((16..=8192).contains(&s.width), format!("{sp}.width"), s.width, "must be 16..=8192");
                c.check((16..=8192).contains(&s.height), format!("{sp}.height"), s.height, "must be 16..=8192");
                c.check(
                    SURFACES.contains(&s.surface.as_str()),
                    format!("{sp}.surface"),
                    &s.surface,
                    "must be one of brushed_metal, ceramic_tile",
                );
                c.check(
                    (0.0..=1.0).contains(&s.defect_probability),
                    format!("{sp}.defect_probability"),
                    s.defect_probability,
                    "must be between 0 and 1",
                );
            }
            SourceConfig::Folder(f) => {
                let dir = loaded.resolve(&f.path);
                c.check(
                    dir.is_dir(),
                    format!("{p}.source.path"),
                    &f.path,
                    "folder not found (relative paths start at the config file's folder)",
                );
            }
            SourceConfig::Opencv(o) => {
                c.check(
                    !o.uri.trim().is_empty(),
                    format!("{p}.source.uri"),
                    &o.uri,
                    "give a device index, /dev/videoN, file, URL or GStreamer pipeline",
                );
                c.check(
                    o.read_timeout_ms <= MAX_DURATION_MS,
                    format!("{p}.source.read_timeout_ms"),
                    o.read_timeout_ms,
                    "must be 0..=3600000 ms (1 hour; 0 = the backend's default)",
                );
            }
        }
    }

    let m = &cfg.model;
    let recipes = loaded.recipes();
    if cfg.recipes.is_empty() {
        check_package(&mut c, loaded, &m.package, m.teach.as_ref(), "model");
    } else {
        check_recipes(&mut c, loaded, &recipes);
    }
    c.check((1..=64).contains(&m.workers), "model.workers", m.workers, "must be 1..=64");
    c.check((1..=256).contains(&m.intra_threads), "model.intra_threads", m.intra_threads, "must be 1..=256");
    c.check((0..=255).contains(&m.device_id), "model.device_id", m.device_id, "must be a GPU index, 0..=255");

    let pl = &cfg.pipeline;
    c.check(
        (1..=crate::pipeline::messages::MAX_BATCH).contains(&pl.max_batch),
        "pipeline.max_batch",
        pl.max_batch,
        "must be 1..=64",
    );
    c.check(pl.max_wait_us <= 1_000_000, "pipeline.max_wait_us", pl.max_wait_us, "must be <= 1000000 (1 s)");
    c.check(
        (1..=16).contains(&pl.preprocess_workers),
        "pipeline.preprocess_workers",
        pl.preprocess_workers,
        "must be 1..=16",
    );
    c.check((1..=4096).contains(&pl.max_in_flight), "pipeline.max_in_flight", pl.max_in_flight, "must be 1..=4096");
    c.check(
        (1..=MAX_DURATION_MS).contains(&pl.verdict_deadline_ms),
        "pipeline.verdict_deadline_ms",
        pl.verdict_deadline_ms,
        "must be 1..=3600000 ms (1 hour)",
    );
    c.check(
        pl.tile_overlap_px <= MAX_TILE_OVERLAP_PX,
        "pipeline.tile_overlap_px",
        pl.tile_overlap_px,
        "must be 0..=4096 px (and smaller than the model input)",
    );

    check_rule_list(&cfg.rules, "rule", &cfg.cameras, &geometry, &mut c);
    for (i, r) in cfg.recipes.iter().enumerate() {
        if let Some(rules) = &r.rules {
            check_rule_list(rules, &format!("recipe[{i}].rule"), &cfg.cameras, &geometry, &mut c);
        }
    }

    c.check(
        cfg.admin.listen.parse::<std::net::SocketAddr>().is_ok(),
        "admin.listen",
        &cfg.admin.listen,
        "must be IP:PORT, e.g. \"127.0.0.1:9464\" (port 0 picks a free one)",
    );

    c.check(
        cfg.api.listen.parse::<std::net::SocketAddr>().is_ok(),
        "api.listen",
        &cfg.api.listen,
        "must be IP:PORT, e.g. \"127.0.0.1:8080\" (port 0 picks a free one)",
    );
    if let Some(token) = &cfg.api.token {
        c.check(token.len() >= 16, "api.token", "<hidden>", "use at least 16 characters (or remove it)");
    }
    for (i, t) in cfg.api.tokens.iter().enumerate() {
        c.check(
            t.sha256.len() == 64 && t.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            format!("api.tokens[{i}].sha256"),
            &t.sha256,
            "must be the token's SHA-256 in hex, 64 digits (printf %s TOKEN | sha256sum)",
        );
        c.check(!t.name.trim().is_empty(), format!("api.tokens[{i}].name"), &t.name, "name the token (who holds it)");
    }
    if let Some(url) = &cfg.api.grafana_url {
        c.check(
            url.starts_with("http://") || url.starts_with("https://"),
            "api.grafana_url",
            url,
            "give the dashboard's http:// or https:// address",
        );
    }
    if let Some(offset) = cfg.api.utc_offset_minutes {
        c.check((-14 * 60..=14 * 60).contains(&offset), "api.utc_offset_minutes", offset, "must be -840..=840");
    }
    c.check(
        cfg.api.stats_cache_ms <= 60_000,
        "api.stats_cache_ms",
        cfg.api.stats_cache_ms,
        "must be 0..=60000 (ms; 0 turns the stats cache off)",
    );
    if let Some(store) = &cfg.store {
        c.check(!store.path.as_os_str().is_empty(), "store.path", &store.path, "give a database file name");
        c.check(store.retention_days <= 36_500, "store.retention_days", store.retention_days, "must be 0..=36500");
        // The store's retention query takes the limit as a signed SQLite integer.
        c.check(
            store.max_inspections <= MAX_INSPECTIONS,
            "store.max_inspections",
            store.max_inspections,
            "must be 0..=1000000000000 (0 = no limit)",
        );
    }
    if let Some(a) = &cfg.archive {
        c.check(!a.dir.as_os_str().is_empty(), "archive.dir", &a.dir, "give a folder for the images");
        c.check((0.0..=1.0).contains(&a.ok_sample_rate), "archive.ok_sample_rate", a.ok_sample_rate, "must be 0..=1");
        c.check(a.max_age_days <= 36_500, "archive.max_age_days", a.max_age_days, "must be 0..=36500");
    }

    let triggered = cfg.cameras.iter().filter(|cam| cam.trigger == super::CameraTrigger::Line).count();
    match &cfg.line {
        Some(line) => c.0.extend(super::line::validate(line, triggered)),
        None => c.check(
            triggered == 0,
            "camera.trigger",
            "line",
            "a camera triggered by the line needs [line] with [line.modbus] (the PLC's trigger)",
        ),
    }
    if let Some(fleet) = &cfg.fleet {
        let recipes: Vec<String> = loaded.recipes().into_iter().map(|r| r.name).collect();
        c.0.extend(super::fleet::validate(fleet, &cfg.station.name, &recipes, cfg.store.is_some()));
    }
    if c.0.is_empty() { Ok(geometry) } else { Err(ConfigErrors(c.0)) }
}

/// Camera `i`'s calibration file and scale. A file that cannot be used is an error at
/// `camera[i].calibration` with the reason.
fn camera_geometry(loaded: &LoadedConfig, i: usize, c: &mut Collector) -> CameraGeometry {
    let cam = &loaded.config.cameras[i];
    let p = format!("camera[{i}]");
    let mut geo = CameraGeometry::default();
    if let Some(path) = &cam.calibration {
        match Calibration::load(&loaded.resolve(path)) {
            Ok(cal) => {
                if let SourceConfig::Synthetic(s) = &cam.source {
                    c.check(
                        (s.width, s.height) == (cal.image_width, cal.image_height),
                        format!("{p}.calibration"),
                        path,
                        &format!(
                            "made for {}×{} images, but the source gives {}×{}: calibrate at the camera's resolution",
                            cal.image_width, cal.image_height, s.width, s.height
                        ),
                    );
                }
                geo.undistort = cam.undistort;
                if let Some(scale) = &cal.scale {
                    geo.mm_per_px = Some(scale.mm_per_px);
                    geo.scale_origin = Some(format!("calibration file ({})", scale.source.as_str()));
                }
                geo.calibration = Some(cal);
            }
            Err(e) => {
                let problem = match e {
                    CalibrationError::File { reason, .. } => reason,
                    other => other.to_string(),
                };
                c.0.push(ConfigError { path: format!("{p}.calibration"), value: format!("{path:?}"), problem });
            }
        }
    }
    if let Some(mm) = cam.mm_per_px {
        c.check(
            mm > 0.0 && mm <= MAX_MM_PER_PX,
            format!("{p}.mm_per_px"),
            mm,
            "must be a positive number of mm per pixel, at most 1000",
        );
        geo.mm_per_px = Some(mm);
        geo.scale_origin = Some("config (mm_per_px)".into());
    }
    geo
}

/// Decision rules at `prefix` (`rule`, `recipe[i].rule`).
fn check_rule_list(
    rules: &[super::RuleConfig],
    prefix: &str,
    cameras: &[super::CameraConfig],
    geometry: &[CameraGeometry],
    c: &mut Collector,
) {
    let mut classes = HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let p = format!("{prefix}[{i}]");
        check_mm_rule(r, &p, cameras, geometry, c);
        c.check(!r.class.is_empty(), format!("{p}.class"), &r.class, "name a class from the model manifest, or '*'");
        c.check(classes.insert(r.class.as_str()), format!("{p}.class"), &r.class, "one rule per class");
        c.check((0.0..=1.0).contains(&r.min_score), format!("{p}.min_score"), r.min_score, "must be between 0 and 1");
        c.check(
            r.min_area_px.is_finite() && r.min_area_px >= 0.0,
            format!("{p}.min_area_px"),
            r.min_area_px,
            "must be >= 0",
        );
    }
}

/// Rules given while the station runs (`PATCH /api/v1/recipes/{name}`): the checks a config's
/// rules get, against the station's cameras and scales.
pub fn check_rules(loaded: &LoadedConfig, rules: &[super::RuleConfig]) -> Result<(), ConfigErrors> {
    let mut c = Collector(Vec::new());
    check_rule_list(rules, "rules", &loaded.config.cameras, &loaded.geometry, &mut c);
    if c.0.is_empty() { Ok(()) } else { Err(ConfigErrors(c.0)) }
}

/// A rule's criteria in mm: sane values, and a scale on every camera.
fn check_mm_rule(
    r: &super::RuleConfig,
    p: &str,
    cameras: &[super::CameraConfig],
    geometry: &[CameraGeometry],
    c: &mut Collector,
) {
    for (name, v) in [("min_area_mm2", r.min_area_mm2), ("min_length_mm", r.min_length_mm)] {
        if let Some(v) = v {
            c.check(v.is_finite() && v >= 0.0, format!("{p}.{name}"), v, "must be >= 0");
        }
    }
    if let Some(v) = r.max_width_mm {
        c.check(v.is_finite() && v > 0.0, format!("{p}.max_width_mm"), v, "must be > 0");
        c.check(
            r.min_length_mm.is_some(),
            format!("{p}.max_width_mm"),
            v,
            "only works with min_length_mm (a defect wider than max_width_mm counts even when shorter than min_length_mm)",
        );
    }
    let mm = [("min_area_mm2", r.min_area_mm2), ("min_length_mm", r.min_length_mm), ("max_width_mm", r.max_width_mm)];
    let Some((field, value)) = mm.into_iter().find_map(|(name, v)| v.map(|v| (name, v))) else { return };
    for (i, (cam, geo)) in cameras.iter().zip(geometry).enumerate() {
        if geo.mm_per_px.is_none() {
            c.0.push(ConfigError {
                path: format!("{p}.{field}"),
                value: format!("{value:?}"),
                problem: format!(
                    "camera {:?} has no millimetre scale: set camera[{i}].mm_per_px, or give camera[{i}].calibration a file with a scale (linesight calibrate --plane-image IMG or --mm-per-px X)",
                    cam.id
                ),
            });
        }
    }
}

/// A model package (and its teach-on-first-start settings) at `prefix` (`model`, `recipe[i]`):
/// it must exist, unless it is taught on first start from sources that do.
fn check_package(
    c: &mut Collector,
    loaded: &LoadedConfig,
    package_path: &std::path::Path,
    teach: Option<&super::ModelTeachConfig>,
    prefix: &str,
) {
    let cfg = &loaded.config;
    let package = loaded.resolve(package_path);
    match teach {
        // Taught on first start: the package may not exist yet, its sources must.
        Some(t) => {
            let has_synthetic = cfg.cameras.iter().any(|cam| matches!(cam.source, SourceConfig::Synthetic(_)));
            c.check(
                t.images.is_some() != t.synthetic_parts.is_some(),
                format!("{prefix}.teach"),
                "images / synthetic_parts",
                "give exactly one of `images` (a folder of good images) or `synthetic_parts` (good parts per synthetic camera)",
            );
            if let Some(images) = &t.images {
                c.check(
                    loaded.resolve(images).is_dir(),
                    format!("{prefix}.teach.images"),
                    images.display(),
                    "no such folder",
                );
            }
            if let Some(n) = t.synthetic_parts {
                c.check((2..=10_000).contains(&n), format!("{prefix}.teach.synthetic_parts"), n, "must be 2..=10000");
                c.check(
                    has_synthetic,
                    format!("{prefix}.teach.synthetic_parts"),
                    n,
                    "the station has no synthetic camera to render parts",
                );
            }
            let backbone = t.backbone_dir(loaded);
            c.check(
                backbone.join("backbone.toml").is_file(),
                format!("{prefix}.teach.backbone"),
                backbone.display(),
                if t.backbone.is_some() {
                    "no backbone.toml in this folder (a backbone package, e.g. the installed models/backbone-lite2)"
                } else {
                    "the installed backbone is missing (reinstall linesight, or set backbone to a backbone package folder)"
                },
            );
            if let Some(size) = t.size {
                c.check(
                    (32..=MAX_TEACH_SIZE).contains(&size) && size.is_multiple_of(16),
                    format!("{prefix}.teach.size"),
                    size,
                    "must be a multiple of 16, 32..=2048",
                );
            }
            // Unset, the size is chosen among teach's candidates (tiles of TEACH_TILE, whole parts
            // of TEACH_SIZES; those too small for the blur are skipped) or, for synthetic parts,
            // tiles of TEACH_TILE: none is larger than TEACH_TILE.
            let tile = t.size.unwrap_or(super::TEACH_TILE);
            let teach_mode = t.input_mode.or(cfg.pipeline.input_mode).unwrap_or_default();
            c.check(
                teach_mode != super::InputMode::Tile || cfg.pipeline.tile_overlap_px < tile,
                "pipeline.tile_overlap_px",
                cfg.pipeline.tile_overlap_px,
                "must be smaller than model.teach.size, or 256 when it is unset (tiles overlap by less than their side)",
            );
            // Unset, real parts' input is chosen among whole-part and tiled recipes (placed
            // applies to the whole-part ones); synthetic parts are tiled.
            let chosen_mode = t.input_mode.or(cfg.pipeline.input_mode);
            let tiled =
                chosen_mode == Some(super::InputMode::Tile) || (chosen_mode.is_none() && t.synthetic_parts.is_some());
            c.check(
                t.scorer != Some(super::TeachScorer::Placed) || !tiled,
                format!("{prefix}.teach.scorer"),
                "placed",
                "judges each place of a whole part, and these parts are tiled (a tile can come from anywhere in \
                 the frame): set model.teach.input_mode = \"resize\", or scorer = \"bank\"",
            );
            if let Some(stride) = t.grid_stride {
                c.check(
                    matches!(stride, 8 | 16),
                    format!("{prefix}.teach.grid_stride"),
                    stride,
                    "must be 8 or 16 (the backbone's tap strides)",
                );
            }
            if let Some(rows) = t.max_bank_rows {
                c.check(
                    (1..=MAX_BANK_ROWS).contains(&rows),
                    format!("{prefix}.teach.max_bank_rows"),
                    rows,
                    "must be 1..=100000000 (leave it out for the scoring budget's size)",
                );
            }
            c.check(
                t.local_scale_k <= MAX_LOCAL_SCALE_K,
                format!("{prefix}.teach.local_scale_k"),
                t.local_scale_k,
                "must be 0..=100 neighbours (0 = plain distances)",
            );
            c.check(
                (0.0..=1.0).contains(&t.whiten),
                format!("{prefix}.teach.whiten"),
                t.whiten,
                "must be in [0, 1] (1 = full PCA whitening, 0 = plain PCA)",
            );
            c.check(
                t.coreset_ratio > 0.0 && t.coreset_ratio <= 1.0,
                format!("{prefix}.teach.coreset_ratio"),
                t.coreset_ratio,
                "must be in (0, 1], e.g. 0.01",
            );
            if let Some(sigma) = t.blur_sigma_px {
                c.check(
                    sigma > 0.0 && sigma < tile as f32 / 8.0,
                    format!("{prefix}.teach.blur_sigma_px"),
                    sigma,
                    "must be > 0 and under size / 8, or 32 when size is unset (the blur kernel reaches 4 sigma)",
                );
            }
            if let Some(share) = t.top_fraction {
                c.check(
                    share > 0.0 && share <= 1.0,
                    format!("{prefix}.teach.top_fraction"),
                    share,
                    "must be in (0, 1], e.g. 0.05",
                );
            }
            if let Some(sigmas) = t.threshold_sigmas {
                c.check(
                    (0.0..=MAX_THRESHOLD_SIGMAS).contains(&sigmas),
                    format!("{prefix}.teach.threshold_sigmas"),
                    sigmas,
                    "must be 0..=100, e.g. 3 (a huge threshold would pass every part)",
                );
            }
            c.check(
                t.holdout_fraction > 0.0 && t.holdout_fraction < 1.0,
                format!("{prefix}.teach.holdout_fraction"),
                t.holdout_fraction,
                "must be in (0, 1), e.g. 0.15",
            );
            for (kind, value) in
                [(TeachShare::MaxOverkill, t.max_overkill), (TeachShare::TargetEscape, t.target_escape)]
            {
                if let Some(share) = value {
                    let problem = kind.problem(share);
                    c.check(
                        problem.is_none(),
                        format!("{prefix}.teach.{}", kind.key()),
                        share,
                        problem.unwrap_or_default(),
                    );
                }
            }
            if let Some(defects) = &t.defects {
                c.check(
                    loaded.resolve(defects).is_dir(),
                    format!("{prefix}.teach.defects"),
                    defects.display(),
                    "no such folder (labelled defective images of the product)",
                );
            }
            if let Some(seconds) = t.time_budget_s {
                c.check(
                    seconds > 0.0 && seconds <= MAX_TEACH_SECONDS,
                    format!("{prefix}.teach.time_budget_s"),
                    seconds,
                    "must be > 0 and at most 86400 seconds (a day), e.g. 600",
                );
            }
        }
        None => c.check(
            package.join("model.toml").is_file(),
            format!("{prefix}.package"),
            package_path.display(),
            "no model.toml in this folder (relative paths start at the config file's folder)",
        ),
    }
}

/// `[[recipe]]`s: named uniquely, each package checked, cameras and regions naming real
/// cameras, each camera starting with one recipe at most; `[model]` then holds only run-time
/// settings.
fn check_recipes(c: &mut Collector, loaded: &LoadedConfig, recipes: &[super::RecipeConfig]) {
    let cfg = &loaded.config;
    c.check(
        cfg.model.package.as_os_str().is_empty() && cfg.model.teach.is_none(),
        "model.package",
        cfg.model.package.display(),
        "with [[recipe]]s, each recipe names its package (and [recipe.teach]): remove it from [model]",
    );
    let camera_ids: HashSet<&str> = cfg.cameras.iter().map(|c| c.id.as_str()).collect();
    let mut names = HashSet::new();
    let mut starting: HashSet<&str> = HashSet::new();
    for (i, r) in recipes.iter().enumerate() {
        let p = format!("recipe[{i}]");
        c.check(super::recipe::valid_name(&r.name), format!("{p}.name"), &r.name, "1 to 64 letters, digits, - and _");
        c.check(names.insert(r.name.as_str()), format!("{p}.name"), &r.name, "another recipe has this name");
        check_package(c, loaded, &r.package, r.teach.as_ref(), &p);
        if let Some(t) = r.threshold {
            c.check(
                t.is_finite(),
                format!("{p}.threshold"),
                t,
                "must be a finite number (an anomaly model's image-score threshold)",
            );
        }
        for cam in &r.cameras {
            c.check(camera_ids.contains(cam.as_str()), format!("{p}.cameras"), cam, "no camera with this id");
            c.check(
                starting.insert(cam.as_str()),
                format!("{p}.cameras"),
                cam,
                "this camera already starts with another recipe",
            );
        }
        for (cam, rois) in &r.roi_px {
            c.check(camera_ids.contains(cam.as_str()), format!("{p}.roi_px"), cam, "no camera with this id");
            for (k, roi) in rois.iter().enumerate() {
                c.check(
                    roi[2] > 0 && roi[3] > 0,
                    format!("{p}.roi_px.{cam}[{k}]"),
                    roi,
                    "width and height must be > 0",
                );
            }
        }
    }
}
