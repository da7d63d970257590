//! Teach mode on first start (`[model.teach]`): a station whose model package does not exist yet
//! teaches it from good parts before it starts, then keeps it; every later start loads the cached
//! package like any other. The demo station uses this with parts rendered by its own synthetic
//! cameras, so `make run` shows teach mode without any data set.
//!
//! Two processes starting at once (tests, a restart loop) may both teach; each writes a private
//! folder and the first rename wins, the other keeps the winner's package.

use super::learn::{TeachOptions, teach};
use crate::config::{InputContrast, InputMode, LoadedConfig, ModelTeachConfig, Precision, SourceConfig, TeachScorer};
use crate::synth::{Generator, SynthParams};
use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};

/// Synthetic teach parts are rendered from this part number on; the camera counts from 0, so a
/// station never inspects a part it was taught on.
pub const SYNTHETIC_TEACH_FIRST_PART: u64 = 1 << 40;

/// Teach each recipe's package (`[model].package` without `[[recipe]]`s) whose teach settings
/// are set and which has no `model.toml` yet. Returns how many it taught.
pub fn ensure_taught(loaded: &LoadedConfig, progress: bool) -> Result<usize> {
    let mut taught = 0;
    for (index, recipe) in loaded.recipes().iter().enumerate() {
        let Some(t) = &recipe.teach else { continue };
        let cameras = teach_cameras(loaded, index);
        // A station without recipes keeps its model's old name; each recipe's is its own.
        let name = if loaded.config.recipes.is_empty() {
            format!("{}-taught", loaded.config.station.name)
        } else {
            format!("{}-{}", loaded.config.station.name, recipe.name)
        };
        if ensure_one(loaded, &recipe.package, t, &cameras, &name, progress)
            .with_context(|| format!("recipe {}", recipe.name))?
        {
            taught += 1;
        }
    }
    Ok(taught)
}

/// The cameras whose synthetic parts teach recipe `index`: those that start with it, or every
/// camera when none does.
pub fn teach_cameras(loaded: &LoadedConfig, index: usize) -> Vec<String> {
    let starting = loaded.starting_recipes();
    let cams = &loaded.config.cameras;
    let mine: Vec<String> =
        cams.iter().zip(&starting).filter(|(_, r)| usize::from(**r) == index).map(|(c, _)| c.id.clone()).collect();
    if mine.is_empty() { cams.iter().map(|c| c.id.clone()).collect() } else { mine }
}

fn ensure_one(
    loaded: &LoadedConfig,
    package: &Path,
    t: &ModelTeachConfig,
    cameras: &[String],
    name: &str,
    progress: bool,
) -> Result<bool> {
    let cfg = &loaded.config;
    let package = loaded.resolve(package);
    if package.join("model.toml").is_file() {
        tracing::info!(package = %package.display(), "taught model found; to teach again, delete the folder");
        return Ok(false);
    }
    let started = std::time::Instant::now();
    let staging = Staging::new(&package)?;
    let images = match (&t.images, t.synthetic_parts) {
        (Some(dir), _) => loaded.resolve(dir),
        (None, Some(parts)) => {
            render_good_parts(cfg, cameras, parts, &staging.0)?;
            staging.0.clone()
        }
        (None, None) => return Err(anyhow!("[model.teach] needs `images` or `synthetic_parts`")),
    };
    tracing::info!(package = %package.display(), images = %images.display(), "no taught model yet: teaching from good parts");
    let images_kind = if t.images.is_some() { Images::Real } else { Images::Synthetic };
    let mut opts = options(&images, &package, t, images_kind, loaded)?;
    opts.name = Some(name.to_string());
    opts.progress = progress;
    opts.keep_existing = true;
    let report = teach(&opts).with_context(|| format!("teaching {} on first start", package.display()))?;
    tracing::info!(
        package = %package.display(),
        images = report.info.images,
        bank_rows = report.info.bank_rows,
        threshold = report.threshold,
        seconds = started.elapsed().as_secs_f64(),
        "taught"
    );
    Ok(true)
}

