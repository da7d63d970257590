//! Archive retention: delete images older than `max_age_days`, then the oldest until the folder
//! holds at most `max_bytes` (down to 90 % of it, so that pruning does not run after every write).
//! A frame's plain, overlay and heat map files go together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the writer thread prunes (also once at start, and whenever the folder outgrows
/// `max_bytes`).
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// One archived frame: its files, their total size, and the oldest modification time.
struct Entry {
    files: Vec<PathBuf>,
    bytes: u64,
    modified: SystemTime,
}

/// Prune `dir` (laid out `date/camera/file.png`) as of `now`; returns the bytes kept.
pub fn prune(dir: &Path, max_bytes: u64, max_age_days: u32, now: SystemTime) -> std::io::Result<u64> {
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    for date in std::fs::read_dir(dir)? {
        let date = date?.path();
        for camera in std::fs::read_dir(&date).into_iter().flatten() {
            for file in std::fs::read_dir(camera?.path()).into_iter().flatten() {
                let file = file?;
                let path = file.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
                let key = match super::frame_stem(name) {
                    Some(stem) => path.with_file_name(stem),
                    None => continue,
                };
                let meta = file.metadata()?;
                let modified = meta.modified().unwrap_or(now);
                let e = entries.entry(key).or_insert(Entry { files: Vec::new(), bytes: 0, modified });
                e.files.push(path);
                e.bytes += meta.len();
                e.modified = e.modified.min(modified);
            }
        }
    }
    let mut list: Vec<(PathBuf, Entry)> = entries.into_iter().collect();
    // Oldest first; the name (camera, zero-padded sequence number) breaks ties.
    list.sort_by(|a, b| (a.1.modified, &a.0).cmp(&(b.1.modified, &b.0)));
    let mut total: u64 = list.iter().map(|(_, e)| e.bytes).sum();
    let cutoff = (max_age_days > 0).then(|| now - Duration::from_secs(86_400 * u64::from(max_age_days)));
    let target = if max_bytes > 0 && total > max_bytes { max_bytes - max_bytes / 10 } else { u64::MAX };
    let mut deleted = 0usize;
    for (_, e) in &list {
        let too_old = cutoff.is_some_and(|c| e.modified < c);
        if !too_old && total <= target {
            break;
        }
        for f in &e.files {
            match std::fs::remove_file(f) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            // Empty camera and date folders go too (removing a non-empty one fails: ignored).
            if let Some(cam) = f.parent() {
                let _ = std::fs::remove_dir(cam);
                let _ = cam.parent().map(std::fs::remove_dir);
            }
        }
        total -= e.bytes;
        deleted += 1;
    }
    if deleted > 0 {
        tracing::info!(dir = %dir.display(), deleted, kept_bytes = total, "image archive: retention deleted old images");
    }
    Ok(total)
}
