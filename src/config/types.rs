//! The config file's shape; units are in field names. The structs accept unknown keys so that the
//! loader can report every one at once (see `unknown`): loading through [`super::load_str`] refuses them.

use serde::Deserialize;
use std::path::PathBuf;

/// A whole station: `[station]`, `[[camera]]`, `[model]`, `[pipeline]`, `[[rule]]`, `[outputs]`,
/// `[admin]`, `[store]`, `[api]`, `[archive]`, `[line]`, `[fleet]`.
#[derive(Clone, Debug, Deserialize)]
pub struct StationConfig {
    #[serde(default)]
    pub station: StationSection,
    /// One entry per camera; at least one.
    #[serde(default, rename = "camera")]
    pub cameras: Vec<CameraConfig>,
    pub model: ModelConfig,
    /// Named recipes the station switches between at run time (see [`super::recipe`]); absent:
    /// one recipe, `default`, of `[model]` and `[[rule]]`.
    #[serde(default, rename = "recipe")]
    pub recipes: Vec<super::recipe::RecipeConfig>,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Decision rules per defect class; a class without a rule makes a part NG on any defect.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub outputs: OutputsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// The SQLite result store; absent = no store.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    #[serde(default)]
    pub api: ApiConfig,
    /// The image archive (NG and fail-safe frames, a sample of OK ones); absent = no archive.
    #[serde(default)]
    pub archive: Option<ArchiveConfig>,
    /// The line output (PLC, MQTT, webhook, command): reject timing and fail-safe; absent = off.
    #[serde(default)]
    pub line: Option<super::line::LineConfig>,
    /// The link to the plant's hub (records out, recipes in); absent = a station on its own.
    #[serde(default)]
    pub fleet: Option<super::fleet::FleetConfig>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct StationSection {
    /// Station name, shown in logs and results.
    #[serde(default = "default_station_name")]
    pub name: String,
}

impl Default for StationSection {
    fn default() -> Self {
        Self { name: default_station_name() }
    }
}

fn default_station_name() -> String {
    "linesight".into()
}

/// What to do when a camera's frame queue is full.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Backpressure {
    /// Drop the oldest queued frame (counted) so the freshest is inspected: live cameras.
    DropOldest,
    /// Wait for room: replayed files, where no frame may be lost.
    Block,
}

impl Backpressure {
    pub fn as_str(self) -> &'static str {
        match self {
            Backpressure::DropOldest => "drop_oldest",
            Backpressure::Block => "block",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct CameraConfig {
    /// Unique camera id (letters, digits, `-`, `_`), used in results and metrics.
    pub id: String,
    pub source: SourceConfig,
    /// Frames per second to capture at; `0` = as fast as the source gives them.
    #[serde(default)]
    pub fps: f64,
    /// Queue full policy; default `drop_oldest` for live sources, `block` for replayed files.
    #[serde(default)]
    pub backpressure: Option<Backpressure>,
    /// Frames that may wait between capture and preprocessing.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
    /// No frame for this long marks the camera down and reopens it.
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// First reconnect delay; doubles after each failed attempt up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Longest a camera may take to open (a network stream with no sender never does): past it
    /// the camera is marked down with the reason and retried with backoff, while the others run.
    #[serde(default = "default_open_timeout_ms")]
    pub open_timeout_ms: u64,
    /// Frames older than this when they arrive (by the source's own capture timestamp: a stalled
    /// stream delivering its backlog) are dropped as `stale`, never inspected as fresh parts.
    /// Default: twice `stall_timeout_ms`.
    #[serde(default)]
    pub max_frame_age_ms: Option<u64>,
    /// Regions of interest `[x, y, width, height]` in pixels; defects outside every region are
    /// ignored. Empty = the whole frame.
    #[serde(default)]
    pub roi_px: Vec<[u32; 4]>,
    /// Calibration file written by `linesight calibrate` (OpenCV FileStorage YAML), relative to
    /// this config file: frames are undistorted with it, and its working-plane scale, if it has
    /// one, gives defect sizes in mm.
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    /// Undistort frames with the calibration (default true); off = use only its scale.
    #[serde(default = "yes")]
    pub undistort: bool,
    /// Millimetres per pixel on the inspected surface, set by hand; overrides the calibration's.
    #[serde(default)]
    pub mm_per_px: Option<f64>,
    /// `free` (default): capture at `fps`; `line`: capture one frame per PLC trigger (the
    /// trigger counter of `[line.modbus]`), stamped with the PLC's acquisition id as part id.
    #[serde(default)]
    pub trigger: CameraTrigger,
}

/// When a camera captures.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CameraTrigger {
    /// Free-running at the camera's `fps`.
    #[default]
    Free,
    /// One frame per trigger from the line (PLC).
    Line,
}

fn yes() -> bool {
    true
}

fn default_queue_depth() -> usize {
    4
}
fn default_stall_timeout_ms() -> u64 {
    3000
}
fn default_open_timeout_ms() -> u64 {
    5000
}
fn default_reconnect_initial_ms() -> u64 {
    200
}
fn default_reconnect_max_ms() -> u64 {
    10_000
}

/// Where a camera's frames come from. `kind` selects the variant.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    Synthetic(SyntheticSourceConfig),
    Folder(FolderSourceConfig),
    Opencv(OpencvSourceConfig),
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Synthetic(_) => "synthetic",
            SourceConfig::Folder(_) => "folder",
            SourceConfig::Opencv(_) => "opencv",
        }
    }
}

