//! How many inference workers and intra-op threads a station runs when its config does not say.
//!
//! The right split depends on the box and on the station, which a serde default cannot see, so
//! the parse leaves `[model] workers` / `intra_threads` at 1 and [`fill_unset`] replaces the ones
//! the file did not set. `make bench-cameras` and `make bench-peer` measured the rule: one camera
//! runs fastest with one worker whose session uses every core (the batcher has no second frame
//! to give a second worker), several cameras with one single-threaded worker per core (each
//! worker's run keeps its core busy; intra-op threads of one session wait on each other between
//! the backbone's small layers). Before, both defaulted to 1, which left every core but one idle.

use super::StationConfig;

/// `(workers, intra_threads)` for `cameras` cameras on `cores` cores when neither is set: one
/// worker per camera up to the core count, and the cores shared out among the workers.
pub fn split(cameras: usize, cores: usize) -> (usize, usize) {
    let cores = cores.max(1);
    let workers = cameras.clamp(1, cores);
    (workers, (cores / workers).max(1))
}

/// Fill `[model] workers` and `intra_threads` that `table` (the parsed file) does not set: both
/// unset follow [`split`]; one set, the other shares out what is left of `cores`.
pub fn fill_unset(config: &mut StationConfig, table: &toml::Table, cores: usize) {
    let model = table.get("model").and_then(toml::Value::as_table);
    let is_set = |key: &str| model.is_some_and(|m| m.contains_key(key));
    let m = &mut config.model;
    match (is_set("workers"), is_set("intra_threads")) {
        (false, false) => (m.workers, m.intra_threads) = split(config.cameras.len(), cores),
        (true, false) => m.intra_threads = (cores / m.workers.max(1)).max(1),
        (false, true) => m.workers = (cores / m.intra_threads.max(1)).clamp(1, config.cameras.len().max(1)),
        (true, true) => {}
    }
}

/// The cores this process may use (cgroup and affinity limits included).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_camera_gets_one_worker_on_every_core() {
        assert_eq!(split(1, 2), (1, 2));
        assert_eq!(split(1, 16), (1, 16));
        assert_eq!(split(0, 4), (1, 4));
    }

    #[test]
    fn several_cameras_get_a_worker_per_core_up_to_one_each() {
        assert_eq!(split(4, 2), (2, 1));
        assert_eq!(split(4, 16), (4, 4));
        assert_eq!(split(3, 16), (3, 5));
        assert_eq!(split(2, 1), (1, 1));
    }

    fn station(cameras: usize, model: &str) -> (StationConfig, toml::Table) {
        let mut text = String::new();
        for i in 0..cameras {
            text += &format!("[[camera]]\nid = \"c{i}\"\n[camera.source]\nkind = \"synthetic\"\n");
        }
        text += &format!("[model]\npackage = \"m\"\n{model}\n");
        (toml::from_str(&text).unwrap(), toml::from_str(&text).unwrap())
    }

    #[test]
    fn a_value_the_file_sets_is_kept_and_the_other_shares_out_the_rest() {
        let (mut cfg, table) = station(4, "workers = 1\n");
        fill_unset(&mut cfg, &table, 8);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (1, 8));

        let (mut cfg, table) = station(4, "intra_threads = 4\n");
        fill_unset(&mut cfg, &table, 8);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (2, 4));

        let (mut cfg, table) = station(1, "intra_threads = 1\n");
        fill_unset(&mut cfg, &table, 8);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (1, 1), "no more workers than cameras");

        let (mut cfg, table) = station(4, "workers = 3\nintra_threads = 3\n");
        fill_unset(&mut cfg, &table, 2);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (3, 3), "both set: the file decides");

        let (mut cfg, table) = station(4, "");
        fill_unset(&mut cfg, &table, 2);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (2, 1));
    }
}
