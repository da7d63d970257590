//! Every metric the station exports: names, help texts, label names and values, and buckets, in
//! one place. Prefix `linesight_`; counters end in `_total`; durations are histograms in seconds;
//! labels take only bounded values (camera ids, class labels, fixed causes), never a part or frame.
//!
//! Process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`, …) come from the prometheus crate under their standard names.

/// Counter {camera}: frames that entered the pipeline.
pub const FRAMES_CAPTURED: &str = "linesight_frames_captured_total";
pub const FRAMES_CAPTURED_HELP: &str = "Frames captured, per camera.";

/// Counter {camera, reason}: frames dropped without a verdict, with their cause.
pub const FRAMES_DROPPED: &str = "linesight_frames_dropped_total";
pub const FRAMES_DROPPED_HELP: &str = "Frames dropped without a verdict, per camera and cause.";

/// Counter {camera, verdict}: decided frames (`ok`, `ng`, `failsafe`).
pub const INSPECTIONS: &str = "linesight_inspections_total";
pub const INSPECTIONS_HELP: &str = "Inspections decided, per camera and verdict (ok, ng, failsafe).";

/// Counter {camera, reason}: FAILSAFE verdicts by cause (`inference_error`, `timeout`).
pub const FAILSAFE: &str = "linesight_failsafe_total";
pub const FAILSAFE_HELP: &str = "FAILSAFE verdicts, per camera and cause.";

/// Counter {camera, class}: defects that counted towards a verdict (they passed their rule's
/// minimums), per model class.
pub const DEFECTS: &str = "linesight_defects_total";
pub const DEFECTS_HELP: &str = "Defects that counted towards a verdict, per camera and class.";

/// Counter {stage, error_type}: errors, from a bounded set (see `ERRORS_*` below).
pub const ERRORS: &str = "linesight_errors_total";
pub const ERRORS_HELP: &str = "Errors, per pipeline stage and error type.";

/// Counter {camera}: reconnect attempts after a camera went down.
pub const CAMERA_RECONNECTS: &str = "linesight_camera_reconnects_total";
pub const CAMERA_RECONNECTS_HELP: &str = "Camera reconnect attempts, per camera.";

/// Counter: inspection records an output could not take in time (the verdicts still count).
pub const RESULTS_DROPPED: &str = "linesight_results_dropped_total";
pub const RESULTS_DROPPED_HELP: &str = "Inspection records dropped because an output fell behind.";

/// Counter: inspection records the result store could not take in time (it fell behind).
pub const STORE_DROPPED: &str = "linesight_store_dropped_total";
pub const STORE_DROPPED_HELP: &str = "Inspection records dropped because the result store fell behind.";

/// Counter: inspection records committed to the result store.
pub const STORE_WRITTEN: &str = "linesight_store_written_total";
pub const STORE_WRITTEN_HELP: &str = "Inspection records committed to the result store.";

/// Counter {reason}: frames selected for the image archive that it did not get (`queue_full`).
pub const ARCHIVE_DROPPED: &str = "linesight_archive_dropped_total";
pub const ARCHIVE_DROPPED_HELP: &str = "Frames selected for the image archive but not archived, per cause.";
/// Label value of `linesight_archive_dropped_total{reason}`: the archive writer fell behind.
pub const ARCHIVE_DROPPED_QUEUE_FULL: &str = "queue_full";

/// Counter: frames written to the image archive (plain and overlay PNG).
pub const ARCHIVE_WRITTEN: &str = "linesight_archive_written_total";
pub const ARCHIVE_WRITTEN_HELP: &str = "Frames written to the image archive.";

/// Gauge: 1 while image archive writes fail (read-only folder, full disk), 0 once one succeeds.
pub const ARCHIVE_DEGRADED: &str = "linesight_archive_degraded";
pub const ARCHIVE_DEGRADED_HELP: &str = "Whether the image archive's last write failed (1) or not (0).";

/// Gauge {camera}: 1 while the camera delivers frames, 0 while it is down or stalled.
pub const CAMERA_UP: &str = "linesight_camera_up";
pub const CAMERA_UP_HELP: &str = "Whether the camera delivers frames (1) or is down (0).";

/// Gauge {camera}: frames waiting in the camera's queue.
pub const QUEUE_DEPTH: &str = "linesight_camera_queue_frames";
pub const QUEUE_DEPTH_HELP: &str = "Frames waiting in the camera's queue for preprocessing.";

/// Gauge: 1 when `/readyz` answers 200.
pub const READY: &str = "linesight_ready";
pub const READY_HELP: &str = "Whether the station is ready: model warmed up, pipeline running, every camera up, no stage failed, model outputs finite.";

/// Gauge {model, sha256}: always 1; the loaded model package.
pub const MODEL_INFO: &str = "linesight_model_info";
pub const MODEL_INFO_HELP: &str =
    "Each loaded model package: 1 while a recipe runs it, 0 while it is only kept for rollback.";

/// Gauge {version}: always 1; the running build.
pub const BUILD_INFO: &str = "linesight_build_info";
pub const BUILD_INFO_HELP: &str = "The running linesight build (always 1).";