/// Where a station's teach parts come from, which decides what its unset teach settings mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Images {
    /// Parts of the product (a folder, a camera, the archive): unset settings are chosen the way
    /// `linesight teach` chooses them (the grid and contrast by validation, the threshold at the
    /// stated overkill), so a station taught from its screen is as good as one taught by hand.
    Real,
    /// Parts rendered by the station's synthetic cameras (the demo): the fixed recipe they were
    /// made for (grid 16, raw contrast, mean + 3σ), one candidate, so the demo starts quickly.
    Synthetic,
}

/// A station's teach settings (`[model.teach]` / `[recipe.teach]`) as the options of a teach of
/// `images` into `out`: paths resolved against the config file's folder; `precision = "auto"`
/// teaches on INT8 only for a CPU station (whose CPU has VNNI-class instructions).
pub fn options(
    images: &Path,
    out: &Path,
    t: &ModelTeachConfig,
    kind: Images,
    loaded: &LoadedConfig,
) -> Result<TeachOptions> {
    let mut opts = TeachOptions::new(images, out, t.backbone_dir(loaded));
    // INT8 pays on the CPU only: a GPU station's `auto` teaches on the float backbone.
    let runs_on_cpu = loaded.config.model.provider == crate::config::Provider::Cpu;
    opts.precision = match t.precision {
        Precision::Auto if !runs_on_cpu => Precision::Fp32,
        chosen => chosen,
    };
    let pipeline = &loaded.config.pipeline;
    let input_mode = t.input_mode.or(pipeline.input_mode);
    opts.tile_overlap_px = pipeline.tile_overlap_px;
    opts.placed = match kind {
        Images::Real => t.scorer.map(|s| s == TeachScorer::Placed),
        Images::Synthetic => Some(t.scorer == Some(TeachScorer::Placed)),
    };
    opts.place_scale = match kind {
        Images::Real => t.place_scale,
        Images::Synthetic => Some(t.place_scale == Some(true)),
    };
    (opts.input_mode, opts.size, opts.grid_stride, opts.input_contrast, opts.threshold_sigmas) = match kind {
        Images::Real => (input_mode, t.size, t.grid_stride, t.input_contrast, t.threshold_sigmas),
        Images::Synthetic => (
            Some(input_mode.unwrap_or(InputMode::Tile)),
            Some(t.size.unwrap_or(crate::config::TEACH_TILE)),
            Some(t.grid_stride.unwrap_or(super::recipe::GRID)),
            Some(t.input_contrast.unwrap_or(InputContrast::Raw)),
            Some(t.threshold_sigmas.unwrap_or(SYNTHETIC_THRESHOLD_SIGMAS)),
        ),
    };
    if let Some(share) = t.max_overkill {
        opts.max_overkill = share;
    }
    opts.target_escape = t.target_escape;
    opts.defects = t.defects.as_deref().map(|d| loaded.resolve(d));
    if let Some(seconds) = t.time_budget_s {
        opts.time_budget_s = seconds;
    }
    opts.coreset_ratio = t.coreset_ratio;
    opts.max_bank_rows = t.max_bank_rows;
    opts.local_scale_k = t.local_scale_k;
    opts.whiten = t.whiten;
    (opts.blur_sigma_px, opts.top_fraction) = match kind {
        Images::Real => (t.blur_sigma_px, t.top_fraction),
        Images::Synthetic => (
            Some(t.blur_sigma_px.unwrap_or(super::post::DEFAULT.blur_sigma_px)),
            Some(t.top_fraction.unwrap_or(super::post::DEFAULT.top_fraction)),
        ),
    };
    opts.holdout_fraction = t.holdout_fraction;
    opts.seed = t.seed;
    Ok(opts)
}