/// Procedurally generated parts with known defects (demo, tests, benchmarks).
#[derive(Clone, Debug, Deserialize)]
pub struct SyntheticSourceConfig {
    #[serde(default = "default_synth_size")]
    pub width: u32,
    #[serde(default = "default_synth_size")]
    pub height: u32,
    /// `brushed_metal` or `ceramic_tile`.
    #[serde(default = "default_surface")]
    pub surface: String,
    /// Probability that a part has defects, 0..=1.
    #[serde(default = "default_defect_probability")]
    pub defect_probability: f64,
    #[serde(default)]
    pub seed: u64,
}

fn default_synth_size() -> u32 {
    480
}
fn default_surface() -> String {
    "brushed_metal".into()
}
fn default_defect_probability() -> f64 {
    0.3
}

/// Replay image files from a folder.
#[derive(Clone, Debug, Deserialize)]
pub struct FolderSourceConfig {
    pub path: PathBuf,
    /// Start again after the last file instead of ending.
    #[serde(default)]
    pub looping: bool,
}

/// An OpenCV `VideoCapture`: device index, `/dev/videoN`, video file, RTSP/HTTP URL or GStreamer
/// pipeline (a string containing `!`).
#[derive(Clone, Debug, Deserialize)]
pub struct OpencvSourceConfig {
    pub uri: String,
    /// Read timeout passed to backends that support one.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
}

fn default_read_timeout_ms() -> u64 {
    5000
}

/// Where inference runs.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
    Tensorrt,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ModelConfig {
    /// Model package folder holding `model.onnx` and `model.toml` (with `[[recipe]]`s, each
    /// recipe names its own and this stays unset).
    #[serde(default)]
    pub package: PathBuf,
    /// Execution provider; falls back to CPU (with a log line) when unavailable.
    #[serde(default)]
    pub provider: Provider,
    /// Inference worker threads, each with its own ONNX Runtime session. Unset: on the CPU one
    /// per core (at most 8, or one per camera when there are more); on a GPU one per camera up
    /// to the number of cores (`threads.rs`).
    #[serde(default = "one")]
    pub workers: usize,
    /// Threads ONNX Runtime may use inside one session run. Unset: the cores shared out among the
    /// workers.
    #[serde(default = "one")]
    pub intra_threads: usize,
    /// Whether ONNX Runtime's intra-op threads spin-wait for the next run instead of sleeping.
    /// Spinning saves a wake-up per run but burns the cores that decoding, resizing and
    /// post-processing share with inference; off by default (matters with `intra_threads` > 1).
    #[serde(default)]
    pub intra_spinning: bool,
    /// Pin each single-threaded CPU worker to a core of its own (of those the process may use;
    /// only when there are at least as many). Left to the scheduler, two busy workers sometimes
    /// share a core for milliseconds while the other core runs the decode, which is most of the
    /// latency's tail; pinned, a worker only waits for the pipeline's short stages. Ignored for
    /// workers with several intra-op threads (ONNX Runtime places those) and on a GPU.
    #[serde(default = "yes")]
    pub pin_workers: bool,
    /// GPU index for CUDA / TensorRT.
    #[serde(default)]
    pub device_id: i32,
    /// Teach mode on first start: when `package` holds no model yet, teach it from good parts
    /// (see [`ModelTeachConfig`]) and keep it there; later starts load it like any package.
    #[serde(default)]
    pub teach: Option<ModelTeachConfig>,
}

