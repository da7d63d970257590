//! The review loop in the store: operators' labels on inspections, what to review next, and the
//! operating point those labels measure.
//!
//! A label is `defect` (a confirmed reject, or a defect the station missed), `good` (a false
//! reject when the station said NG) or `unsure`; every label is kept, and the latest one per
//! inspection counts. The operating point is measured on the reviewed inspections that carry an
//! image score (anomaly models): `defect`s are the positives, `good`s the negatives, `unsure`s
//! and unscored parts (fail-safe) are left out and counted.

use super::error::ApiError;
use crate::sinks::store::audit::Change;
use crate::teach::operating_point::clopper_pearson_upper;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value as Json, json};

/// Longest note kept with a label.
pub const MAX_NOTE_CHARS: usize = 1000;
/// The labels a reviewer can give a part.
pub const LABELS: [&str; 3] = ["defect", "good", "unsure"];
/// Longest class name.
const MAX_CLASS_CHARS: usize = 64;
/// Most points in an operating-point curve (evenly spread over the labelled scores).
const MAX_POINTS: usize = 200;

/// `POST /api/v1/inspections/{id}/review`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReview {
    pub label: String,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

impl NewReview {
    fn check(&self) -> Result<(), ApiError> {
        if !LABELS.contains(&self.label.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "label {:?}: use \"defect\" (a real defect, rejected or missed), \"good\" (a good part) or \"unsure\"",
                self.label
            )));
        }
        if self.class.as_ref().is_some_and(|c| c.trim().is_empty() || c.chars().count() > MAX_CLASS_CHARS) {
            return Err(ApiError::BadRequest(format!("class: 1 to {MAX_CLASS_CHARS} characters, or leave it out")));
        }
        if self.note.as_ref().is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS) {
            return Err(ApiError::BadRequest(format!("note: at most {MAX_NOTE_CHARS} characters")));
        }
        Ok(())
    }
}

/// Record `review` of inspection `id` by `reviewer`; returns the stored label.
pub fn add(conn: &mut Connection, id: i64, review: &NewReview, reviewer: &str, now_ms: i64) -> Result<Json, ApiError> {
    review.check()?;
    // Immediate: take the write lock first, waiting (busy timeout) for the store's writer. A
    // deferred transaction that reads and then writes cannot wait: if the writer commits in
    // between, SQLite refuses the upgrade at once ("database is locked").
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let exists: Option<i64> =
        tx.query_row("SELECT id FROM inspections WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    if exists.is_none() {
        return Err(ApiError::NotFound(format!("no inspection with id {id}")));
    }
    tx.execute(
        "INSERT INTO reviews (inspection_id, label, class, note, reviewer, reviewed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, review.label, review.class, review.note, reviewer, now_ms],
    )?;
    let review_id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(json!({
        "id": review_id, "inspection_id": id, "label": review.label, "class": review.class, "note": review.note,
        "reviewer": reviewer, "reviewed_unix_ms": now_ms, "reviewed_at": super::db::rfc3339(now_ms),
    }))
}

/// Record changes in the audit log: `action` by `who` at `now_ms`, one row per
/// `(target, old value)`, each to `new`.
pub fn audit(
    conn: &mut Connection,
    now_ms: i64,
    who: &str,
    action: &str,
    changes: &[(String, String)],
    new: &str,
) -> Result<(), ApiError> {
    let changes: Vec<Change> = changes
        .iter()
        .map(|(target, old)| Change {
            who: who.into(),
            action: action.into(),
            target: target.clone(),
            old: Some(old.clone()),
            new: Some(new.into()),
        })
        .collect();
    Ok(crate::sinks::store::audit::record(conn, now_ms, &changes)?)
}

/// The newest `limit` audit records, newest first.
pub fn audit_log(conn: &Connection, limit: i64) -> Result<Json, ApiError> {
    let mut stmt =
        conn.prepare("SELECT id, at_ms, who, action, target, old, new FROM audit ORDER BY id DESC LIMIT ?1")?;
    let items: Vec<Json> = stmt
        .query_map([limit], |r| {
            let at: i64 = r.get(1)?;
            Ok(json!({
                "id": r.get::<_, i64>(0)?, "at_unix_ms": at, "at": super::db::rfc3339(at),
                "who": r.get::<_, String>(2)?, "action": r.get::<_, String>(3)?, "target": r.get::<_, String>(4)?,
                "old": r.get::<_, Option<String>>(5)?, "new": r.get::<_, Option<String>>(6)?,
            }))
        })?
        .collect::<Result<_, _>>()?;
    Ok(json!({ "items": items }))
}

