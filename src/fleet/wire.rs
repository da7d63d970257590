//! What stations and the hub send each other over NATS: subjects, stream and bucket names, and
//! the JSON messages (versioned by `v`; readers ignore fields they do not know).

use serde::{Deserialize, Serialize};

/// The JetStream stream that holds every station's records and status.
pub const STREAM: &str = "LINESIGHT";
/// Its subjects: `linesight.<site>.<station>.inspections` and `.status`.
pub const STREAM_SUBJECTS: [&str; 2] = ["linesight.*.*.inspections", "linesight.*.*.status"];
/// Key-value bucket of published recipes, one key per product (its latest recipe).
pub const RECIPES_BUCKET: &str = "linesight_recipes";
/// Object store of recipe packages, each named by the sha256 of its bytes.
pub const PACKAGES_BUCKET: &str = "linesight_packages";
/// The version of the messages below this build writes.
pub const VERSION: u32 = 1;

pub fn inspections_subject(site: &str, station: &str) -> String {
    format!("linesight.{site}.{station}.inspections")
}

pub fn status_subject(site: &str, station: &str) -> String {
    format!("linesight.{site}.{station}.status")
}

/// What a subject of the stream is about.
#[derive(Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    Inspections { site: &'a str, station: &'a str },
    Status { site: &'a str, station: &'a str },
}

impl<'a> Subject<'a> {
    pub fn parse(subject: &'a str) -> Option<Self> {
        let mut parts = subject.split('.');
        let (Some("linesight"), Some(site), Some(station), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        match kind {
            "inspections" => Some(Subject::Inspections { site, station }),
            "status" => Some(Subject::Status { site, station }),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "NG")]
    Ng,
    #[serde(rename = "FAILSAFE")]
    Failsafe,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Ng => "NG",
            Verdict::Failsafe => "FAILSAFE",
        }
    }
}

/// One defect of an inspection, as the station's store holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Defect {
    pub class: String,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub area_px: f64,
    pub length_px: f64,
    pub width_px: f64,
    pub area_mm2: Option<f64>,
    pub length_mm: Option<f64>,
    pub width_mm: Option<f64>,
    pub max_score: Option<f64>,
    pub mean_score: Option<f64>,
    /// Whether it counts in the defect statistics (it passed its class's rule).
    pub counted: bool,
}

/// One inspection, published on `linesight.<site>.<station>.inspections`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    pub v: u32,
    pub site: String,
    pub station: String,
    /// The station store's own id (a new store, a new id): with `row`, what makes the message id.
    pub store_uid: String,
    /// The row id in the station's store (`GET /api/v1/inspections/{row}` on the station).
    pub row: i64,
    pub camera: String,
    pub seq: i64,
    pub part_id: Option<String>,
    pub captured_ms: i64,
    pub decided_ms: i64,
    pub latency_ms: f64,
    pub verdict: Verdict,
    pub failsafe_cause: Option<String>,
    pub image_score: Option<f64>,
    pub threshold: Option<f64>,
    pub width: i64,
    pub height: i64,
    pub mm_per_px: Option<f64>,
    pub defects_truncated: i64,
    pub recipe: Option<String>,
    /// The product the recipe makes, where `[fleet] products` names one (the plant's Pareto per
    /// product reads it).
    #[serde(default)]
    pub product: Option<String>,
    pub model_name: String,
    pub model_sha256: String,
    /// Where the station's archive keeps the image, when it was archived (served by the station's
    /// API, not sent: see docs/FLEET.md).
    pub image_path: Option<String>,
    pub defects: Vec<Defect>,
    /// When the station published it (unix ms).
    pub published_ms: i64,
}

impl Inspection {
    /// The JetStream message id (`Nats-Msg-Id`) and the hub's unique key: a redelivery, a
    /// republish after a crash or a second hub all land on the same row.
    pub fn msg_id(&self) -> String {
        msg_id(&self.site, &self.station, &self.store_uid, self.row)
    }
}

pub fn msg_id(site: &str, station: &str, store_uid: &str, row: i64) -> String {
    format!("{site}.{station}.{store_uid}.{row}")
}

/// The outbox's state, in a station's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// The newest row the stream has acknowledged.
    pub acked_row: i64,
    /// The newest row in the store.
    pub newest_row: i64,
    /// Rows not yet acknowledged.
    pub unsent: i64,
    /// Capture time of the oldest unsent row.
    pub oldest_unsent_ms: Option<i64>,
    /// The unsent rows near the store's retention (they would be deleted unsent).
    pub near_retention: bool,
}

/// A recipe the station fetched from the hub and what it did with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FetchedRecipe {
    pub product: String,
    pub sha256: String,
    pub recipe: String,
    /// `shadow`, `activate` or `fetch`.
    pub action: String,
    /// `ok`, or why it failed.
    pub outcome: String,
    pub at_ms: i64,
}

/// Per camera: what it runs and its counts since the station started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraStatus {
    pub camera: String,
    pub recipe: Option<String>,
    pub model_name: Option<String>,
    pub model_sha256: Option<String>,
    pub captured: u64,
    pub ok: u64,
    pub ng: u64,
    pub failsafe: u64,
    /// Parts per second over the last status interval.
    pub parts_per_s: f64,
}

/// A station's status, published every `[fleet] status_interval_ms` on `.status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub v: u32,
    pub site: String,
    pub station: String,
    pub started_ms: i64,
    pub sent_ms: i64,
    pub api_url: Option<String>,
    pub cameras: Vec<CameraStatus>,
    pub outbox: OutboxStatus,
    pub recipes_fetched: Vec<FetchedRecipe>,
}

/// A recipe published for a product: the value of its key in [`RECIPES_BUCKET`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishedRecipe {
    pub v: u32,
    pub product: String,
    /// sha256 (hex) of the package's bytes: its name in [`PACKAGES_BUCKET`].
    pub sha256: String,
    /// Size of the package in bytes.
    pub bytes: u64,
    /// The model's name (model.toml), for people.
    pub model_name: String,
    /// The image-score threshold to run it at (anomaly models), when the hub sets one.
    pub threshold: Option<f32>,
    /// Decision rules to run it with, as `[[rule]]` entries in JSON (as `PATCH
    /// /api/v1/recipes/{name}` takes them), when the hub sets them; else the station's own.
    #[serde(default)]
    pub rules: Option<serde_json::Value>,
    pub published_ms: i64,
    pub published_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_foreign_ones_are_refused() {
        let s = inspections_subject("plant1", "line-3");
        assert_eq!(Subject::parse(&s), Some(Subject::Inspections { site: "plant1", station: "line-3" }));
        let s = status_subject("plant1", "line-3");
        assert_eq!(Subject::parse(&s), Some(Subject::Status { site: "plant1", station: "line-3" }));
        for bad in ["linesight.a.b", "linesight.a.b.c.inspections", "other.a.b.status", "linesight.a.b.images"] {
            assert_eq!(Subject::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn verdicts_are_the_store_spelling() {
        assert_eq!(serde_json::to_string(&Verdict::Failsafe).unwrap(), "\"FAILSAFE\"");
        assert!(serde_json::from_str::<Verdict>("\"MAYBE\"").is_err());
    }
}