/// Teach's `max_overkill` and `target_escape` are shares below this: `1` would mean 100%, the usual
/// slip for 1%.
pub const MAX_TEACH_SHARE: f64 = 0.5;

/// Teach's two shares, checked alike wherever they are given (a config, a teach request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeachShare {
    MaxOverkill,
    TargetEscape,
}

impl TeachShare {
    pub fn key(self) -> &'static str {
        match self {
            Self::MaxOverkill => "max_overkill",
            Self::TargetEscape => "target_escape",
        }
    }

    /// `None` when `share` is usable, else what it must be instead.
    pub fn problem(self, share: f64) -> Option<&'static str> {
        if (0.0..MAX_TEACH_SHARE).contains(&share) {
            return None;
        }
        Some(match self {
            Self::MaxOverkill => "must be a share of good parts in [0, 0.5), e.g. 0.01 for 1%",
            Self::TargetEscape => "must be a share of defects in [0, 0.5), e.g. 0.05 for 5%",
        })
    }
}

/// Input sides (square, or the side of a square of the same area) teach's search tries when no
/// size is given: research on MTD found 160–224 best for whole-part inputs, 256 is the old default.
pub const TEACH_SIZES: [u32; 3] = [160, 224, 256];
/// Tile side when teach tiles large frames and no size is given.
pub const TEACH_TILE: u32 = 256;

