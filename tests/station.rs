//! The station end to end through the library API: real synthetic and folder sources, the real
//! demo model in real ONNX Runtime, and the frame accounting that must always add up.

mod common;

use common::*;
use linesight::config;
use linesight::pipeline::RecordPort;
use linesight::pipeline::messages::Inspection;
use linesight::pipeline::{FailsafeCause, Verdict};
use linesight::topology::{RunOptions, Station};
use std::time::Duration;

/// Run a config to completion, returning the per-camera snapshots and every inspection record.
fn run(text: &str, max_frames: Option<u64>) -> (Vec<linesight::pipeline::accounting::CameraSnapshot>, Vec<Inspection>) {
    let loaded = config::load_str(text, "test", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = crossbeam_channel::unbounded();
    let station = Station::build(
        &loaded,
        RunOptions { max_frames, outputs: vec![RecordPort::results(tx)], ..Default::default() },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let accounting = station.run();
    (accounting.snapshot(), rx.try_iter().collect())
}

#[test]
fn every_captured_frame_gets_exactly_one_terminal_state() {
    let (snaps, records) = run(&synthetic_station(0.0, "backpressure = \"block\"", ""), Some(40));
    let s = &snaps[0];
    assert_eq!(s.captured, 40);
    assert_eq!(s.in_flight(), 0, "{s:?}");
    assert_eq!(s.dropped(), 0, "block backpressure loses nothing: {s:?}");
    assert_eq!(records.len() as u64, s.inspected() + s.failsafe());
    let mut seqs: Vec<u64> = records.iter().map(|r| r.meta.seq).collect();
    seqs.sort();
    assert_eq!(seqs, (0..40).collect::<Vec<_>>(), "each frame decided once");
}

#[test]
fn overload_drops_the_oldest_frames_and_the_counts_still_add_up() {
    // A camera as fast as the CPU allows, a queue of one and a single frame in flight: the
    // pipeline cannot keep up, so most frames must be dropped, each counted.
    let (snaps, records) =
        run(&synthetic_station(0.0, "queue_depth = 1\nbackpressure = \"drop_oldest\"", "max_in_flight = 1"), Some(400));
    let s = &snaps[0];
    assert_eq!(s.captured, 400);
    assert!(s.dropped_queue_full > 0, "overload must drop: {s:?}");
    assert_eq!(s.captured, s.inspected() + s.failsafe() + s.dropped(), "{s:?}");
    assert_eq!(records.len() as u64, s.inspected() + s.failsafe());
}

#[test]
fn verdicts_later_than_the_deadline_fail_safe() {
    let (snaps, records) =
        run(&synthetic_station(0.0, "backpressure = \"block\"", "verdict_deadline_ms = 1"), Some(20));
    let s = &snaps[0];
    assert!(s.failsafe_timeout > 0, "a 1 ms deadline cannot be met by 4-tile inference: {s:?}");
    assert_eq!(s.in_flight(), 0);
    assert!(records.iter().any(|r| r.verdict == Verdict::Failsafe(FailsafeCause::Timeout)));
}

#[test]
fn replay_inspects_every_file_in_order_with_part_ids_from_names() {
    let dir = tempfile::tempdir().unwrap();
    let params = linesight::synth::SynthParams {
        width: 300,
        height: 200,
        surface: linesight::synth::Surface::CeramicTile,
        defect_probability: 0.5,
        seed: 3,
    };
    linesight::synth::write_dataset(dir.path(), 12, &params).unwrap();
    let (snaps, records) = run(&folder_station(&dir.path().join("images")), None);
    assert_eq!(snaps[0].captured, 12);
    assert_eq!(snaps[0].inspected(), 12, "{:?}", snaps[0]);
    let mut ids: Vec<String> = records.iter().map(|r| r.meta.part_id.unwrap().to_string()).collect();
    ids.sort();
    assert_eq!(ids.first().unwrap(), "part_000000");
    assert_eq!(ids.last().unwrap(), "part_000011");
    assert!(records.iter().all(|r| r.width == 300 && r.height == 200));
}

#[test]
fn a_corrupt_image_is_counted_and_the_other_files_go_on() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["a.png", "c.png"] {
        std::fs::copy(repo().join("tests/data/folder/part_000000.png"), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("b.png"), b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let (snaps, records) = run(&folder_station(dir.path()), None);
    assert_eq!(snaps[0].capture_errors, 1, "{:?}", snaps[0]);
    assert_eq!(snaps[0].inspected(), 2);
    assert_eq!(records.len(), 2);
}

#[test]
fn the_demo_model_finds_synthetic_defects() {
    // Ground truth comes from the same generator: part k of seed 11 is the frame with seq k.
    let (_, records) = run(&synthetic_station(0.0, "backpressure = \"block\"", ""), Some(200));
    let mut generator = linesight::synth::Generator::new(linesight::synth::SynthParams {
        width: 480,
        height: 480,
        surface: linesight::synth::Surface::BrushedMetal,
        defect_probability: 0.5,
        seed: 11,
    })
    .unwrap();
    let (mut px, mut mask) = (vec![0u8; 480 * 480], vec![0u8; 480 * 480]);
    let (mut caught, mut defective, mut overkill, mut good) = (0, 0, 0, 0);
    for r in &records {
        let truth = generator.render(r.meta.seq, &mut px, &mut mask);
        let ng = r.verdict == Verdict::Ng;
        if truth.is_defective() {
            defective += 1;
            caught += ng as u32;
        } else {
            good += 1;
            overkill += ng as u32;
        }
    }
    let catch_rate = caught as f64 / defective as f64;
    let overkill_rate = overkill as f64 / good as f64;
    assert!(catch_rate >= 0.9, "caught {caught}/{defective}");
    assert!(overkill_rate <= 0.05, "rejected {overkill}/{good} good parts");
}

/// The `Cpus_allowed_list` of each of this process's threads named `infer-N`, by N.
fn inference_thread_cores() -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(n) = comm.trim().strip_prefix("infer-").and_then(|n| n.parse().ok()) else { continue };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(cores) = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) {
            found.push((n, cores.trim().to_string()));
        }
    }
    found.sort();
    found
}

