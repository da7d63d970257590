//! The command line: the contract users and scripts rely on (see README).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "linesight", version, about = "Open-source visual inspection station")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a station (no --config: the built-in demo station).
    Run(RunArgs),
    /// Validate a config, load and check its model, open its cameras, and exit.
    Check(CheckArgs),
    /// Write synthetic parts (images + ground-truth masks + labels.jsonl).
    Synth(SynthArgs),
    /// Calibrate a camera from views of a target: intrinsics, distortion, and optionally the
    /// millimetres per pixel of the working plane; writes an OpenCV FileStorage YAML.
    Calibrate(CalibrateArgs),
    /// Measure a model on a labelled data set (MVTec AD layout) through the real pipeline:
    /// image and pixel AUROC, escape and overkill rates, confusion matrix.
    Eval(EvalArgs),
    /// Learn an anomaly model from good parts only (PatchCore-style: backbone features, a
    /// coreset memory bank, a threshold calibrated on held-out good images); writes a model
    /// package of task `anomaly` that `run`, `check` and `eval` load.
    Teach(Box<TeachArgs>),
    /// Write the parts operators reviewed (labelled good or defect, with an archived image) in
    /// the MVTec AD layout, for `eval --dataset OUT/test` and `teach --defects OUT/test/<class>`.
    ExportReviewed(ExportReviewedArgs),
    /// Run the plant's hub: every station's records from NATS JetStream into PostgreSQL, the
    /// plant API across stations (stats, inspections, parts, stations), metrics (docs/FLEET.md).
    Hub(HubArgs),
    /// Publish a model package as a product's recipe: stations making the product fetch it,
    /// verify its sha256 and run it (as a shadow or live, per their [fleet] recipe_policy).
    PublishRecipe(PublishRecipeArgs),
}

