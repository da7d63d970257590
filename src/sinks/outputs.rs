//! The station's outputs, wired in one place.
//!
//! Every output has the same life: opened from the config when the station starts (before the
//! model loads, so a bad path, a locked database or a missing events file fails at once), given
//! its [`OutputPort`] to the pipeline, started once the station is built (when the model and the
//! counters are known), and finished after the pipeline has drained. A new output implements
//! [`Output`] and is added in [`Outputs::open`]; nothing else changes.

use super::archive::{self, Archive, ArchiveJob};
use super::line::LineOutput;
use super::results::{self, RecordContext};
use super::store::{Retention, Store, StoreContext};
use crate::config::LoadedConfig;
use crate::pipeline::messages::OUTPUT_QUEUE_DEPTH;
use crate::pipeline::{Accounting, Inspection, LineTap, OutputPort, RecordPort};
use crate::supervise::Supervisor;
use crate::telemetry::Telemetry;
use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What every output learns once the station is built.
pub struct StationInfo {
    pub station: String,
    /// Camera ids in config order (records carry the index).
    pub cameras: Vec<String>,
    /// The recipes by model slot (records carry the slot); models installed while the station
    /// runs are added before any record of theirs.
    pub recipes: Arc<crate::pipeline::Slots<super::RecipeContext>>,
    pub accounting: Arc<Accounting>,
}

/// One of the station's outputs.
pub trait Output {
    /// `line`, `archive`, `results`, `store`: for logs.
    fn name(&self) -> &'static str;
    /// Its end of the queue for the pipeline's assembler (taken once).
    fn port(&mut self) -> Box<dyn OutputPort>;
    /// Start its threads, now that the model and the counters are known.
    fn start(&mut self, info: &StationInfo, supervisor: &Arc<Supervisor>) -> Result<()>;
    /// After the pipeline has drained (its port is gone): write or act on what is queued, and
    /// stop.
    fn finish(self: Box<Self>);
    /// For an output the cameras meet (the line: each registers its parts with it at capture),
    /// one tap per camera in config order.
    fn taps(&mut self, _cameras: usize) -> Option<Vec<LineTap>> {
        None
    }
}

/// The station's outputs in the order the assembler offers each part to them: the line first
/// (the only one with a deadline), then the archive (it marks the record `archived` before the
/// results and the store see it), then the results stream and the store.
pub struct Outputs {
    list: Vec<Box<dyn Output>>,
    store_path: Option<PathBuf>,
    archive_dir: Option<PathBuf>,
}

