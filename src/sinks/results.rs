//! The results stream: one JSON line per inspection, to stdout or a file.
//!
//! Field reference (stable; scripts rely on it): `station`, `camera`, `seq`, `part_id`,
//! `captured_unix_ms`, `infer_start_unix_ms`, `infer_end_unix_ms`, `verdict_unix_ms`,
//! `latency_ms` (capture → verdict), `recipe` and `model_sha256` (what judged it), `verdict` (`OK` | `NG` | `FAILSAFE`), `failsafe_cause`
//! (`inference_error` | `timeout` | null), `image_score` (anomaly models, else null), `width`,
//! `height`, `mm_per_px` (the camera's scale on the inspected surface, or null), `defects`
//! (`class`, `x`, `y`, `w`, `h` in pixels, `area_px`, `length_px`, `width_px` (along the
//! defect's own axis), `area_mm2`, `length_mm`, `width_mm` (null without a scale), `max_score`,
//! `mean_score`, `counted` = passed its rule), `defects_truncated`.

use crate::pipeline::Verdict;
use crate::pipeline::messages::Inspection;
use crossbeam_channel::Receiver;
use serde::Serialize;
use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Everything a record needs besides the inspection itself.
pub struct RecordContext {
    pub station: String,
    pub cameras: Vec<String>,
    /// By model slot.
    pub recipes: std::sync::Arc<crate::pipeline::Slots<super::RecipeContext>>,
}

#[derive(Serialize)]
struct Record<'a> {
    station: &'a str,
    camera: &'a str,
    seq: u64,
    part_id: Option<&'a str>,
    captured_unix_ms: f64,
    infer_start_unix_ms: f64,
    infer_end_unix_ms: f64,
    verdict_unix_ms: f64,
    latency_ms: f64,
    recipe: &'a str,
    model_sha256: &'a str,
    verdict: &'static str,
    failsafe_cause: Option<&'static str>,
    image_score: Option<f32>,
    width: u32,
    height: u32,
    mm_per_px: Option<f32>,
    defects: DefectList<'a>,
    defects_truncated: u32,
}

struct DefectList<'a> {
    inspection: &'a Inspection,
    classes: &'a [String],
}

#[derive(Serialize)]
struct DefectRecord<'a> {
    class: &'a str,
    x: f32,
    y: f32,
    w: f32,
    h: f32,
    area_px: f32,
    length_px: f32,
    width_px: f32,
    area_mm2: Option<f32>,
    length_mm: Option<f32>,
    width_mm: Option<f32>,
    max_score: f32,
    mean_score: f32,
    counted: bool,
}

impl Serialize for DefectList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Streamed straight from the inspection: no intermediate Vec.
        let scale = self.inspection.mm_per_px;
        s.collect_seq(self.inspection.defects.iter().map(|r| {
            let mm = scale.map(|s| r.defect.in_mm(s));
            DefectRecord {
                class: self.classes.get(r.defect.class as usize).map(String::as_str).unwrap_or("?"),
                x: r.defect.x,
                y: r.defect.y,
                w: r.defect.w,
                h: r.defect.h,
                area_px: r.defect.area_px,
                length_px: r.defect.length_px,
                width_px: r.defect.width_px,
                area_mm2: mm.map(|m| m.area_mm2),
                length_mm: mm.map(|m| m.length_mm),
                width_mm: mm.map(|m| m.width_mm),
                max_score: r.defect.max_score,
                mean_score: r.defect.mean_score,
                counted: r.counted,
            }
        }))
    }
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// Wall-clock time of a monotonic instant, anchored on the frame's capture stamps.
fn wall_of(i: &Inspection, t: Instant) -> f64 {
    unix_ms(i.meta.captured_wall) + t.saturating_duration_since(i.meta.captured_at).as_secs_f64() * 1000.0
}

/// Write one inspection as a JSON line into `buf` (cleared first).
pub fn encode(i: &Inspection, ctx: &RecordContext, buf: &mut Vec<u8>) {
    buf.clear();
    let recipe = ctx.recipes.get(usize::from(i.meta.recipe));
    let classes = recipe.map_or(&[][..], |r| &r.classes[..]);
    let record = Record {
        station: &ctx.station,
        camera: ctx.cameras.get(i.meta.camera as usize).map(String::as_str).unwrap_or("?"),
        seq: i.meta.seq,
        part_id: i.meta.part_id.as_ref().map(|p| p.as_str()),
        captured_unix_ms: unix_ms(i.meta.captured_wall),
        infer_start_unix_ms: wall_of(i, i.infer_started),
        infer_end_unix_ms: wall_of(i, i.infer_ended),
        verdict_unix_ms: wall_of(i, i.decided_at),
        latency_ms: i.decided_at.saturating_duration_since(i.meta.captured_at).as_secs_f64() * 1000.0,
        recipe: recipe.map_or("?", |r| r.name.as_str()),
        model_sha256: recipe.map_or("?", |r| r.model_sha256.as_str()),
        verdict: i.verdict.as_str(),
        failsafe_cause: match i.verdict {
            Verdict::Failsafe(c) => Some(c.as_str()),
            _ => None,
        },
        image_score: (!i.image_score.is_nan()).then_some(i.image_score),
        width: i.width,
        height: i.height,
        mm_per_px: i.mm_per_px,
        defects: DefectList { inspection: i, classes },
        defects_truncated: i.defects_truncated,
    };
    // Serialising plain numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, &record);
    buf.push(b'\n');
}

/// Write every record from `rx` to `out` until the queue closes; flush at the end and whenever
/// the queue runs empty (so a reader following the file sees records promptly).
pub fn run(rx: Receiver<Inspection>, ctx: RecordContext, out: Box<dyn Write + Send>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut buf = Vec::with_capacity(4096);
    let mut records = 0u64;
    while let Ok(i) = rx.recv() {
        records += 1;
        crate::supervise::fault_point("results", records);
        encode(&i, &ctx, &mut buf);
        out.write_all(&buf)?;
        if rx.is_empty() {
            out.flush()?;
        }
    }
    out.flush()
}
