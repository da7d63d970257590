//! The statistics answer's shape, whatever the store: verdict counts and the defect Pareto per
//! bucket and in total. The station (SQLite) and the hub (PostgreSQL) fill a [`Tally`] from their
//! own tables and answer the same JSON.

use serde_json::{Value as Json, json};
use std::collections::BTreeMap;

pub fn rate(n: i64, total: i64) -> Json {
    if total == 0 { Json::Null } else { json!(n as f64 / total as f64) }
}

pub fn counts(total: i64, ok: i64, ng: i64, failsafe: i64) -> Json {
    json!({
        "inspections": total, "ok": ok, "ng": ng, "failsafe": failsafe,
        "yield": rate(ok, total), "ng_rate": rate(ng, total), "failsafe_rate": rate(failsafe, total),
    })
}

pub fn rfc3339(ms: i64) -> Json {
    chrono::DateTime::from_timestamp_millis(ms).map_or(Json::Null, |t| json!(t.to_rfc3339()))
}

/// Verdict counts (total, OK, NG, fail-safe) and (defects, inspections) per class, per bucket key.
#[derive(Default)]
pub struct Tally {
    pub verdicts: BTreeMap<i64, [i64; 4]>,
    pub classes: BTreeMap<i64, BTreeMap<String, (i64, i64)>>,
}

impl Tally {
    pub fn add(&mut self, key: i64, n: [i64; 4]) {
        let t = self.verdicts.entry(key).or_default();
        for (t, v) in t.iter_mut().zip(n) {
            *t += v;
        }
    }
    pub fn add_class(&mut self, key: i64, class: String, defects: i64, inspections: i64) {
        let c = self.classes.entry(key).or_default().entry(class).or_default();
        (c.0, c.1) = (c.0 + defects, c.1 + inspections);
    }
}

/// The Pareto order: most defects first, then most inspections, then by name (classes without a
/// counted defect left out).
pub fn pareto(list: BTreeMap<String, (i64, i64)>) -> Vec<Json> {
    let mut list: Vec<_> = list.into_iter().filter(|(_, (d, _))| *d > 0).collect();
    list.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(b.1.1.cmp(&a.1.1)).then(a.0.cmp(&b.0)));
    list.into_iter().map(|(class, (d, n))| json!({ "class": class, "defects": d, "inspections": n })).collect()
}

impl Tally {
    /// Totals, the whole Pareto and the buckets (bucket `k` starts at `k * width - shift`), as
    /// `/api/v1/stats` answers them. Totals are the sums of the buckets.
    pub fn into_stats(mut self, shift: i64, width: i64) -> (Json, Vec<Json>, Vec<Json>) {
        let mut all_classes: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for list in self.classes.values() {
            for (class, (d, n)) in list {
                let c = all_classes.entry(class.clone()).or_default();
                (c.0, c.1) = (c.0 + d, c.1 + n);
            }
        }
        let mut total = [0i64; 4];
        let mut buckets = Vec::new();
        for (k, n) in std::mem::take(&mut self.verdicts) {
            if n[0] <= 0 {
                continue;
            }
            for (t, v) in total.iter_mut().zip(n) {
                *t += v;
            }
            let start = k * width - shift;
            let mut b = counts(n[0], n[1], n[2], n[3]);
            b["start_unix_ms"] = json!(start);
            b["start"] = rfc3339(start);
            b["classes"] = json!(pareto(self.classes.remove(&k).unwrap_or_default()));
            buckets.push(b);
        }
        (counts(total[0], total[1], total[2], total[3]), pareto(all_classes), buckets)
    }
}