/// Every label of inspection `id`, oldest first (the last one counts).
pub fn of_inspection(conn: &Connection, id: i64) -> rusqlite::Result<Vec<Json>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, label, class, note, reviewer, reviewed_ms FROM reviews WHERE inspection_id = ?1 ORDER BY id",
    )?;
    stmt.query_map([id], |r| {
        let at: i64 = r.get(5)?;
        Ok(json!({
            "id": r.get::<_, i64>(0)?, "label": r.get::<_, String>(1)?, "class": r.get::<_, Option<String>>(2)?,
            "note": r.get::<_, Option<String>>(3)?, "reviewer": r.get::<_, String>(4)?,
            "reviewed_unix_ms": at, "reviewed_at": super::db::rfc3339(at),
        }))
    })?
    .collect()
}

/// Which parts the review queue lists, besides the time window.
#[derive(Clone, Debug, Default)]
pub struct QueueFilter {
    pub camera: Option<String>,
    pub recipe: Option<String>,
    /// Only parts with a region of this defect class.
    pub class: Option<String>,
    /// `None`: parts nobody labelled yet (the queue); `Some(label)`: parts whose latest label is
    /// this one (to look again at what was labelled).
    pub label: Option<String>,
}

/// What to review next: inspections captured in `[from, to)` that are NG, fail-safe, or OK with
/// an archived image (the archive's sample of OK parts: the only way to find a defect the
/// station missed), not labelled yet (or, with `filter.label`, labelled so). Those with an image
/// score come first, nearest their threshold first (relative distance: the labels that move the
/// operating point most); then the rest (fail-safe, models without an image score), newest first.
pub fn queue(conn: &Connection, from: i64, to: i64, filter: &QueueFilter, limit: i64) -> Result<Json, ApiError> {
    if let Some(label) = &filter.label
        && !LABELS.contains(&label.as_str())
    {
        return Err(ApiError::BadRequest(format!("label = {label:?}: expected one of {}", LABELS.join(", "))));
    }
    let mut stmt = conn.prepare(
        "SELECT i.id, i.camera, i.seq, i.part_id, i.captured_ms, i.verdict, i.failsafe_cause, i.image_score,
                i.threshold, i.image_path IS NOT NULL, i.recipe,
                (SELECT r.label FROM reviews r WHERE r.inspection_id = i.id ORDER BY r.id DESC LIMIT 1),
                (SELECT group_concat(DISTINCT d.class) FROM defects d WHERE d.inspection_id = i.id),
                i.image_path IS NOT NULL AND i.image_score IS NOT NULL AND i.verdict <> 'FAILSAFE' AND i.threshold > 0
         FROM inspections i
         WHERE i.captured_ms >= ?1 AND i.captured_ms < ?2 AND (?3 IS NULL OR i.camera = ?3)
           AND (?5 IS NULL OR i.recipe = ?5)
           AND (?6 IS NULL OR EXISTS (SELECT 1 FROM defects d WHERE d.inspection_id = i.id AND d.class = ?6))
           AND (i.verdict <> 'OK' OR i.image_path IS NOT NULL)
           AND CASE WHEN ?7 IS NULL THEN NOT EXISTS (SELECT 1 FROM reviews r WHERE r.inspection_id = i.id)
                    ELSE (SELECT r.label FROM reviews r WHERE r.inspection_id = i.id ORDER BY r.id DESC LIMIT 1) = ?7 END
         ORDER BY (i.image_score IS NULL OR i.threshold IS NULL),
                  ABS(i.image_score - i.threshold) / MAX(ABS(i.threshold), 1e-9),
                  i.id DESC
         LIMIT ?4",
    )?;
    let f = filter;
    let items: Vec<Json> = stmt
        .query_map(params![from, to, f.camera, limit, f.recipe, f.class, f.label], |r| {
            let (score, threshold): (Option<f64>, Option<f64>) = (r.get(7)?, r.get(8)?);
            let captured: i64 = r.get(4)?;
            let classes: Option<String> = r.get(12)?;
            Ok(json!({
                "id": r.get::<_, i64>(0)?, "camera": r.get::<_, String>(1)?, "seq": r.get::<_, i64>(2)?,
                "part_id": r.get::<_, Option<String>>(3)?, "captured_unix_ms": captured,
                "captured_at": super::db::rfc3339(captured), "verdict": r.get::<_, String>(5)?,
                "failsafe_cause": r.get::<_, Option<String>>(6)?, "image_score": score, "threshold": threshold,
                "margin": score.zip(threshold).map(|(s, t)| (s - t) / t.abs().max(1e-9)),
                "has_image": r.get::<_, bool>(9)?, "recipe": r.get::<_, Option<String>>(10)?,
                "label": r.get::<_, Option<String>>(11)?,
                // Anomaly models' judged parts: the archive keeps their heat map (`?heat=true`).
                "has_heat": r.get::<_, bool>(13)?,
                "classes": classes.map_or_else(Vec::new, |c| c.split(',').map(str::to_string).collect::<Vec<_>>()),
            }))
        })?
        .collect::<Result<_, _>>()?;
    Ok(json!({
        "from_unix_ms": from, "to_unix_ms": to, "camera": f.camera, "recipe": f.recipe, "class": f.class,
        "label": f.label, "items": items,
    }))
}