#[test]
fn single_threaded_workers_run_pinned_each_to_a_core_of_its_own() {
    let allowed = linesight::stages::infer::cpu::allowed_cores();
    let workers = allowed.len().min(2);
    let text = synthetic_station(200.0, "backpressure = \"block\"", "")
        .replace("[model]\n", &format!("[model]\nworkers = {workers}\nintra_threads = 1\n"));
    let loaded = config::load_str(&text, "test", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let station = Station::build(&loaded, RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    if linesight::config::available_cores() < allowed.len() {
        eprintln!(
            "NOTE: this process runs under a CPU quota, so its workers are not pinned; only that is checked here"
        );
        assert_eq!(station.worker_cores, None, "a quota's cores are not pinned to");
        return;
    }
    assert_eq!(station.worker_cores, Some(allowed[..workers].to_vec()), "a core each, of those the process may use");
    let stop = station.stop_handle();
    let live = station.accounting();
    let running = std::thread::spawn(move || station.run());
    // Other tests' stations may run in this process too, each worker pinned the same way: every
    // thread called infer-N must be on core N of the allowed list, and ours among them.
    let seen = wait_for(
        Duration::from_secs(30),
        || format!("inference threads pinned, found {:?}", inference_thread_cores()),
        || {
            let found = inference_thread_cores();
            (found.iter().filter(|(n, _)| *n < workers).count() >= workers).then_some(found)
        },
    );
    wait_for(
        Duration::from_secs(30),
        || format!("parts judged: {:?}", live.snapshot()),
        || (live.snapshot()[0].inspected() >= 10).then_some(()),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let accounting = running.join().expect("the station runs to its end");
    for (n, cores) in &seen {
        if *n < workers {
            assert_eq!(cores, &allowed[*n].to_string(), "worker {n} runs on its core alone");
        }
    }
    let s = &accounting.snapshot()[0];
    assert!(s.inspected() > 0, "pinned workers judge parts: {s:?}");
    assert_eq!(s.failsafe(), 0, "{s:?}");
}
