//! How many inference workers and intra-op threads a station runs, and how large its batches
//! are, when its config does not say.
//!
//! The right split depends on the box and on the station, which a serde default cannot see, so
//! the parse leaves `[model] workers` / `intra_threads` at 1 and `[pipeline] max_batch` at 4 and
//! [`fill_unset`] replaces the ones the file did not set.
//!
//! On the CPU, one single-threaded worker per core, each running one input at a time: intra-op
//! threads of one session wait on each other between the backbone's small layers, and a batch
//! of several 256² inputs grows the intermediate tensors past the caches. `make bench-peer`
//! (one camera, the MTD model) and `make bench-cameras` (four cameras) measured it; one camera
//! keeps every worker busy whenever frames come faster than one worker can take them, which is
//! when throughput matters. Each worker holds its own session (weights and memory arena), so a
//! many-core box gets at most [`MAX_CPU_WORKERS`] workers (more when it has more cameras), each
//! with a share of the cores. A GPU runs one session's batches one after another: there, one
//! worker per camera up to the core count and batches of up to 4, as before.

use super::{Provider, StationConfig};

/// The most CPU workers the rule starts on its own (before counting cameras).
pub const MAX_CPU_WORKERS: usize = 8;

/// The most workers the defaults start, before counting cores: on the CPU
/// [`MAX_CPU_WORKERS`] (or one per camera when there are more), on a GPU one per camera.
fn most_workers(cameras: usize, provider: Provider) -> usize {
    let cameras = cameras.max(1);
    match provider {
        Provider::Cpu => MAX_CPU_WORKERS.max(cameras),
        Provider::Cuda | Provider::Tensorrt => cameras,
    }
}

/// `(workers, intra_threads)` for `cameras` cameras on `cores` cores when neither is set: a
/// worker per core up to [`most_workers`], the cores shared out among them.
pub fn split(cameras: usize, cores: usize, provider: Provider) -> (usize, usize) {
    let cores = cores.max(1);
    let workers = most_workers(cameras, provider).min(cores);
    (workers, (cores / workers).max(1))
}

/// Fill `[model] workers` and `intra_threads` that `table` (the parsed file) does not set: both
/// unset follow [`split`]; one set, the other shares out what is left of `cores`. Then
/// `[pipeline] max_batch`, when unset: 1 for single-threaded CPU workers (see the module; a
/// model with a fixed batch size still gathers that many, `topology::recipes`).
pub fn fill_unset(config: &mut StationConfig, table: &toml::Table, cores: usize) {
    let section = |name: &str| table.get(name).and_then(toml::Value::as_table);
    let is_set = |key: &str| section("model").is_some_and(|m| m.contains_key(key));
    let cameras = config.cameras.len();
    let m = &mut config.model;
    match (is_set("workers"), is_set("intra_threads")) {
        (false, false) => (m.workers, m.intra_threads) = split(cameras, cores, m.provider),
        (true, false) => m.intra_threads = (cores / m.workers.max(1)).max(1),
        (false, true) => {
            m.workers = (cores / m.intra_threads.max(1)).clamp(1, most_workers(cameras, m.provider));
        }
        (true, true) => {}
    }
    let batch_set = section("pipeline").is_some_and(|p| p.contains_key("max_batch"));
    config.pipeline.max_batch_is_default = !batch_set;
    if !batch_set && m.provider == Provider::Cpu && m.intra_threads == 1 {
        config.pipeline.max_batch = 1;
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
    fn on_the_cpu_every_core_gets_a_single_threaded_worker() {
        assert_eq!(split(1, 2, Provider::Cpu), (2, 1));
        assert_eq!(split(0, 4, Provider::Cpu), (4, 1));
        assert_eq!(split(4, 2, Provider::Cpu), (2, 1));
        assert_eq!(split(2, 1, Provider::Cpu), (1, 1));
    }

    #[test]
    fn a_many_core_box_gets_fewer_wider_workers_unless_it_has_more_cameras() {
        assert_eq!(split(1, 16, Provider::Cpu), (8, 2));
        assert_eq!(split(12, 16, Provider::Cpu), (12, 1));
        assert_eq!(split(1, 64, Provider::Cpu), (8, 8));
    }

    #[test]
    fn on_a_gpu_one_worker_per_camera_up_to_the_cores() {
        assert_eq!(split(1, 16, Provider::Cuda), (1, 16));
        assert_eq!(split(4, 2, Provider::Tensorrt), (2, 1));
        assert_eq!(split(3, 16, Provider::Cuda), (3, 5));
    }

    fn station(cameras: usize, model: &str, pipeline: &str) -> (StationConfig, toml::Table) {
        let mut text = String::new();
        for i in 0..cameras {
            text += &format!("[[camera]]\nid = \"c{i}\"\n[camera.source]\nkind = \"synthetic\"\n");
        }
        text += &format!("[model]\npackage = \"m\"\n{model}\n[pipeline]\n{pipeline}\n");
        (toml::from_str(&text).unwrap(), toml::from_str(&text).unwrap())
    }

    #[test]
    fn a_value_the_file_sets_is_kept_and_the_other_shares_out_the_rest() {
        let (mut cfg, table) = station(4, "workers = 1\n", "");
        fill_unset(&mut cfg, &table, 8);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (1, 8));

        let (mut cfg, table) = station(4, "intra_threads = 4\n", "");
        fill_unset(&mut cfg, &table, 8);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (2, 4));

        let (mut cfg, table) = station(1, "intra_threads = 1\n", "");
        fill_unset(&mut cfg, &table, 8);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (8, 1), "CPU workers are not bound to cameras");

        let (mut cfg, table) = station(1, "intra_threads = 1\nprovider = \"cuda\"\n", "");
        fill_unset(&mut cfg, &table, 8);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (1, 1), "GPU: no more workers than cameras");

        let (mut cfg, table) = station(4, "workers = 3\nintra_threads = 3\n", "");
        fill_unset(&mut cfg, &table, 2);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (3, 3), "both set: the file decides");

        let (mut cfg, table) = station(1, "", "");
        fill_unset(&mut cfg, &table, 2);
        assert_eq!((cfg.model.workers, cfg.model.intra_threads), (2, 1));
    }

    #[test]
    fn single_threaded_cpu_workers_run_one_input_at_a_time_unless_the_file_says() {
        let batch = |model: &str, pipeline: &str, cores: usize| {
            let (mut cfg, table) = station(1, model, pipeline);
            fill_unset(&mut cfg, &table, cores);
            cfg.pipeline.max_batch
        };
        assert_eq!(batch("", "", 2), 1);
        assert_eq!(batch("", "max_batch = 8\n", 2), 8, "set: kept");
        assert_eq!(batch("workers = 1\n", "", 2), 4, "a two-threaded worker batches");
        assert_eq!(batch("provider = \"cuda\"\n", "", 1), 4, "a GPU batches");
    }
}