/// Histogram {stage}: time one frame (or one grab) spends in a stage.
pub const STAGE_FAILURES: &str = "linesight_stage_failures_total";
pub const STAGE_FAILURES_HELP: &str = "Station threads that ended unexpectedly (panic or error), by stage; the station then stops being ready and exits non-zero.";
pub const STAGE_SECONDS: &str = "linesight_stage_seconds";
pub const STAGE_SECONDS_HELP: &str =
    "Time spent per frame in a pipeline stage (capture, undistort, preprocess, decode), in seconds.";

/// Histogram {model}: time one batch spends inside ONNX Runtime.
pub const INFERENCE_SECONDS: &str = "linesight_inference_seconds";
pub const INFERENCE_SECONDS_HELP: &str = "Time one batch spends inside ONNX Runtime, in seconds.";

/// Histogram: tiles per inference batch (padding excluded).
pub const BATCH_SIZE: &str = "linesight_batch_size";
pub const BATCH_SIZE_HELP: &str = "Tiles per inference batch, padding excluded.";

/// Histogram {camera}: time from capture to verdict.
pub const CAPTURE_TO_VERDICT: &str = "linesight_capture_to_verdict_seconds";
pub const CAPTURE_TO_VERDICT_HELP: &str = "Time from a frame's capture to its verdict, in seconds.";

// Label names.
pub const CAMERA: &str = "camera";
pub const REASON: &str = "reason";
pub const VERDICT: &str = "verdict";
pub const CLASS: &str = "class";
pub const STAGE: &str = "stage";
pub const ERROR_TYPE: &str = "error_type";
pub const MODEL: &str = "model";
pub const SHA256: &str = "sha256";
pub const VERSION: &str = "version";

// Label values of `linesight_inspections_total{verdict}`.
pub const VERDICT_OK: &str = "ok";
pub const VERDICT_NG: &str = "ng";
pub const VERDICT_FAILSAFE: &str = "failsafe";

// Label values of `linesight_stage_seconds{stage}`.
pub const STAGE_CAPTURE: &str = "capture";
pub const STAGE_UNDISTORT: &str = "undistort";
pub const STAGE_PREPROCESS: &str = "preprocess";
/// Decoding the stitched outputs (components, NMS) and applying the decision rules.
pub const STAGE_DECODE: &str = "decode";

/// The `{stage, error_type}` pairs of `linesight_errors_total`: grabs that yielded no frame, and
/// inference runs that failed (their frames fail safe), and result store and image archive writes
/// that failed.
pub const ERRORS_CAPTURE_BAD_FRAME: (&str, &str) = ("capture", "bad_frame");
pub const ERRORS_INFER_RUN_FAILED: (&str, &str) = ("infer", "run_failed");
/// Batches whose outputs held a NaN or an infinity (those frames fail safe as `invalid_output`).
pub const ERRORS_INFER_INVALID_OUTPUT: (&str, &str) = ("infer", "invalid_output");
/// Result store transactions that failed (their records are lost; inspection goes on).
pub const ERRORS_STORE_WRITE_FAILED: (&str, &str) = ("store", "write_failed");
/// Image archive writes that failed (the frame is not archived; inspection goes on).
pub const ERRORS_ARCHIVE_WRITE_FAILED: (&str, &str) = ("archive", "write_failed");

// --- Line output (`[line]`: PLC, MQTT, webhook, command) ---

/// Counter: reject actions fired at their deadline (NG parts and fail-safe rejects).
pub const LINE_REJECTS: &str = "linesight_rejects_total";
pub const LINE_REJECTS_HELP: &str = "Reject actions fired at their deadline (NG parts and fail-safe rejects).";
/// Counter {reason}: parts that got the fail-safe action (see `FailsafeReason`).
pub const LINE_FAILSAFE_ACTIONS: &str = "linesight_line_failsafe_actions_total";
pub const LINE_FAILSAFE_ACTIONS_HELP: &str = "Parts given the fail-safe action (reject, pass or stop_line), per cause.";
/// Counter: actions not fired because the line thread reached them after their fire window.
pub const LINE_DEADLINE_MISSES: &str = "linesight_deadline_misses_total";
pub const LINE_DEADLINE_MISSES_HELP: &str =
    "Actions not fired because their fire window had passed (never fired late).";
/// Counter: verdicts that came after `deadline - margin` (recorded, never acted on).
pub const LINE_LATE_VERDICTS: &str = "linesight_late_verdicts_total";
pub const LINE_LATE_VERDICTS_HELP: &str = "Verdicts that arrived after deadline - margin: recorded, never fired.";
/// Counter: verdicts for parts the line never saw captured (its registration queue overflowed).
pub const LINE_UNTRACKED_VERDICTS: &str = "linesight_line_untracked_verdicts_total";
pub const LINE_UNTRACKED_VERDICTS_HELP: &str = "Verdicts for parts the line output was not tracking (never acted on).";
/// Counter {adapter}: failed writes or publishes to the line (PLC exceptions, timeouts, bad answers).
pub const LINE_WRITE_ERRORS: &str = "linesight_plc_write_errors_total";
pub const LINE_WRITE_ERRORS_HELP: &str = "Failed writes to the line, per adapter (exceptions, timeouts, bad answers).";
/// Counter {adapter}: actions whose deadline passed while the adapter could not deliver them.
pub const LINE_UNDELIVERED: &str = "linesight_line_undelivered_total";
pub const LINE_UNDELIVERED_HELP: &str =
    "Actions whose deadline passed undelivered (link down, write failed), per adapter.";