/// `[model.teach]`: where the good parts come from and the few teach settings a station needs;
/// everything else is `linesight teach`'s defaults.
#[derive(Clone, Debug, Deserialize)]
pub struct ModelTeachConfig {
    /// A folder of good images to teach from.
    #[serde(default)]
    pub images: Option<PathBuf>,
    /// Or: this many good parts rendered by each synthetic camera of the station (same surface,
    /// seed and size as the camera, from part numbers the camera never shows).
    #[serde(default)]
    pub synthetic_parts: Option<u32>,
    /// Backbone package folder. Unset: the one `linesight teach` uses, Lite2 among the installed
    /// models (Lite0 where Lite2 is not installed).
    #[serde(default)]
    pub backbone: Option<PathBuf>,
    /// `tile` or `resize`; unset: `[pipeline].input_mode`, else chosen by teach's validation like
    /// `linesight teach` does (synthetic parts: tile).
    #[serde(default)]
    pub input_mode: Option<InputMode>,
    /// Model input side in pixels (a multiple of 16). Unset: chosen by teach's validation like
    /// `linesight teach` does (synthetic parts: 256).
    #[serde(default)]
    pub size: Option<u32>,
    /// Patch grid stride: 16 or 8 (finer maps for defects of a few pixels). Unset: chosen by
    /// teach's validation like `linesight teach` does (synthetic parts: 16).
    #[serde(default)]
    pub grid_stride: Option<usize>,
    /// Contrast handling: `standardised` (each input shifted and scaled to a standard mean and
    /// spread) or `raw`. Unset: chosen by teach's validation like `linesight teach` does
    /// (synthetic parts: raw, the recipe the demo's rendered surfaces were taught with).
    #[serde(default)]
    pub input_contrast: Option<InputContrast>,
    /// What judges a patch: `bank` (the nearest good patch anywhere) or `placed` (a Gaussian of
    /// the good parts' patches at the same place; whole-part inputs only). Unset: the bank, or
    /// the places' Gaussians when labelled `defects` show they are better, as `linesight teach`
    /// chooses (synthetic parts: the bank).
    #[serde(default)]
    pub scorer: Option<TeachScorer>,
    /// Each place's patch scores divided by what good parts score there (`true`), or every place
    /// alike (`false`). Unset: when the places differ enough, as `linesight teach` decides
    /// (synthetic parts: every place alike).
    #[serde(default)]
    pub place_scale: Option<bool>,
    #[serde(default = "default_coreset_ratio")]
    pub coreset_ratio: f64,
    /// Most bank rows (the run-time cost); unset: the scoring budget's.
    #[serde(default)]
    pub max_bank_rows: Option<usize>,
    /// Local-density normalisation: neighbours per bank row (0 = plain distances).
    #[serde(default = "default_local_scale_k")]
    pub local_scale_k: usize,
    /// PCA whitening power: 1 = full (the default), 0 = plain PCA.
    #[serde(default = "default_whiten")]
    pub whiten: f64,
    /// Gaussian smoothing of the anomaly map, pixels (smaller keeps small defects sharp).
    /// Unset: 16, or a sharper map when labelled `defects` show it is better, as `linesight
    /// teach` chooses (synthetic parts: 16).
    #[serde(default)]
    pub blur_sigma_px: Option<f32>,
    /// Image score = mean of this fraction of the map's highest pixels. Unset: 0.05, or 0.01
    /// when labelled `defects` show it is better, as `linesight teach` chooses (synthetic
    /// parts: 0.05).
    #[serde(default)]
    pub top_fraction: Option<f32>,
    /// Threshold = mean + K·std of the held-out good parts' scores. Unset: the threshold
    /// `linesight teach` sets by default (at most 1% of the held-out good parts over it;
    /// synthetic parts: K = 3).
    #[serde(default)]
    pub threshold_sigmas: Option<f32>,
    /// The threshold when `threshold_sigmas` is unset: the share of good parts it may reject
    /// (0.01 = 1%), read from the held-out good parts. Unset: `linesight teach`'s 1%.
    #[serde(default)]
    pub max_overkill: Option<f64>,
    /// Or the highest threshold that lets at most this share of the defects through (0.05 =
    /// 5%): the labelled ones in `defects` (at least 3), else synthetic ones painted on the
    /// held-out goods. Overrides `max_overkill`.
    #[serde(default)]
    pub target_escape: Option<f64>,
    /// A folder of labelled defective parts of the product (masks optional in
    /// `masks/<stem>_mask.png`): they help choose the recipe and the threshold and are never
    /// taught as good.
    #[serde(default)]
    pub defects: Option<PathBuf>,
    /// `auto` (the default): INT8 on a CPU station whose CPU has VNNI-class instructions, FP32
    /// otherwise; `int8`: the backbone quantized by teach, calibrated on these good parts; `fp32`.
    #[serde(default)]
    pub precision: Precision,
    /// Seconds the whole teach may take, recipe search included (candidates that would not fit
    /// are skipped). Unset: `linesight teach`'s 600.
    #[serde(default)]
    pub time_budget_s: Option<f64>,
    /// Fraction of the good parts held out to calibrate the threshold.
    #[serde(default = "default_holdout_fraction")]
    pub holdout_fraction: f64,
    #[serde(default)]
    pub seed: u64,
}

impl Default for ModelTeachConfig {
    /// Every key at its default, as an empty `[model.teach]` table reads.
    fn default() -> Self {
        toml::from_str("").expect("every [model.teach] key has a default")
    }
}

impl ModelTeachConfig {
    /// The backbone package folder: as set (relative to the config's folder), else the installed
    /// default.
    pub fn backbone_dir(&self, loaded: &super::LoadedConfig) -> PathBuf {
        self.backbone.as_deref().map_or_else(super::default_backbone, |b| loaded.resolve(b))
    }
}

fn default_holdout_fraction() -> f64 {
    0.15
}

fn default_coreset_ratio() -> f64 {
    0.25
}
fn default_local_scale_k() -> usize {
    3
}
fn default_whiten() -> f64 {
    1.0
}

fn one() -> usize {
    1
}

/// The backbone's numeric precision a model is taught on: FP32, or INT8 (teach quantizes the
/// backbone, `teach::int8`), or whichever pays on this machine (see `teach::precision`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Auto,
    Fp32,
    Int8,
}

/// What judges a taught model's patches (`teach::placed`).
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TeachScorer {
    /// Distance to the nearest patch of the goods' bank, wherever it came from.
    Bank,
    /// Mahalanobis distance to a Gaussian of the goods' patches at the same grid cell.
    Placed,
}