/// The demo's threshold rule on synthetic parts: mean + 3σ of the held-out renders.
const SYNTHETIC_THRESHOLD_SIGMAS: f32 = 3.0;

/// Render `parts` good parts per synthetic camera among `cameras` into `dir` as PNG.
fn render_good_parts(cfg: &crate::config::StationConfig, cameras: &[String], parts: u32, dir: &Path) -> Result<()> {
    for cam in cfg.cameras.iter().filter(|c| cameras.contains(&c.id)) {
        let SourceConfig::Synthetic(s) = &cam.source else { continue };
        let surface = s.surface.parse().map_err(|e: crate::synth::SynthError| anyhow!("camera {}: {e}", cam.id))?;
        let params = SynthParams { width: s.width, height: s.height, surface, defect_probability: 0.0, seed: s.seed };
        let mut generator = Generator::new(params).map_err(|e| anyhow!("camera {}: {e}", cam.id))?;
        let n = (s.width * s.height) as usize;
        let (mut pixels, mut mask) = (vec![0u8; n], vec![0u8; n]);
        for i in 0..u64::from(parts) {
            generator.render(SYNTHETIC_TEACH_FIRST_PART + i, &mut pixels, &mut mask);
            let path = dir.join(format!("{}-{i:05}.png", cam.id));
            image::save_buffer_with_format(
                &path,
                &pixels,
                s.width,
                s.height,
                image::ExtendedColorType::L8,
                image::ImageFormat::Png,
            )
            .with_context(|| format!("writing teach part {}", path.display()))?;
        }
    }
    Ok(())
}