/// Gauge {adapter}: 1 while the adapter's link to its peer is up.
pub const LINE_LINK_UP: &str = "linesight_line_link_up";
pub const LINE_LINK_UP_HELP: &str = "1 while the adapter's link to its peer (PLC, broker, web service) is up.";
/// Histogram {adapter}: one write's round trip (request sent → peer's answer).
pub const LINE_WRITE_SECONDS: &str = "linesight_line_write_seconds";
pub const LINE_WRITE_SECONDS_HELP: &str = "Round trip of one write to the line, per adapter.";
/// Histogram: when the line thread fired a reject, less its deadline.
pub const LINE_FIRE_LATENESS_SECONDS: &str = "linesight_line_fire_lateness_seconds";
pub const LINE_FIRE_LATENESS_SECONDS_HELP: &str = "When each reject was fired, less its deadline.";
/// Counter: PLC triggers seen, and those missed (the trigger counter jumped by more than one).
pub const LINE_TRIGGERS: &str = "linesight_line_triggers_total";
pub const LINE_TRIGGERS_HELP: &str = "PLC triggers seen by the station.";
pub const LINE_MISSED_TRIGGERS: &str = "linesight_line_missed_triggers_total";
pub const LINE_MISSED_TRIGGERS_HELP: &str = "PLC triggers the station did not see (the trigger counter jumped).";
/// Counter: results dropped because the PLC had not acknowledged the buffered ones (overrun).
pub const LINE_RESULTS_OVERRUN: &str = "linesight_line_results_overrun_total";
pub const LINE_RESULTS_OVERRUN_HELP: &str =
    "Results lost because the PLC's results buffer was full (overrun flag set).";
/// Gauge: the station-ready signal as sent to the line.
pub const LINE_READY: &str = "linesight_line_station_ready";
pub const LINE_READY_HELP: &str = "The station-ready signal sent to the line (1 ready, 0 not).";
/// Label of the line adapter (`modbus`, `mqtt`, `webhook`, `command`).
pub const ADAPTER: &str = "adapter";
/// Buckets for line writes and fire lateness: 20 µs to 250 ms.
pub const LINE_BUCKETS: &[f64] =
    &[0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];

/// Buckets for stage durations: 50 µs to 1 s.
pub const STAGE_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Buckets for capture→verdict latency: 1 ms to 5 s (the verdict deadline is typically 1 s).
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Buckets for batch sizes.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

// --- API listener ---

/// Counter {route, status}: API requests answered, per matched route template (never the raw
/// path: `/api/v1/inspections/{id}`, or `unmatched`) and HTTP status code.
pub const API_REQUESTS: &str = "linesight_api_requests_total";
pub const API_REQUESTS_HELP: &str = "HTTP API requests answered, per route template and status code.";

/// Histogram {route}: time from a request's arrival at the API to its response.
pub const API_REQUEST_SECONDS: &str = "linesight_api_request_seconds";
pub const API_REQUEST_SECONDS_HELP: &str = "Time to answer an HTTP API request, per route template, in seconds.";

/// Counter {result}: `/api/v1/stats` answers by where they came from, and background refreshes
/// of cached answers near their expiry (see `API_CACHE_*`).
pub const API_STATS_CACHE: &str = "linesight_api_stats_cache_total";
pub const API_STATS_CACHE_HELP: &str = "Stats answers by source: hit (cached), shared (waited for an identical query in flight), miss (queried); refresh: background queries replacing a cached answer near its expiry.";

/// Counter {reason, role}: API requests refused by the token check: `unauthenticated` (no or an
/// unknown token: 401) or `forbidden` (a token whose role may not: 403), by the role needed.
pub const API_REFUSED: &str = "linesight_api_refused_total";
pub const API_REFUSED_HELP: &str =
    "HTTP API requests refused: unauthenticated (401) or forbidden (403), by the role the request needed.";
pub const API_REFUSED_REASON: &str = "reason";
pub const API_REFUSED_ROLE: &str = "role";

// Label names of the API metrics.
pub const API_ROUTE: &str = "route";
pub const API_STATUS: &str = "status";
pub const API_CACHE_RESULT: &str = "result";

/// Label value of `{route}` for a request that matched no route (one value, however many paths).
pub const API_ROUTE_UNMATCHED: &str = "unmatched";

// Label values of `linesight_api_stats_cache_total{result}`.
pub const API_CACHE_HIT: &str = "hit";
pub const API_CACHE_SHARED: &str = "shared";
pub const API_CACHE_MISS: &str = "miss";
pub const API_CACHE_REFRESH: &str = "refresh";

/// Buckets for API request durations: 1 ms to 10 s (the request timeout).
pub const API_REQUEST_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
