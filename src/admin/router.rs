//! The admin listener's routes: `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz`
//! (model warmed up, pipeline running, every camera up). [`router`] is tested with `oneshot`,
//! without a server.

use crate::telemetry::Telemetry;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

/// Content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry)
}

async fn metrics(axum::extract::State(t): axum::extract::State<Arc<Telemetry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], t.render())
}

/// Alive: answers while the process serves.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: 200 with `{"ready": true, "not_ready": []}`, or 503 naming everything not ready yet.
async fn readyz(axum::extract::State(t): axum::extract::State<Arc<Telemetry>>) -> impl IntoResponse {
    let not_ready = t.readiness.not_ready();
    let status = if not_ready.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({ "ready": not_ready.is_empty(), "not_ready": not_ready });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string() + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::accounting::Accounting;
    use crate::telemetry::StationMetrics;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering::Relaxed;
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str) -> (StatusCode, String, String) {
        let response = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn healthz_answers_and_readyz_follows_the_latches() {
        runtime().block_on(async {
            let telemetry = Arc::new(Telemetry::new());
            let app = router(Arc::clone(&telemetry));
            assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);

            let (status, _, body) = get(&app, "/readyz").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(body.contains("model not loaded"), "{body}");

            let accounting = Arc::new(Accounting::new(&["left".into()]));
            telemetry.readiness.watch_cameras(Arc::clone(&accounting));
            telemetry.readiness.model.release();
            telemetry.readiness.pipeline.release();
            let (status, _, body) = get(&app, "/readyz").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["not_ready"], serde_json::json!(["camera left is down: not opened yet"]));

            accounting.cameras[0].up.store(true, Relaxed);
            let (status, _, body) = get(&app, "/readyz").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["ready"], true);
            assert_eq!(get(&app, "/nope").await.0, StatusCode::NOT_FOUND);
        });
    }

    #[test]
    fn metrics_show_the_station_counters_and_histograms() {
        runtime().block_on(async {
            let telemetry = Arc::new(Telemetry::new());
            let accounting = Arc::new(Accounting::new(&["left".into()]));
            let classes = ["scratch".to_string()];
            let m = StationMetrics::new(&accounting, &classes, &[("demo", "ab12")], Some(&telemetry.registry)).unwrap();
            accounting.cameras[0].captured.fetch_add(5, Relaxed);
            accounting.cameras[0].ok.fetch_add(3, Relaxed);
            accounting.cameras[0].failsafe_timeout.fetch_add(1, Relaxed);
            accounting.cameras[0].dropped_queue_full.fetch_add(1, Relaxed);
            m.defects[0][0].inc();
            m.capture_to_verdict[0].observe(0.004);
            m.inference.get(0).unwrap().observe(0.003);
            m.batch_size.observe(4.0);
            let app = router(Arc::clone(&telemetry));
            let (status, content_type, body) = get(&app, "/metrics").await;
            assert_eq!(status, StatusCode::OK);
            assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
            for line in [
                r#"linesight_frames_captured_total{camera="left"} 5"#,
                r#"linesight_inspections_total{camera="left",verdict="ok"} 3"#,
                r#"linesight_inspections_total{camera="left",verdict="failsafe"} 1"#,
                r#"linesight_failsafe_total{camera="left",reason="timeout"} 1"#,
                r#"linesight_frames_dropped_total{camera="left",reason="queue_full"} 1"#,
                r#"linesight_defects_total{camera="left",class="scratch"} 1"#,
                r#"linesight_capture_to_verdict_seconds_bucket{camera="left",le="0.005"} 1"#,
                r#"linesight_inference_seconds_count{model="demo"} 1"#,
                r#"linesight_batch_size_sum 4"#,
                r#"linesight_camera_up{camera="left"} 0"#,
                r#"linesight_model_info{model="demo",sha256="ab12"} 1"#,
                r#"linesight_ready 0"#,
                "# TYPE linesight_stage_seconds histogram",
                "# TYPE linesight_errors_total counter",
                "process_resident_memory_bytes",
            ] {
                assert!(body.lines().any(|l| l.starts_with(line)), "missing {line:?} in:\n{body}");
            }
            assert!(body.contains(&format!("linesight_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
        });
    }
}
