//! The station's metrics: handles for the frame path, fetched once at build time, and a collector
//! that turns the station's [`Accounting`] atomics into counters and gauges at scrape time.

use super::{counter, family, gauge, names};
use crate::frame::Frame;
use crate::pipeline::FailsafeCause;
use crate::pipeline::Slots;
use crate::pipeline::accounting::{Accounting, CameraSnapshot, DropCause};
use crossbeam_channel::Receiver;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

/// Metric handles the pipeline threads update per frame: only atomic adds, no lookup, no lock.
pub struct StationMetrics {
    pub capture: Histogram,
    pub undistort: Histogram,
    pub preprocess: Histogram,
    pub decode: Histogram,
    /// Per model slot (labelled with its model's name); models installed while the station runs
    /// get theirs when installed.
    pub inference: Arc<Slots<Histogram>>,
    inference_family: HistogramVec,
    model_info: IntGaugeVec,
    pub batch_size: Histogram,
    /// Per camera index.
    pub capture_to_verdict: Vec<Histogram>,
    /// Per camera index, then per class index.
    pub defects: Vec<Vec<IntCounter>>,
    /// The camera queues, once the station runs (their length is the queue-depth gauge).
    queues: Arc<OnceLock<Vec<Receiver<Frame>>>>,
}

impl StationMetrics {
    /// Create every handle for these cameras, classes and models (name, sha256; one per recipe); register them (and the accounting
    /// collector) in `registry` when one is given, else they count unexported (tests, benches).
    pub fn new(
        accounting: &Arc<Accounting>,
        classes: &[String],
        models: &[(&str, &str)],
        registry: Option<&Registry>,
    ) -> Result<Self, prometheus::Error> {
        let stage = HistogramVec::new(
            HistogramOpts::new(names::STAGE_SECONDS, names::STAGE_SECONDS_HELP).buckets(names::STAGE_BUCKETS.to_vec()),
            &[names::STAGE],
        )?;
        let inference = HistogramVec::new(
            HistogramOpts::new(names::INFERENCE_SECONDS, names::INFERENCE_SECONDS_HELP)
                .buckets(names::STAGE_BUCKETS.to_vec()),
            &[names::MODEL],
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(names::BATCH_SIZE, names::BATCH_SIZE_HELP).buckets(names::BATCH_BUCKETS.to_vec()),
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(names::CAPTURE_TO_VERDICT, names::CAPTURE_TO_VERDICT_HELP)
                .buckets(names::LATENCY_BUCKETS.to_vec()),
            &[names::CAMERA],
        )?;
        let defects =
            IntCounterVec::new(Opts::new(names::DEFECTS, names::DEFECTS_HELP), &[names::CAMERA, names::CLASS])?;
        let model_info =
            IntGaugeVec::new(Opts::new(names::MODEL_INFO, names::MODEL_INFO_HELP), &[names::MODEL, names::SHA256])?;
        for (name, sha256) in models {
            model_info.with_label_values(&[name, sha256]).set(1);
        }

        let queues = Arc::new(OnceLock::new());
        if let Some(r) = registry {
            r.register(Box::new(stage.clone()))?;
            r.register(Box::new(inference.clone()))?;
            r.register(Box::new(batch_size.clone()))?;
            r.register(Box::new(latency.clone()))?;
            r.register(Box::new(defects.clone()))?;
            r.register(Box::new(model_info.clone()))?;
            r.register(Box::new(AccountingCollector::new(Arc::clone(accounting), Arc::clone(&queues))?))?;
        }
        let cameras = &accounting.cameras;
        Ok(Self {
            capture: stage.with_label_values(&[names::STAGE_CAPTURE]),
            undistort: stage.with_label_values(&[names::STAGE_UNDISTORT]),
            preprocess: stage.with_label_values(&[names::STAGE_PREPROCESS]),
            decode: stage.with_label_values(&[names::STAGE_DECODE]),
            inference: Arc::new(Slots::from_vec(
                models.iter().map(|(name, _)| inference.with_label_values(&[name])).collect(),
            )),
            inference_family: inference,
            model_info,
            batch_size,
            capture_to_verdict: cameras.iter().map(|c| latency.with_label_values(&[c.id.as_str()])).collect(),
            defects: cameras
                .iter()
                .map(|c| classes.iter().map(|k| defects.with_label_values(&[c.id.as_str(), k.as_str()])).collect())
                .collect(),
            queues,
        })
    }