/// What a taught model's graph does to each input's contrast before the backbone.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputContrast {
    /// Pixels as they come.
    #[default]
    Raw,
    /// Each input (all channels together) shifted and scaled to a fixed mean and spread, so
    /// parts imaged brighter, darker or flatter than the teach images look alike to the
    /// backbone; what stands out is local (a defect), not the exposure of the whole part.
    Standardised,
}

impl InputContrast {
    pub fn name(self) -> &'static str {
        match self {
            InputContrast::Raw => "raw",
            InputContrast::Standardised => "standardised",
        }
    }
}

/// How frames are fed to the model.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputMode {
    /// Cut frames into overlapping model-size tiles (frames smaller than the model are padded).
    #[default]
    Tile,
    /// Squash the whole frame to the model size.
    Resize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PipelineConfig {
    /// Unset: what the model package says (`[input].mode`, taught models record theirs), else tile.
    #[serde(default)]
    pub input_mode: Option<InputMode>,
    /// Overlap between neighbouring tiles, in pixels.
    #[serde(default = "default_tile_overlap_px")]
    pub tile_overlap_px: u32,
    /// Largest batch sent to the model. Batches are padded up to a power of two (≤ this) so the
    /// runtime only ever sees a handful of shapes and its memory stays flat. Unset: 1 for
    /// single-threaded CPU workers (the default on the CPU), else 4 (`threads.rs`).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The file left `max_batch` unset (`threads.rs` then chose it): a model with a fixed batch
    /// size gathers that many tiles instead of padding smaller batches up to it.
    #[serde(skip)]
    pub max_batch_is_default: bool,
    /// How long a worker waits for more tiles before running a partial batch.
    #[serde(default = "default_max_wait_us")]
    pub max_wait_us: u64,
    /// Preprocessing threads.
    #[serde(default = "one")]
    pub preprocess_workers: usize,
    /// Frames that may be in flight between preprocessing and verdict.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// A verdict later than this after capture is replaced by FAILSAFE (timeout).
    #[serde(default = "default_verdict_deadline_ms")]
    pub verdict_deadline_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            input_mode: None,
            tile_overlap_px: default_tile_overlap_px(),
            max_batch: default_max_batch(),
            max_batch_is_default: false,
            max_wait_us: default_max_wait_us(),
            preprocess_workers: 1,
            max_in_flight: default_max_in_flight(),
            verdict_deadline_ms: default_verdict_deadline_ms(),
        }
    }
}

fn default_tile_overlap_px() -> u32 {
    32
}
fn default_max_batch() -> usize {
    4
}
fn default_max_wait_us() -> u64 {
    2000
}
fn default_max_in_flight() -> usize {
    16
}
fn default_verdict_deadline_ms() -> u64 {
    1000
}

/// A decision rule for one defect class: a defect counts when it reaches every minimum (score,
/// area in px and mm²) and is either at least `min_length_mm` long or wider than `max_width_mm`;
/// the part is NG when more than `max_count` defects of the class count. Rules in mm need the
/// camera's scale (`camera.mm_per_px`, or a calibration file with one).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct RuleConfig {
    /// Class label from the model manifest, or `*` for every class without its own rule.
    pub class: String,
    #[serde(default)]
    pub min_score: f32,
    #[serde(default)]
    pub min_area_px: f32,
    /// Smallest area that counts, in mm² on the inspected surface.
    #[serde(default)]
    pub min_area_mm2: Option<f32>,
    /// Shortest defect that counts, in mm along its own axis (not its bounding box).
    #[serde(default)]
    pub min_length_mm: Option<f32>,
    /// Widest defect tolerated below `min_length_mm`: a wider one counts however short it is.
    #[serde(default)]
    pub max_width_mm: Option<f32>,
    /// Defects of this class tolerated on one part (0 = any defect rejects).
    #[serde(default)]
    pub max_count: u32,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct OutputsConfig {
    /// JSON-lines results: a file path, `-` for stdout; absent = no results stream.
    #[serde(default)]
    pub results: Option<String>,
}