/// The model an operating point is measured for: the one that judged recipe `recipe`'s newest
/// inspection, else `wanted` (a name, or a sha256 or its prefix of at least 8 digits), else the
/// one that judged the newest inspection. Returns (name, sha256).
fn model(conn: &Connection, wanted: Option<&str>, recipe: Option<&str>) -> Result<(String, String), ApiError> {
    if let Some(recipe) = recipe {
        return conn
            .query_row(
                "SELECT m.name, m.sha256 FROM inspections i JOIN models m ON m.id = i.model_id
                 WHERE i.recipe = ?1 ORDER BY i.id DESC LIMIT 1",
                [recipe],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| ApiError::NotFound(format!("no inspection of recipe {recipe:?} in the store")));
    }
    let found: Option<(String, String)> = match wanted {
        Some(w) => conn
            .query_row(
                "SELECT m.name, m.sha256 FROM models m
                 WHERE m.name = ?1 OR (length(?1) >= 8 AND m.sha256 LIKE ?1 || '%')
                 ORDER BY (SELECT MAX(i.id) FROM inspections i WHERE i.model_id = m.id) DESC LIMIT 1",
                [w],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
        None => conn
            .query_row(
                "SELECT m.name, m.sha256 FROM inspections i JOIN models m ON m.id = i.model_id ORDER BY i.id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
    };
    found.ok_or_else(|| match wanted {
        Some(w) => ApiError::NotFound(format!("no model named {w:?} (or with that sha256) in the store")),
        None => ApiError::NotFound("no inspections in the store yet".into()),
    })
}

/// The latest labels of one model's reviewed inspections (of one recipe, when given): the image
/// scores of the parts labelled defect and good, each sorted, and how many were left out.
pub struct Labelled {
    pub defects: Vec<f64>,
    pub goods: Vec<f64>,
    unsure: u64,
    unscored: u64,
}

pub fn labelled(conn: &Connection, sha256: &str, recipe: Option<&str>) -> Result<Labelled, ApiError> {
    let mut stmt = conn.prepare(
        "SELECT i.image_score, r.label FROM inspections i
         JOIN models m ON m.id = i.model_id
         JOIN reviews r ON r.id = (SELECT MAX(id) FROM reviews WHERE inspection_id = i.id)
         WHERE m.sha256 = ?1 AND (?2 IS NULL OR i.recipe = ?2)",
    )?;
    let mut l = Labelled { defects: Vec::new(), goods: Vec::new(), unsure: 0, unscored: 0 };
    for row in stmt.query_map(params![sha256, recipe], |r| Ok((r.get::<_, Option<f64>>(0)?, r.get::<_, String>(1)?)))? {
        match row? {
            (_, label) if label == "unsure" => l.unsure += 1,
            (None, _) => l.unscored += 1,
            (Some(score), label) if label == "defect" => l.defects.push(score),
            (Some(score), _) => l.goods.push(score),
        }
    }
    l.defects.sort_by(f64::total_cmp);
    l.goods.sort_by(f64::total_cmp);
    Ok(l)
}

/// What a new operating point must meet.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// At most this share of the labelled defects may pass.
    Escape(f64),
    /// At most this share of the labelled goods may be rejected.
    Overkill(f64),
}

/// The threshold that meets `target` on the labelled parts: for an escape target the highest
/// (the least overkill) that passes at most that share of defects; for an overkill target the
/// lowest (the fewest escapes) that rejects at most that share of goods.
pub fn threshold_for(l: &Labelled, target: Target) -> Result<f64, ApiError> {
    match target {
        Target::Escape(x) => {
            if l.defects.is_empty() {
                return Err(ApiError::BadRequest(
                    "no reviewed part of this recipe is labelled defect yet: label some (or use max_overkill)".into(),
                ));
            }
            // The k lowest-scoring defects may pass: the threshold is the next one's score.
            let k = ((x * l.defects.len() as f64).floor() as usize).min(l.defects.len() - 1);
            Ok(l.defects[k])
        }
        Target::Overkill(y) => {
            if l.goods.is_empty() {
                return Err(ApiError::BadRequest(
                    "no reviewed part of this recipe is labelled good yet: label some (or use target_escape)".into(),
                ));
            }
            let m = (y * l.goods.len() as f64).floor() as usize;
            if m >= l.goods.len() {
                return Ok(l.goods[0]);
            }
            // The m highest-scoring goods may be rejected: just above the next one's score.
            let below = l.goods[l.goods.len() - m - 1] as f32;
            Ok(f64::from(crate::eval::metrics::next_up(below)))
        }
    }
}

/// Escape and overkill of the reviewed inspections of one model (of one recipe, when given) at
/// its current threshold (`live`, the running station's, else the newest inspection's) and
/// across thresholds, with 95% Clopper–Pearson intervals at the current one.
pub fn operating_point(
    conn: &Connection,
    wanted_model: Option<&str>,
    recipe: Option<&str>,
    live: Option<f64>,
) -> Result<Json, ApiError> {
    let (name, sha256) = model(conn, wanted_model, recipe)?;
    let Labelled { defects, goods, unsure, unscored } = labelled(conn, &sha256, recipe)?;
    let stored: Option<f64> = conn
        .query_row(
            "SELECT i.threshold FROM inspections i JOIN models m ON m.id = i.model_id
             WHERE m.sha256 = ?1 AND (?2 IS NULL OR i.recipe = ?2) AND i.threshold IS NOT NULL
             ORDER BY i.id DESC LIMIT 1",
            params![sha256, recipe],
            |r| r.get(0),
        )
        .optional()?;
    let threshold = live.or(stored);
    let current = threshold.map(|t| {
        let mut p = point(&defects, &goods, t);
        let (escaped, missed_of) = (defects.partition_point(|s| *s < t), defects.len());
        let (rejected, goods_n) = (goods.len() - goods.partition_point(|s| *s < t), goods.len());
        p["escape_interval"] = interval(escaped, missed_of);
        p["overkill_interval"] = interval(rejected, goods_n);
        p["escaped"] = json!(escaped);
        p["overkilled"] = json!(rejected);
        p
    });
    Ok(json!({
        "model": { "name": name, "sha256": sha256 }, "recipe": recipe,
        "current": current,
        "points": curve(&defects, &goods),
        "defects": defects.len(), "goods": goods.len(), "unsure": unsure, "unscored": unscored,
    }))
}

/// Escape (defects scoring below `t`: passed) and overkill (goods at or above `t`: rejected).
fn point(defects: &[f64], goods: &[f64], t: f64) -> Json {
    let escaped = defects.partition_point(|s| *s < t);
    let rejected = goods.len() - goods.partition_point(|s| *s < t);
    json!({
        "threshold": t,
        "escape_rate": (!defects.is_empty()).then(|| escaped as f64 / defects.len() as f64),
        "overkill_rate": (!goods.is_empty()).then(|| rejected as f64 / goods.len() as f64),
    })
}

/// The curve: one point at each labelled score (at most [`MAX_POINTS`], evenly spread), lowest
/// threshold first.
fn curve(defects: &[f64], goods: &[f64]) -> Vec<Json> {
    let mut thresholds: Vec<f64> = defects.iter().chain(goods).copied().collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let step = thresholds.len().div_ceil(MAX_POINTS).max(1);
    thresholds.iter().step_by(step).map(|t| point(defects, goods, *t)).collect()
}

/// Two-sided 95% Clopper–Pearson interval for `k` of `n` (null when n = 0).
fn interval(k: usize, n: usize) -> Json {
    if n == 0 {
        return Json::Null;
    }
    let upper = clopper_pearson_upper(k, n, 0.975);
    let lower = 1.0 - clopper_pearson_upper(n - k, n, 0.975);
    json!([lower.max(0.0), upper.min(1.0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_count_escapes_below_and_overkill_at_or_above() {
        let defects = [0.4, 0.9, 1.2];
        let goods = [0.1, 0.2, 0.5, 0.9];
        let p = point(&defects, &goods, 0.9);
        assert_eq!(p["escape_rate"], json!(1.0 / 3.0));
        assert_eq!(p["overkill_rate"], json!(0.25));
        let curve = curve(&defects, &goods);
        assert_eq!(curve.len(), 6, "one point per distinct score");
        assert_eq!(curve[0]["escape_rate"], json!(0.0));
        assert_eq!(curve[0]["overkill_rate"], json!(1.0));
    }

    #[test]
    fn intervals_bracket_the_rate() {
        let i = interval(2, 40);
        let (lo, hi) = (i[0].as_f64().unwrap(), i[1].as_f64().unwrap());
        assert!(lo < 0.05 && 0.05 < hi, "{lo} {hi}");
        // Known values for 2/40 (two-sided 95%): [0.0061, 0.1692].
        assert!((lo - 0.0061).abs() < 5e-4 && (hi - 0.1692).abs() < 5e-4, "{lo} {hi}");
        assert_eq!(interval(0, 0), Json::Null);
    }
}