    /// A model installed in `slot` while the station runs: its inference time is measured from
    /// its first batch.
    pub fn model_installed(&self, slot: usize, name: &str) {
        let _ = self.inference.set(slot, self.inference_family.with_label_values(&[name]));
    }

    /// The models (name, sha256) some recipe runs now are 1, the other loaded ones 0.
    pub fn models_running(&self, loaded: &[(String, String)], running: &[(String, String)]) {
        for (name, sha) in loaded {
            let on = running.iter().any(|(n, s)| n == name && s == sha);
            self.model_info.with_label_values(&[name.as_str(), sha.as_str()]).set(i64::from(on));
        }
    }

    /// Export the camera queues' lengths from now on (called once, when the station starts).
    pub fn watch_queues(&self, queues: Vec<Receiver<Frame>>) {
        let _ = self.queues.set(queues);
    }
}

/// Reads the station's counters at scrape time; the frame path is not touched.
struct AccountingCollector {
    accounting: Arc<Accounting>,
    queues: Arc<OnceLock<Vec<Receiver<Frame>>>>,
    descs: Vec<Desc>,
}

/// Every family this collector exports: (name, help, variable labels).
const ACCOUNTING_FAMILIES: [(&str, &str, &[&str]); 14] = [
    (names::FRAMES_CAPTURED, names::FRAMES_CAPTURED_HELP, &[names::CAMERA]),
    (names::FRAMES_DROPPED, names::FRAMES_DROPPED_HELP, &[names::CAMERA, names::REASON]),
    (names::INSPECTIONS, names::INSPECTIONS_HELP, &[names::CAMERA, names::VERDICT]),
    (names::FAILSAFE, names::FAILSAFE_HELP, &[names::CAMERA, names::REASON]),
    (names::ERRORS, names::ERRORS_HELP, &[names::STAGE, names::ERROR_TYPE]),
    (names::CAMERA_RECONNECTS, names::CAMERA_RECONNECTS_HELP, &[names::CAMERA]),
    (names::RESULTS_DROPPED, names::RESULTS_DROPPED_HELP, &[]),
    (names::STORE_DROPPED, names::STORE_DROPPED_HELP, &[]),
    (names::STORE_WRITTEN, names::STORE_WRITTEN_HELP, &[]),
    (names::ARCHIVE_DROPPED, names::ARCHIVE_DROPPED_HELP, &[names::REASON]),
    (names::ARCHIVE_WRITTEN, names::ARCHIVE_WRITTEN_HELP, &[]),
    (names::ARCHIVE_DEGRADED, names::ARCHIVE_DEGRADED_HELP, &[]),
    (names::CAMERA_UP, names::CAMERA_UP_HELP, &[names::CAMERA]),
    (names::QUEUE_DEPTH, names::QUEUE_DEPTH_HELP, &[names::CAMERA]),
];

impl AccountingCollector {
    fn new(accounting: Arc<Accounting>, queues: Arc<OnceLock<Vec<Receiver<Frame>>>>) -> prometheus::Result<Self> {
        let descs = ACCOUNTING_FAMILIES
            .iter()
            .map(|(name, help, labels)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self { accounting, queues, descs })
    }
}

