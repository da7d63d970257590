//! Teach mode on first start (`[model.teach]`): a station whose model package does not exist yet
//! teaches it from good parts before it starts, then keeps it; every later start loads the cached
//! package like any other. The demo station uses this with parts rendered by its own synthetic
//! cameras, so `make run` shows teach mode without any data set.
//!
//! Two processes starting at once (tests, a restart loop) may both teach; each writes a private
//! folder and the first rename wins, the other keeps the winner's package.

use super::learn::{TeachOptions, teach};
use crate::config::{InputContrast, InputMode, LoadedConfig, ModelTeachConfig, SourceConfig};
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
    let mut opts = TeachOptions::new(&images, &package, loaded.resolve(&t.backbone));
    let images_kind = if t.images.is_some() { Images::Real } else { Images::Synthetic };
    apply(&mut opts, t, images_kind, cfg.pipeline.input_mode, cfg.pipeline.tile_overlap_px);
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

/// A station's teach settings (`[model.teach]` / `[recipe.teach]`) as `teach` options.
pub fn apply(
    opts: &mut TeachOptions,
    t: &ModelTeachConfig,
    images: Images,
    pipeline_mode: Option<InputMode>,
    overlap: u32,
) {
    opts.input_mode = Some(t.input_mode.or(pipeline_mode).unwrap_or(InputMode::Tile));
    opts.size = Some(t.size);
    opts.tile_overlap_px = overlap;
    (opts.grid_stride, opts.input_contrast, opts.threshold_sigmas) = match images {
        Images::Real => (t.grid_stride, t.input_contrast, t.threshold_sigmas),
        Images::Synthetic => (
            Some(t.grid_stride.unwrap_or(super::recipe::GRID)),
            Some(t.input_contrast.unwrap_or(InputContrast::Raw)),
            Some(t.threshold_sigmas.unwrap_or(SYNTHETIC_THRESHOLD_SIGMAS)),
        ),
    };
    opts.coreset_ratio = t.coreset_ratio;
    opts.max_bank_rows = t.max_bank_rows;
    opts.local_scale_k = t.local_scale_k;
    opts.whiten = t.whiten;
    opts.blur_sigma_px = t.blur_sigma_px;
    opts.top_fraction = t.top_fraction;
    opts.holdout_fraction = t.holdout_fraction;
    opts.seed = t.seed;
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
