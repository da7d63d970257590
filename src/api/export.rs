//! `linesight export-reviewed`: the parts operators reviewed, as a data set. Each inspection of
//! one recipe whose latest label is `good` or `defect` and whose image the archive still holds is
//! copied into the MVTec AD layout (`OUT/test/good/`, `OUT/test/<class>/`, the class being the
//! label's, else `defect`), named `<camera>-<seq>-<id>.png`, so `eval --dataset OUT/test` and
//! `teach --defects OUT/test/<class>` use what the line taught.

use anyhow::{Context, Result, bail};
use std::fmt;
use std::path::Path;

/// What an export wrote, and what it could not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub good: usize,
    pub defect: usize,
    /// Labelled parts without an archived image (not sampled, deleted by retention, or never
    /// written).
    pub without_image: usize,
    pub out: String,
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} good and {} defective parts to {}/test ({} labelled parts had no archived image)",
            self.good, self.defect, self.out, self.without_image
        )
    }
}

/// Export recipe `recipe`'s reviewed parts from the store at `db` and the archive at
/// `archive_dir` into `out` (created; refused when it holds anything).
pub fn export_reviewed(db: &Path, archive_dir: &Path, recipe: &str, out: &Path) -> Result<ExportSummary> {
    if out.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} is not empty: export into a new folder (nothing already there is overwritten)", out.display());
    }
    let conn = crate::sinks::store::open_read_only(db)
        .with_context(|| format!("cannot open the result store {} (check [store] path)", db.display()))?;
    let mut stmt = conn.prepare(
        "SELECT i.id, i.camera, i.seq, i.image_path, r.label, r.class FROM inspections i
         JOIN reviews r ON r.id = (SELECT MAX(id) FROM reviews WHERE inspection_id = i.id)
         WHERE i.recipe = ?1 AND r.label IN ('good', 'defect') ORDER BY i.id",
    )?;
    type Row = (i64, String, i64, Option<String>, String, Option<String>);
    let rows: Vec<Row> = stmt
        .query_map([recipe], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut summary = ExportSummary { out: out.display().to_string(), ..Default::default() };
    for (id, camera, seq, image, label, class) in rows {
        let source = image.as_deref().and_then(|rel| crate::sinks::archive::resolve(archive_dir, rel));
        let Some(source) = source.filter(|p| p.is_file()) else {
            summary.without_image += 1;
            continue;
        };
        let folder = match (label.as_str(), class.as_deref()) {
            ("good", _) => crate::eval::dataset::GOOD.to_string(),
            // A defect's class names its folder (never the good one's).
            (_, Some(class)) if crate::sinks::archive::sanitize(class) != crate::eval::dataset::GOOD => {
                crate::sinks::archive::sanitize(class)
            }
            _ => "defect".to_string(),
        };
        let dir = out.join("test").join(&folder);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = format!("{}-{seq}-{id}.png", crate::sinks::archive::sanitize(&camera));
        std::fs::copy(&source, dir.join(&name))
            .with_context(|| format!("copying {} into {}", source.display(), dir.display()))?;
        if label == "good" { summary.good += 1 } else { summary.defect += 1 }
    }
    Ok(summary)
}