/// The admin listener: `/metrics` (Prometheus), `/healthz` and `/readyz`.
#[derive(Clone, Debug, Deserialize)]
pub struct AdminConfig {
    /// Serve the admin listener (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address and port to listen on, `IP:PORT`; port 0 picks a free one (logged at start).
    /// Only this machine can reach the default; use `0.0.0.0:9464` to serve every interface.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { enabled: true, listen: default_admin_listen() }
    }
}

/// The admin listener's default address: loopback, the port Prometheus exporters of this kind use.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

fn default_admin_listen() -> String {
    DEFAULT_ADMIN_LISTEN.into()
}

/// The SQLite result store: every inspection and its defects, for the HTTP API.
#[derive(Clone, Debug, Deserialize)]
pub struct StoreConfig {
    /// Database file, relative to the config file; created (with its schema) when missing.
    pub path: PathBuf,
    /// Delete inspections captured more than this many days ago (0 = keep forever).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Keep at most this many inspections, deleting the oldest first (0 = no limit).
    #[serde(default = "default_max_inspections")]
    pub max_inspections: u64,
}

fn default_retention_days() -> u32 {
    90
}
fn default_max_inspections() -> u64 {
    10_000_000
}

/// The image archive: every NG and fail-safe frame, and a deterministic share of OK frames, as
/// PNG files (plain and with the defects outlined), pruned by total size and age.
#[derive(Clone, Debug, Deserialize)]
pub struct ArchiveConfig {
    /// Folder of the image files, relative to the config file; created when missing.
    pub dir: PathBuf,
    /// Share of OK frames archived for audits, 0..=1, chosen by sequence number (deterministic).
    #[serde(default = "default_ok_sample_rate")]
    pub ok_sample_rate: f64,
    /// Keep at most this many bytes of images, deleting the oldest first (0 = no limit).
    #[serde(default = "default_archive_max_bytes")]
    pub max_bytes: u64,
    /// Delete images older than this many days (0 = keep forever).
    #[serde(default = "default_archive_max_age_days")]
    pub max_age_days: u32,
}

fn default_ok_sample_rate() -> f64 {
    0.01
}
fn default_archive_max_bytes() -> u64 {
    10 << 30
}
fn default_archive_max_age_days() -> u32 {
    30
}

/// What an API token may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// Reads.
    Viewer,
    /// Review labels (and recipe switches).
    Operator,
    /// Thresholds, models, teach jobs.
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Viewer => "viewer",
            ApiRole::Operator => "operator",
            ApiRole::Admin => "admin",
        }
    }
}

/// One `[[api.tokens]]` entry.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiToken {
    pub name: String,
    pub role: ApiRole,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
}

/// The HTTP API of defect statistics (`/api/v1/...`), served when a `[store]` is configured.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiConfig {
    /// Serve the API (default true; it needs a `[store]`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address and port to listen on, `IP:PORT`; port 0 picks a free one (logged at start).
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// When set, every request must carry a known token, `Authorization: Bearer <token>` (else
    /// 401); this one is an `admin` token. Prefer `[[api.tokens]]`, which hold only a hash.
    #[serde(default)]
    pub token: Option<String>,
    /// The tokens that may write (and read): each a name (recorded with what it changes), a role
    /// and the SHA-256 of the token in hex (`printf %s TOKEN | sha256sum`).
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Offset of local time from UTC, in minutes, for day and shift buckets; absent = this
    /// machine's offset at the time asked about.
    #[serde(default)]
    pub utc_offset_minutes: Option<i32>,
    /// How long a `/api/v1/stats` answer is reused for the same query, in ms (0 = never): the
    /// longest an answer can lag the store. Identical queries arriving together share one.
    #[serde(default = "default_stats_cache_ms")]
    pub stats_cache_ms: u64,
    /// The plant's Grafana dashboard for this station (`http(s)://…`), linked from the web UI's
    /// health page.
    #[serde(default)]
    pub grafana_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_api_listen(),
            token: None,
            tokens: Vec::new(),
            utc_offset_minutes: None,
            stats_cache_ms: default_stats_cache_ms(),
            grafana_url: None,
        }
    }
}

/// The API's default address: loopback only.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8080";

fn default_api_listen() -> String {
    DEFAULT_API_LISTEN.into()
}

fn default_stats_cache_ms() -> u64 {
    1000
}