#[derive(Debug, Args)]
pub struct HubArgs {
    /// The hub's config: [nats] servers, [postgres] url, [hub], [api] (see deploy/hub.toml).
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct PublishRecipeArgs {
    /// The hub's config (its [nats] section says where to publish).
    #[arg(long)]
    pub config: PathBuf,
    /// The product the recipe is for (stations map products to their recipes in [fleet] products).
    #[arg(long)]
    pub product: String,
    /// The model package folder (model.onnx + model.toml), checked before it is published.
    #[arg(long, value_name = "DIR")]
    pub package: PathBuf,
    /// The image-score threshold to run it at where stations activate it [default: the package's].
    #[arg(long)]
    pub threshold: Option<f32>,
    /// A JSON file with the decision rules to run it with where stations activate it: a list of
    /// `[[rule]]` entries, as `PATCH /api/v1/recipes/{name}` takes them [default: each station's].
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportReviewedArgs {
    /// The station config: its [store] and [archive] hold the reviews and the images.
    #[arg(long)]
    pub config: PathBuf,
    /// Only the parts this recipe judged (`default` for a station without recipes).
    #[arg(long)]
    pub recipe: String,
    /// Output folder (created; must be empty if it exists).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct TeachArgs {
    /// Folder of good images (png, jpg, bmp, tif; at least 8, a few hundred for a robust model).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Output model package folder (model.onnx + model.toml); replaced if it exists.
    #[arg(long, value_name = "MODEL_DIR")]
    pub out: PathBuf,
    /// Backbone package (backbone.toml + model.onnx) [default: models/backbone-lite2 if present,
    /// else models/backbone-lite0].
    #[arg(long, value_name = "DIR")]
    pub backbone: Option<PathBuf>,
    /// The backbone's precision: `auto` (INT8 on CPUs with VNNI-class instructions, where it runs
    /// about twice as fast, else FP32), `int8` (teach quantizes the backbone, calibrated on these
    /// good images), or `fp32`. See README "Performance".
    #[arg(long, value_name = "auto|fp32|int8", default_value = "auto")]
    pub precision: String,
    /// How images become model inputs, as the station will feed frames: `resize` squashes each
    /// image to the model input (parts that fill the frame); `tile` cuts overlapping SIZE×SIZE
    /// tiles (large frames, small defects) [default: chosen by validation from the images' size
    /// and aspect ratio].
    #[arg(long, value_name = "resize|tile")]
    pub input_mode: Option<String>,
    /// Model input height and width in pixels (a multiple of 16) [default: chosen by validation
    /// among 160, 224 and 256, with inputs of the images' own aspect ratio for elongated images].
    #[arg(long)]
    pub size: Option<u32>,
    /// Pixels per scored patch: 16 (the stride-8 tap pooled onto the stride-16 grid: 4× fewer
    /// patches to score than 8, so a 4× larger bank for the same run-time cost) or 8 (finer
    /// maps, for defects of a few pixels) [default: 16, and 8 tried on the winning input recipe].
    #[arg(long, value_name = "8|16")]
    pub grid_stride: Option<usize>,
    /// What each model input's contrast goes through before the backbone: `standardised` (shifted
    /// and scaled to one mean and spread, so parts imaged brighter, darker or flatter look alike
    /// and what stands out is local) or `raw` (pixels as they come: for products whose whole-part
    /// brightness is itself a defect) [default: chosen by validation, standardised first and raw
    /// tried on the winning input recipe].
    #[arg(long, value_name = "standardised|raw")]
    pub contrast: Option<String>,
    /// How each patch is judged: `bank` (its distance to the nearest patch of any good part,
    /// anywhere) or `placed` (against a Gaussian of the good parts' patches at the same place:
    /// for parts that sit in the same place in every frame; whole-part inputs only) [default:
    /// chosen by validation, the bank first and placed tried on the winning input recipe].
    #[arg(long, value_name = "bank|placed")]
    pub scorer: Option<String>,
    /// Divide each place's patch scores by what the held-out good parts typically score there:
    /// `on`, `off`, or `auto` (when the places differ enough, as on parts fixtured in the frame;
    /// whole-part inputs only).
    #[arg(long, value_name = "auto|on|off", default_value = "auto")]
    pub place_scale: String,
    /// Overlap between tiles in `tile` mode, pixels.
    #[arg(long, default_value_t = 32)]
    pub tile_overlap: u32,
    /// Fraction of all teach patches kept in the memory bank by greedy coreset selection (up to
    /// --max-bank-rows).
    #[arg(long, default_value_t = 0.25)]
    pub coreset_ratio: f64,
    /// Most bank rows, which bound the run-time cost of scoring [default: the backbone's scoring
    /// budget in multiply-adds per input pixel: Lite2 2,048 (8,192 rows on the stride-16 grid,
    /// 2,048 on stride 8), Lite0 1,536 (6,144 and 1,536)].
    #[arg(long, value_name = "N")]
    pub max_bank_rows: Option<usize>,
    /// Divide each patch's nearest-neighbour distance by that bank row's mean distance to its K
    /// nearest other rows (local density; 0 = plain distances).
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub local_scale: usize,
    /// Dimensions patch features are projected to (PCA) before the coreset and the search.
    #[arg(long, default_value_t = 64)]
    pub pca_dims: usize,
    /// PCA whitening: each component divided by its standard deviation to this power, so
    /// distances weigh every direction of good-part variation alike (1 = full whitening, the
    /// more accurate on MTD: image AUROC 0.981 vs 0.969 plain; 0 = plain PCA).
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub whiten: f64,
    /// Fraction of the images held out (seeded) to calibrate the threshold.
    #[arg(long, default_value_t = 0.15)]
    pub holdout: f64,
    /// Threshold = mean + K·std of the held-out good images' scores (the rule before
    /// --max-overkill; overrides it and --target-escape).
    #[arg(long, value_name = "K")]
    pub threshold_sigmas: Option<f32>,
    /// Expected overkill: the threshold is the (100 − PCT)th percentile of the held-out good
    /// images' scores (scored by a model taught without them); teach prints how many held-out
    /// goods it rejects and the 95% confidence bound on the overkill.
    #[arg(long, value_name = "PCT", default_value_t = 1.0)]
    pub max_overkill: f64,
    /// The highest threshold that lets at most this percentage of the defects through: the
    /// labelled ones (--defects, at least 3), else the synthetic ones.
    #[arg(long, value_name = "PCT")]
    pub target_escape: Option<f64>,
    /// Folder of labelled defective images (any number; 5–50 is typical; masks optional in
    /// DIR/masks/<stem>_mask.png): they help choose the recipe and the threshold, and are never
    /// taught as good.
    #[arg(long, value_name = "DIR")]
    pub defects: Option<PathBuf>,
    /// The distance correction learned from the labelled defects (mixed supervision, with at
    /// least 3 of them): `auto` uses it when it beats the plain distance leave-one-defect-out,
    /// `off` never tries it, `always` uses it whatever the leave-one-out says (to measure it).
    #[arg(long, value_name = "auto|off|always", default_value = "auto")]
    pub head: String,
    /// Seconds the whole teach may take, recipe search included: candidate recipes that would
    /// not fit are skipped (and named).
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub time_budget: f64,
    /// Gaussian smoothing of the anomaly map, pixels [default: chosen by validation: 16, or 4
    /// for a sharper map].
    #[arg(long)]
    pub blur_sigma: Option<f32>,
    /// Image score = mean of this fraction of the anomaly map's highest pixels [default: chosen
    /// by validation: 0.05, or 0.01].
    #[arg(long)]
    pub top_fraction: Option<f32>,
    /// Seed of the split, the PCA sample and the coreset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model package folder (model.onnx + model.toml).
    #[arg(long, value_name = "MODEL_DIR")]
    pub model: PathBuf,
    /// Data set in the MVTec AD layout: DIR/good/* and DIR/<defect>/* images; masks (optional) in
    /// <parent of DIR>/ground_truth/<defect>/<stem>_mask.png.
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// Write the report as JSON to PATH (`-` = stdout, instead of the table).
    #[arg(long, value_name = "PATH|-")]
    pub json: Option<String>,
    /// Write one CSV line per image to PATH (file, class, label, score, verdict, decision).
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Station config whose [[rule]]s, [pipeline] and [model] settings (not its package) apply;
    /// without it there are no rules, so any defect the model reports rejects.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Operating point: the highest score threshold whose escape rate is at most PCT percent.
    #[arg(long, value_name = "PCT", conflicts_with = "threshold")]
    pub target_escape: Option<f64>,
    /// Operating point: reject images scoring at or above X (default: the pipeline's verdicts).
    #[arg(long, value_name = "X")]
    pub threshold: Option<f32>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Station config file (TOML). Without it, the demo station runs.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop each camera after N frames, then drain and exit.
    #[arg(long, value_name = "N")]
    pub max_frames: Option<u64>,
    /// Write one JSON line per inspection to PATH (`-` = stdout); overrides [outputs].results.
    #[arg(long, value_name = "PATH|-")]
    pub results: Option<String>,
    /// Print a final JSON summary of the frame accounting to PATH (`-` = stdout).
    #[arg(long, value_name = "PATH|-")]
    pub summary: Option<String>,
    /// Serve /metrics, /healthz and /readyz on IP:PORT (port 0 = a free one, logged), or `off`;
    /// overrides [admin].
    #[arg(long, value_name = "ADDR|off")]
    pub admin_listen: Option<String>,
    /// Serve the HTTP API (/api/v1/...) on IP:PORT (port 0 = a free one, logged), or `off`;
    /// overrides [api]. Needs a [store].
    #[arg(long, value_name = "ADDR|off")]
    pub api_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of parts.
    #[arg(long)]
    pub count: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// brushed_metal or ceramic_tile.
    #[arg(long, default_value = "brushed_metal")]
    pub surface: String,
    #[arg(long, default_value_t = 480)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Probability that a part has defects, 0..=1.
    #[arg(long, default_value_t = 0.3)]
    pub defect_probability: f64,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Views of the target: a folder (every image in it) or a quoted glob such as 'views/left*.jpg'.
    #[arg(long, value_name = "DIR_OR_GLOB", required_unless_present = "from")]
    pub images: Option<String>,
    /// Target pattern (not needed with --from and --mm-per-px).
    #[arg(long, value_parser = ["chessboard", "circles", "asymmetric-circles"], required_unless_present_all = ["from", "mm_per_px"])]
    pub target: Option<String>,
    /// Points per row × rows: inner corners for a chessboard (9x6 for 10 × 7 squares), circles for
    /// a grid (4x11 for OpenCV's asymmetric pattern).
    #[arg(long, value_name = "COLSxROWS", required_unless_present_all = ["from", "mm_per_px"])]
    pub board: Option<String>,
    /// Chessboard square side, or circle spacing (asymmetric grid: the distance between rows;
    /// circles in a row are twice that apart), in mm.
    #[arg(long, value_name = "S", required_unless_present_all = ["from", "mm_per_px"])]
    pub spacing_mm: Option<f64>,
    /// Calibration file to write (OpenCV FileStorage YAML).
    #[arg(long, value_name = "FILE.yaml")]
    pub out: PathBuf,
    /// One image of the target lying flat on the inspected surface: measure millimetres per pixel
    /// there (homography).
    #[arg(long, value_name = "IMAGE", conflicts_with = "mm_per_px")]
    pub plane_image: Option<PathBuf>,
    /// Set millimetres per pixel on the inspected surface by hand.
    #[arg(long, value_name = "X")]
    pub mm_per_px: Option<f64>,
    /// Keep the intrinsics of this calibration file and only measure or set the scale.
    #[arg(long, value_name = "FILE.yaml")]
    pub from: Option<PathBuf>,
    /// Fewest views with the target found that calibration accepts.
    #[arg(long, default_value_t = crate::calibration::solve::DEFAULT_MIN_VIEWS as u16, value_parser = clap::value_parser!(u16).range(3..))]
    pub min_views: u16,
    /// Recalibrate once without the views whose error stands out.
    #[arg(long)]
    pub drop_outliers: bool,
}
