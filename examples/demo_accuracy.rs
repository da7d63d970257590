//! Accuracy of the demo station on fresh synthetic parts, through the real pipeline.
//!
//! `cargo run --release --example demo_accuracy -- [PARTS_PER_SURFACE]`
//!
//! Runs the demo station as `make run` does — its taught model (taught first if
//! `demo-data/taught-model` does not exist yet) and its rules — on PARTS_PER_SURFACE parts of each
//! camera (30% defective, as the demo cameras make them; the model was taught on other part
//! numbers of the same cameras, all good), flat out with blocking backpressure so no part is
//! dropped, and compares every verdict with the generator's ground truth: the share of defective
//! parts caught and of good parts rejected, per surface and per defect class.

use linesight::config;
use linesight::pipeline::RecordPort;
use linesight::pipeline::Verdict;
use linesight::synth::{DefectClass, Generator, SynthParams};
use linesight::topology::{RunOptions, Station};

fn main() {
    let parts: u64 = std::env::args().nth(1).map_or(1000, |a| a.parse().expect("PARTS_PER_SURFACE"));
    let project = linesight::config::project_dir();
    // The demo config, with the cameras flat out, never dropping a part, and a verdict deadline of an hour (the most the config allows)
    // (flat out, parts queue longer than the line's deadline; accuracy is the question here).
    let text = config::DEMO_CONFIG
        .replace("fps = 5", "fps = 0\nbackpressure = \"block\"")
        .replace("verdict_deadline_ms = 1000", "verdict_deadline_ms = 3600000");
    let loaded = config::load_str(&text, "demo accuracy", project).unwrap_or_else(|e| panic!("{e}"));
    linesight::teach::ensure_taught(&loaded, false).unwrap_or_else(|e| panic!("{e:#}"));
    let (tx, rx) = crossbeam_channel::unbounded();
    let station = Station::build(
        &loaded,
        RunOptions { max_frames: Some(parts), outputs: vec![RecordPort::results(tx)], ..Default::default() },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    station.run();
    let records: Vec<_> = rx.try_iter().collect();

    println!("| surface | parts | defective | caught | good rejected | scratch | pit | crack | stain |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (index, cam) in loaded.config.cameras.iter().enumerate() {
        let config::SourceConfig::Synthetic(s) = &cam.source else { continue };
        let surface = s.surface.parse().expect("demo surfaces are valid");
        let params = SynthParams {
            width: s.width,
            height: s.height,
            surface,
            defect_probability: s.defect_probability,
            seed: s.seed,
        };
        let mut generator = Generator::new(params).unwrap();
        let n = (s.width * s.height) as usize;
        let (mut px, mut mask) = (vec![0u8; n], vec![0u8; n]);
        let (mut defective, mut caught, mut good, mut overkill) = (0u64, 0u64, 0u64, 0u64);
        let mut by_class = [(0u64, 0u64); 4];
        let mut good_scores = Vec::new();
        for record in records.iter().filter(|r| r.meta.camera as usize == index) {
            assert!(!matches!(record.verdict, Verdict::Failsafe(_)), "fail-safe verdict: {:?}", record.verdict);
            let truth = generator.render(record.meta.seq, &mut px, &mut mask);
            let ng = record.verdict != Verdict::Ok;
            if truth.is_defective() {
                defective += 1;
                caught += ng as u64;
                for d in &truth.defects {
                    let c = &mut by_class[d.class.index()];
                    c.0 += 1;
                    c.1 += ng as u64;
                }
            } else {
                good_scores.push(record.image_score);
                good += 1;
                overkill += ng as u64;
            }
        }
        good_scores.sort_by(f32::total_cmp);
        if std::env::var_os("DEMO_ACCURACY_SCORES").is_some() && !good_scores.is_empty() {
            let q = |f: f64| good_scores[((good_scores.len() - 1) as f64 * f) as usize];
            eprintln!(
                "{}: good part scores p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
                s.surface,
                q(0.5),
                q(0.9),
                q(0.99),
                q(1.0)
            );
        }
        let pct =
            |a: u64, b: u64| if b == 0 { "n/a".to_string() } else { format!("{:.1}%", 100.0 * a as f64 / b as f64) };
        let class = |c: DefectClass| {
            let (n, hit) = by_class[c.index()];
            format!("{} ({n})", pct(hit, n))
        };
        println!(
            "| {} | {} | {defective} | {} ({caught}) | {} ({overkill}) | {} | {} | {} | {} |",
            s.surface,
            defective + good,
            pct(caught, defective),
            pct(overkill, good),
            class(DefectClass::Scratch),
            class(DefectClass::Pit),
            class(DefectClass::Crack),
            class(DefectClass::Stain),
        );
    }
}
