//! The result store as the fleet's durable outbox: the publisher reads the rows after the cursor,
//! and moves the cursor only over rows the stream has acknowledged. The cursor lives in the store
//! (`fleet_outbox`), so a restart resumes where the last acknowledgement left off; a row is lost
//! only if the store's retention deletes it before it was sent (watched: [`Lag::near_retention`]).

use super::wire::{Defect, Inspection, OutboxStatus, Verdict};
use crate::sinks::store::{self, Retention};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// Share of the store's retention (rows or age) the unsent rows may reach before the alarm.
pub const NEAR_RETENTION: f64 = 0.8;

pub struct Outbox {
    read: Connection,
    write: Connection,
    uid: String,
    acked: i64,
    retention: Retention,
    site: String,
    station: String,
    /// Recipe → the product it makes (from `[fleet] products`).
    products: std::collections::BTreeMap<String, String>,
}

fn new_uid() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Outbox {
    /// Open the store at `path` (already migrated by the station) as the outbox of `site`/`station`.
    pub fn open(
        path: &Path,
        retention: Retention,
        site: &str,
        station: &str,
        products: &std::collections::BTreeMap<String, String>,
    ) -> rusqlite::Result<Self> {
        let read = store::open_read_only(path)?;
        let write = store::open_for_review(path)?;
        let found: Option<(String, i64)> = write
            .query_row("SELECT store_uid, acked_id FROM fleet_outbox WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (uid, acked) = match found {
            Some(f) => f,
            None => {
                let uid = new_uid();
                write.execute("INSERT INTO fleet_outbox (id, store_uid, acked_id) VALUES (1, ?1, 0)", [&uid])?;
                (uid, 0)
            }
        };
        // A recipe named for several products is reported under the first.
        let mut by_recipe = std::collections::BTreeMap::new();
        for (product, recipe) in products {
            by_recipe.entry(recipe.clone()).or_insert_with(|| product.clone());
        }
        let mut outbox = Self {
            read,
            write,
            uid,
            acked,
            retention,
            site: site.into(),
            station: station.into(),
            products: by_recipe,
        };
        outbox.check_numbering()?;
        Ok(outbox)
    }

    /// A store emptied by retention starts its row ids again from 1: the cursor would skip the
    /// new rows. Then the store gets a new id (so message ids stay unique) and the cursor 0.
    fn check_numbering(&mut self) -> rusqlite::Result<()> {
        let newest = self.newest()?;
        if newest < self.acked {
            let uid = new_uid();
            tracing::warn!(
                old = %self.uid, new = %uid, acked = self.acked, newest,
                "fleet outbox: the store's row ids went back (emptied by retention?); publishing its rows under a new store id"
            );
            self.write.execute("UPDATE fleet_outbox SET store_uid = ?1, acked_id = 0 WHERE id = 1", [&uid])?;
            (self.uid, self.acked) = (uid, 0);
        }
        Ok(())
    }

    pub fn store_uid(&self) -> &str {
        &self.uid
    }

    pub fn acked(&self) -> i64 {
        self.acked
    }

    fn newest(&self) -> rusqlite::Result<i64> {
        self.read.query_row("SELECT COALESCE(MAX(id), 0) FROM inspections", [], |r| r.get(0))
    }

    /// Up to `limit` rows after the cursor, oldest first, as messages stamped `published_ms`.
    pub fn next_batch(&mut self, limit: usize, published_ms: i64) -> rusqlite::Result<Vec<Inspection>> {
        self.check_numbering()?;
        let mut stmt = self.read.prepare_cached(
            "SELECT i.id, i.camera, i.seq, i.part_id, i.captured_ms, i.decided_ms, i.latency_ms, i.verdict, \
             i.failsafe_cause, i.image_score, i.threshold, i.width, i.height, i.mm_per_px, i.defects_truncated, \
             i.recipe, m.name, m.sha256, i.image_path \
             FROM inspections i JOIN models m ON m.id = i.model_id WHERE i.id > ?1 ORDER BY i.id LIMIT ?2",
        )?;
        let mut rows: Vec<Inspection> = stmt
            .query_map(params![self.acked, limit as i64], |r| {
                let verdict = match r.get::<_, String>(7)?.as_str() {
                    "OK" => Verdict::Ok,
                    "NG" => Verdict::Ng,
                    _ => Verdict::Failsafe,
                };
                Ok(Inspection {
                    v: super::wire::VERSION,
                    site: self.site.clone(),
                    station: self.station.clone(),
                    store_uid: self.uid.clone(),
                    row: r.get(0)?,
                    camera: r.get(1)?,
                    seq: r.get(2)?,
                    part_id: r.get(3)?,
                    captured_ms: r.get(4)?,
                    decided_ms: r.get(5)?,
                    latency_ms: r.get(6)?,
                    verdict,
                    failsafe_cause: r.get(8)?,
                    image_score: r.get(9)?,
                    threshold: r.get(10)?,
                    width: r.get(11)?,
                    height: r.get(12)?,
                    mm_per_px: r.get(13)?,
                    defects_truncated: r.get(14)?,
                    product: r.get::<_, Option<String>>(15)?.and_then(|recipe| self.products.get(&recipe).cloned()),
                    recipe: r.get(15)?,
                    model_name: r.get(16)?,
                    model_sha256: r.get(17)?,
                    image_path: r.get(18)?,
                    defects: Vec::new(),
                    published_ms,
                })
            })?
            .collect::<Result<_, _>>()?;
        if let (Some(first), Some(last)) = (rows.first().map(|r| r.row), rows.last().map(|r| r.row)) {
            let mut stmt = self.read.prepare_cached(
                "SELECT inspection_id, class, x, y, w, h, area_px, length_px, width_px, area_mm2, length_mm, width_mm, \
                 max_score, mean_score, counted FROM defects WHERE inspection_id BETWEEN ?1 AND ?2 \
                 ORDER BY inspection_id, idx",
            )?;
            let mut defects = stmt.query(params![first, last])?;
            let mut at = 0;
            while let Some(d) = defects.next()? {
                let id: i64 = d.get(0)?;
                while at < rows.len() && rows[at].row < id {
                    at += 1;
                }
                if at < rows.len() && rows[at].row == id {
                    rows[at].defects.push(Defect {
                        class: d.get(1)?,
                        x: d.get(2)?,
                        y: d.get(3)?,
                        w: d.get(4)?,
                        h: d.get(5)?,
                        area_px: d.get(6)?,
                        length_px: d.get(7)?,
                        width_px: d.get(8)?,
                        area_mm2: d.get(9)?,
                        length_mm: d.get(10)?,
                        width_mm: d.get(11)?,
                        max_score: d.get(12)?,
                        mean_score: d.get(13)?,
                        counted: d.get(14)?,
                    });
                }
            }
        }
        Ok(rows)
    }

    /// The stream acknowledged every row up to `row`: move the cursor (durably).
    pub fn ack(&mut self, row: i64, now_ms: i64) -> rusqlite::Result<()> {
        self.write
            .execute("UPDATE fleet_outbox SET acked_id = ?1, acked_ms = ?2 WHERE id = 1", params![row, now_ms])?;
        self.acked = row;
        Ok(())
    }

    /// How far behind the outbox is, and whether the unsent rows near the store's retention.
    pub fn lag(&self, now_ms: i64) -> rusqlite::Result<OutboxStatus> {
        let newest = self.newest()?;
        let unsent: i64 =
            self.read.query_row("SELECT COUNT(*) FROM inspections WHERE id > ?1", [self.acked], |r| r.get(0))?;
        let oldest: Option<i64> = self
            .read
            .query_row("SELECT captured_ms FROM inspections WHERE id > ?1 ORDER BY id LIMIT 1", [self.acked], |r| {
                r.get(0)
            })
            .optional()?;
        let near_rows = self.retention.max_inspections > 0
            && unsent as f64 >= NEAR_RETENTION * self.retention.max_inspections as f64;
        let near_age = match (self.retention.days, oldest) {
            (days, Some(oldest)) if days > 0 => {
                (now_ms - oldest) as f64 >= NEAR_RETENTION * f64::from(days) * 86_400_000.0
            }
            _ => false,
        };
        Ok(OutboxStatus {
            acked_row: self.acked,
            newest_row: newest,
            unsent,
            oldest_unsent_ms: oldest,
            near_retention: near_rows || near_age,
        })
    }
}