impl Outputs {
    /// Open every output the config (and `results`, the `--results` flag's value if given)
    /// asks for. The line output starts at once: the PLC sees "not ready" (error code
    /// "starting") while the model loads; its job changes switch `recipes`.
    pub fn open(
        loaded: &LoadedConfig,
        results: Option<&str>,
        telemetry: &Arc<Telemetry>,
        supervisor: &Arc<Supervisor>,
        recipes: &Arc<crate::pipeline::RecipeSwitch>,
    ) -> Result<Self> {
        let cfg = &loaded.config;
        let mut outputs = Self { list: Vec::new(), store_path: None, archive_dir: None };
        if let Some(line_cfg) = &cfg.line {
            let line = LineOutput::start(
                line_cfg,
                loaded,
                Arc::clone(&telemetry.readiness),
                Some(&telemetry.registry),
                supervisor,
                Some(Arc::clone(recipes)),
            )?;
            outputs.list.push(Box::new(line));
        }
        if let Some(a) = &cfg.archive {
            let cameras = cfg.cameras.iter().map(|c| c.id.clone()).collect();
            let archive = Archive::open(&loaded.resolve(&a.dir), cameras, a.max_bytes, a.max_age_days)?;
            outputs.archive_dir = Some(archive.dir().to_path_buf());
            outputs.list.push(Box::new(ArchiveOutput::new(archive, a.ok_sample_rate)));
        }
        if let Some(target) = results {
            let writer: Box<dyn Write + Send> = if target == "-" {
                Box::new(std::io::stdout())
            } else {
                let path = loaded.resolve(Path::new(target));
                Box::new(std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| {
                    format!("cannot open results file {} (check the folder exists and is writable)", path.display())
                })?)
            };
            outputs.list.push(Box::new(ResultsOutput::new(writer)));
        }
        if let Some(s) = &cfg.store {
            let retention = Retention { days: s.retention_days, max_inspections: s.max_inspections };
            let store = Store::open(&loaded.resolve(&s.path), retention)?;
            outputs.store_path = Some(store.path().to_path_buf());
            outputs.list.push(Box::new(StoreOutput::new(store)));
        }
        Ok(outputs)
    }

    /// Per camera, in config order, where it registers its parts with the line output (empty
    /// without one).
    pub fn line_taps(&mut self, cameras: usize) -> Vec<LineTap> {
        self.list.iter_mut().find_map(|o| o.taps(cameras)).unwrap_or_default()
    }

    /// Every output's port, in the order the assembler offers parts to them.
    pub fn ports(&mut self) -> Vec<Box<dyn OutputPort>> {
        self.list.iter_mut().map(|o| o.port()).collect()
    }

    /// [`Self::ports`] with `shadow` (the shadow models' tap, `pipeline::shadow_tap`) right after
    /// the line: it copies a part's pixels before the archive may take them, and after the line
    /// has the part.
    pub fn ports_with_shadow(&mut self, shadow: Box<dyn OutputPort>) -> Vec<Box<dyn OutputPort>> {
        let mut ports = self.ports();
        let after_line = usize::from(self.list.first().is_some_and(|o| o.name() == "line"));
        ports.insert(after_line, shadow);
        ports
    }

    /// Start every output's threads.
    pub fn start(&mut self, info: &StationInfo, supervisor: &Arc<Supervisor>) -> Result<()> {
        for out in &mut self.list {
            out.start(info, supervisor).with_context(|| format!("starting the {} output", out.name()))?;
        }
        Ok(())
    }

    /// After the pipeline has drained: the line acts on the parts still before their deadlines
    /// first, then the others write what is queued.
    pub fn finish(self) {
        for out in self.list {
            out.finish();
        }
    }

    /// The result store's database, when there is one (the API reads it).
    pub fn store_path(&self) -> Option<&Path> {
        self.store_path.as_deref()
    }

    /// The image archive's folder, when there is one (the API serves its images).
    pub fn archive_dir(&self) -> Option<&Path> {
        self.archive_dir.as_deref()
    }
}

impl Output for LineOutput {
    fn name(&self) -> &'static str {
        "line"
    }

    fn port(&mut self) -> Box<dyn OutputPort> {
        // Its losses are parts that get the fail-safe at their deadline (the line registered
        // them at capture); its thread sleeps in `park_timeout`, so each verdict wakes it.
        Box::new(RecordPort::new(self.verdicts(), |a| &a.line_dropped).waking(self.wakeup()))
    }

    fn start(&mut self, _info: &StationInfo, _supervisor: &Arc<Supervisor>) -> Result<()> {
        Ok(()) // running since `open`
    }

    fn finish(self: Box<Self>) {
        LineOutput::finish(*self);
    }

    fn taps(&mut self, cameras: usize) -> Option<Vec<LineTap>> {
        Some((0..cameras).map(|i| self.tap(i)).collect())
    }
}