impl Collector for AccountingCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use names::*;
        let a = &self.accounting;
        let snaps = a.snapshot();
        fn cam(s: &CameraSnapshot) -> (&'static str, &str) {
            (CAMERA, s.id.as_str())
        }
        let per_camera = |value: fn(&CameraSnapshot) -> u64| -> Vec<Metric> {
            snaps.iter().map(|s| counter(&[cam(s)], value(s))).collect()
        };
        let per_camera_and = |label: &'static str, values: fn(&CameraSnapshot) -> Vec<(&'static str, u64)>| {
            snaps
                .iter()
                .flat_map(|s| values(s).into_iter().map(|(v, n)| counter(&[cam(s), (label, v)], n)))
                .collect::<Vec<_>>()
        };
        let (bad_frame, run_failed, store_failed, archive_failed) =
            (ERRORS_CAPTURE_BAD_FRAME, ERRORS_INFER_RUN_FAILED, ERRORS_STORE_WRITE_FAILED, ERRORS_ARCHIVE_WRITE_FAILED);
        let mut families = vec![
            family(FRAMES_CAPTURED, FRAMES_CAPTURED_HELP, MetricType::COUNTER, per_camera(|s| s.captured)),
            family(
                FRAMES_DROPPED,
                FRAMES_DROPPED_HELP,
                MetricType::COUNTER,
                per_camera_and(REASON, |s| {
                    vec![
                        (DropCause::QueueFull.as_str(), s.dropped_queue_full),
                        (DropCause::InvalidFrame.as_str(), s.dropped_invalid_frame),
                        (DropCause::Stale.as_str(), s.dropped_stale),
                    ]
                }),
            ),
            family(
                INSPECTIONS,
                INSPECTIONS_HELP,
                MetricType::COUNTER,
                snaps
                    .iter()
                    .flat_map(|s| {
                        [(VERDICT_OK, s.ok), (VERDICT_NG, s.ng), (VERDICT_FAILSAFE, s.failsafe())]
                            .map(|(v, n)| counter(&[cam(s), (VERDICT, v)], n))
                    })
                    .collect(),
            ),
            family(
                FAILSAFE,
                FAILSAFE_HELP,
                MetricType::COUNTER,
                per_camera_and(REASON, |s| {
                    vec![
                        (FailsafeCause::InferenceError.as_str(), s.failsafe_inference_error),
                        (FailsafeCause::Timeout.as_str(), s.failsafe_timeout),
                        (FailsafeCause::InvalidOutput.as_str(), s.failsafe_invalid_output),
                    ]
                }),
            ),
            family(
                ERRORS,
                ERRORS_HELP,
                MetricType::COUNTER,
                vec![
                    counter(
                        &[(STAGE, bad_frame.0), (ERROR_TYPE, bad_frame.1)],
                        snaps.iter().map(|s| s.capture_errors).sum(),
                    ),
                    counter(&[(STAGE, run_failed.0), (ERROR_TYPE, run_failed.1)], a.inference_errors.load(Relaxed)),
                    counter(
                        &[(STAGE, ERRORS_INFER_INVALID_OUTPUT.0), (ERROR_TYPE, ERRORS_INFER_INVALID_OUTPUT.1)],
                        a.invalid_output_batches.load(Relaxed),
                    ),
                    counter(&[(STAGE, store_failed.0), (ERROR_TYPE, store_failed.1)], a.store_errors.load(Relaxed)),
                    counter(
                        &[(STAGE, archive_failed.0), (ERROR_TYPE, archive_failed.1)],
                        a.archive_errors.load(Relaxed),
                    ),
                ],
            ),
            family(CAMERA_RECONNECTS, CAMERA_RECONNECTS_HELP, MetricType::COUNTER, per_camera(|s| s.reconnects)),
            family(
                RESULTS_DROPPED,
                RESULTS_DROPPED_HELP,
                MetricType::COUNTER,
                vec![counter(&[], a.results_dropped.load(Relaxed))],
            ),
            family(
                STORE_DROPPED,
                STORE_DROPPED_HELP,
                MetricType::COUNTER,
                vec![counter(&[], a.store_dropped.load(Relaxed))],
            ),
            family(
                STORE_WRITTEN,
                STORE_WRITTEN_HELP,
                MetricType::COUNTER,
                vec![counter(&[], a.store_written.load(Relaxed))],
            ),
            family(
                ARCHIVE_DROPPED,
                ARCHIVE_DROPPED_HELP,
                MetricType::COUNTER,
                vec![counter(&[(REASON, ARCHIVE_DROPPED_QUEUE_FULL)], a.archive_dropped_queue_full.load(Relaxed))],
            ),
            family(
                ARCHIVE_WRITTEN,
                ARCHIVE_WRITTEN_HELP,
                MetricType::COUNTER,
                vec![counter(&[], a.archive_written.load(Relaxed))],
            ),
            family(
                ARCHIVE_DEGRADED,
                ARCHIVE_DEGRADED_HELP,
                MetricType::GAUGE,
                vec![gauge(&[], f64::from(u8::from(a.archive_degraded.load(Relaxed))))],
            ),
            family(
                CAMERA_UP,
                CAMERA_UP_HELP,
                MetricType::GAUGE,
                snaps.iter().map(|s| gauge(&[cam(s)], f64::from(u8::from(s.up)))).collect(),
            ),
        ];
        if let Some(queues) = self.queues.get() {
            let depth = snaps.iter().zip(queues).map(|(s, rx)| gauge(&[cam(s)], rx.len() as f64)).collect();
            families.push(family(QUEUE_DEPTH, QUEUE_DEPTH_HELP, MetricType::GAUGE, depth));
        }
        families
    }
}