/// A private scratch folder next to the package for rendered parts; removed when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(package: &Path) -> Result<Self> {
        let parent = package.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let dir = parent.join(format!(".teach-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo config with its `[model.teach]` backbone in `dir/bb` and `extra` teach settings.
    fn demo_with(dir: &Path, extra: &str) -> Result<LoadedConfig, String> {
        std::fs::create_dir_all(dir.join("bb")).unwrap();
        std::fs::write(dir.join("bb/backbone.toml"), "").unwrap();
        let text = crate::config::DEMO_CONFIG.replacen(
            "backbone = \"models/backbone-lite0\"",
            &format!("backbone = \"bb\"\n{extra}"),
            1,
        );
        assert_ne!(text, crate::config::DEMO_CONFIG, "the demo config's teach backbone moved");
        crate::config::load_str(&text, "test", dir.to_path_buf()).map_err(|e| e.to_string())
    }

    #[test]
    fn station_teach_settings_reach_the_teach_options() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scratches")).unwrap();
        let settings = "max_overkill = 0.05\ntarget_escape = 0.02\ndefects = \"scratches\"\nprecision = \"int8\"\ntime_budget_s = 120";
        let loaded = demo_with(dir.path(), settings).unwrap();
        let t = loaded.config.model.teach.as_ref().unwrap();
        let opts = options(Path::new("good"), Path::new("out"), t, Images::Real, &loaded).unwrap();
        assert_eq!(opts.backbone, dir.path().join("bb"), "teach quantizes the float backbone itself");
        assert_eq!(opts.precision, Precision::Int8);
        assert_eq!(opts.max_overkill, 0.05);
        assert_eq!(opts.target_escape, Some(0.02));
        assert_eq!(opts.defects.as_deref(), Some(dir.path().join("scratches").as_path()));
        assert_eq!(opts.time_budget_s, 120.0);
        assert_eq!(opts.threshold_sigmas, None, "real parts: the threshold at the stated overkill or escape");
        assert_eq!(opts.placed, None, "what judges a patch is chosen by validation");

        let loaded = demo_with(dir.path(), "input_mode = \"resize\"\nscorer = \"placed\"").unwrap();
        let t = loaded.config.model.teach.as_ref().unwrap();
        let opts = options(Path::new("good"), Path::new("out"), t, Images::Real, &loaded).unwrap();
        assert_eq!((opts.input_mode, opts.placed), (Some(InputMode::Resize), Some(true)));
        assert_eq!(opts.place_scale, None, "unset: decided by the places' structure");

        let loaded = demo_with(dir.path(), "place_scale = false").unwrap();
        let t = loaded.config.model.teach.as_ref().unwrap();
        let opts = options(Path::new("good"), Path::new("out"), t, Images::Real, &loaded).unwrap();
        assert_eq!(opts.place_scale, Some(false));

        // Unset: `linesight teach`'s defaults.
        let loaded = demo_with(dir.path(), "").unwrap();
        let t = loaded.config.model.teach.as_ref().unwrap();
        let opts = options(Path::new("good"), Path::new("out"), t, Images::Real, &loaded).unwrap();
        let cli = TeachOptions::new("good", "out", dir.path().join("bb"));
        assert_eq!(opts.backbone, cli.backbone);
        assert_eq!(
            (opts.max_overkill, opts.target_escape, opts.time_budget_s),
            (cli.max_overkill, None, cli.time_budget_s)
        );
        assert_eq!(opts.defects, None);
        assert_eq!((opts.input_mode, opts.size), (None, None), "chosen by validation");
        assert_eq!(opts.precision, Precision::Auto, "the demo station runs on the CPU: INT8 where it pays");

        // A GPU station's `auto` teaches on the float backbone (GPUs run the float graph).
        let loaded = demo_with(dir.path(), "").unwrap();
        let mut gpu = loaded.clone();
        gpu.config.model.provider = crate::config::Provider::Cuda;
        let opts = options(Path::new("good"), Path::new("out"), t, Images::Real, &gpu).unwrap();
        assert_eq!(opts.precision, Precision::Fp32);

        // No backbone set: the one `linesight teach` uses, found among the installed models
        // whatever folder the config is in; synthetic parts keep the demo's fixed tiles.
        let text = crate::config::DEMO_CONFIG.replacen("backbone = \"models/backbone-lite0\"", "", 1);
        let loaded = crate::config::load_str(&text, "test", dir.path().to_path_buf()).unwrap();
        let t = loaded.config.model.teach.as_ref().unwrap();
        assert_eq!(t.backbone_dir(&loaded), crate::config::default_backbone());
        assert!(crate::config::default_backbone().ends_with("models/backbone-lite2"), "Lite2 is installed");
        let opts = options(Path::new("good"), Path::new("out"), t, Images::Synthetic, &loaded).unwrap();
        assert_eq!(opts.backbone, crate::config::default_backbone());
        assert_eq!((opts.input_mode, opts.size), (Some(InputMode::Tile), Some(crate::config::TEACH_TILE)));
    }

    #[test]
    fn bad_station_teach_settings_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for (setting, path, says) in [
            ("max_overkill = 1", "model.teach.max_overkill", "0.01 for 1%"),
            ("target_escape = -0.1", "model.teach.target_escape", "0.05 for 5%"),
            ("target_escape = nan", "model.teach.target_escape", "0.05 for 5%"),
            ("defects = \"nowhere\"", "model.teach.defects", "no such folder"),
            ("time_budget_s = 0", "model.teach.time_budget_s", "e.g. 600"),
            ("time_budget_s = inf", "model.teach.time_budget_s", "e.g. 600"),
            // The demo teaches synthetic parts, which are tiled.
            ("scorer = \"placed\"", "model.teach.scorer", "input_mode = \"resize\""),
        ] {
            let e = demo_with(dir.path(), setting).expect_err(setting);
            assert!(e.contains(path) && e.contains(says), "{setting}: {e}");
        }
        let e = demo_with(dir.path(), "precision = \"fp16\"").expect_err("fp16");
        assert!(e.contains("precision") && e.contains("auto") && e.contains("fp32") && e.contains("int8"), "{e}");
    }
}