/// A queue of records and the thread that drains it, once started.
struct Queue<T> {
    tx: Option<Sender<T>>,
    rx: Option<Receiver<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T> Queue<T> {
    fn new(depth: usize) -> Self {
        let (tx, rx) = bounded(depth);
        Self { tx: Some(tx), rx: Some(rx), thread: None }
    }

    /// The sending end (once): the queue closes when the pipeline drops it.
    fn sender(&mut self) -> Sender<T> {
        self.tx.take().expect("an output's port is taken once")
    }

    fn receiver(&mut self) -> Receiver<T> {
        self.rx.take().expect("an output is started once")
    }

    fn join(self, name: &str) {
        drop((self.tx, self.rx));
        if self.thread.is_some_and(|t| t.join().is_err()) {
            tracing::error!(output = name, "output thread panicked outside its supervisor");
        }
    }
}

/// The results stream: JSON lines to a file or stdout (see [`results`]).
struct ResultsOutput {
    writer: Option<Box<dyn Write + Send>>,
    queue: Queue<Inspection>,
}

impl ResultsOutput {
    fn new(writer: Box<dyn Write + Send>) -> Self {
        Self { writer: Some(writer), queue: Queue::new(OUTPUT_QUEUE_DEPTH) }
    }
}

impl Output for ResultsOutput {
    fn name(&self) -> &'static str {
        "results"
    }

    fn port(&mut self) -> Box<dyn OutputPort> {
        RecordPort::results(self.queue.sender())
    }

    fn start(&mut self, info: &StationInfo, supervisor: &Arc<Supervisor>) -> Result<()> {
        let (rx, writer) = (self.queue.receiver(), self.writer.take().expect("started once"));
        let ctx = RecordContext {
            station: info.station.clone(),
            cameras: info.cameras.clone(),
            recipes: Arc::clone(&info.recipes),
        };
        self.queue.thread =
            Some(supervisor.spawn_fallible("results".into(), "results", move || results::run(rx, ctx, writer))?);
        Ok(())
    }

    fn finish(self: Box<Self>) {
        self.queue.join("results");
    }
}

/// The SQLite result store (see [`super::store`]).
struct StoreOutput {
    store: Option<Store>,
    queue: Queue<Inspection>,
}

impl StoreOutput {
    fn new(store: Store) -> Self {
        Self { store: Some(store), queue: Queue::new(OUTPUT_QUEUE_DEPTH) }
    }
}

impl Output for StoreOutput {
    fn name(&self) -> &'static str {
        "store"
    }

    fn port(&mut self) -> Box<dyn OutputPort> {
        super::store::port(self.queue.sender())
    }

    fn start(&mut self, info: &StationInfo, supervisor: &Arc<Supervisor>) -> Result<()> {
        let (rx, store) = (self.queue.receiver(), self.store.take().expect("started once"));
        let ctx = StoreContext {
            station: info.station.clone(),
            cameras: info.cameras.clone(),
            recipes: Arc::clone(&info.recipes),
        };
        let accounting = Arc::clone(&info.accounting);
        self.queue.thread = Some(supervisor.spawn("store".into(), "store", move || store.run(rx, ctx, accounting))?);
        Ok(())
    }

    fn finish(self: Box<Self>) {
        self.queue.join("store");
    }
}

/// The image archive (see [`super::archive`]): the frames themselves travel on its queue.
struct ArchiveOutput {
    archive: Option<Archive>,
    ok_sample_rate: f64,
    queue: Queue<ArchiveJob>,
}

impl ArchiveOutput {
    fn new(archive: Archive, ok_sample_rate: f64) -> Self {
        Self { archive: Some(archive), ok_sample_rate, queue: Queue::new(archive::QUEUE_DEPTH) }
    }
}

impl Output for ArchiveOutput {
    fn name(&self) -> &'static str {
        "archive"
    }

    fn port(&mut self) -> Box<dyn OutputPort> {
        archive::port(self.queue.sender(), self.ok_sample_rate)
    }

    fn start(&mut self, info: &StationInfo, supervisor: &Arc<Supervisor>) -> Result<()> {
        let (rx, archive) = (self.queue.receiver(), self.archive.take().expect("started once"));
        let accounting = Arc::clone(&info.accounting);
        self.queue.thread = Some(supervisor.spawn("archive".into(), "archive", move || archive.run(rx, accounting))?);
        Ok(())
    }

    fn finish(self: Box<Self>) {
        self.queue.join("archive");
    }
}
