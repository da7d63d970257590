//! Accuracy of the demo station on fresh synthetic parts, through the real pipeline.
//!
//! `cargo run --release --example demo_accuracy -- [PARTS_PER_SURFACE] [SEED]`
//!
//! Runs the demo model and rules on PARTS_PER_SURFACE parts of each surface (30% defective, as
//! the demo cameras make them; seeds not used when the model was tuned) and compares every
//! verdict with the generator's ground truth: the share of defective parts caught and of good
//! parts rejected, per surface and per defect class.

use linesight::config;
use linesight::stages::decide::Verdict;
use linesight::synth::{DefectClass, Generator, Surface, SynthParams};
use linesight::topology::{RunOptions, Station};

fn main() {
    let mut args = std::env::args().skip(1);
    let parts: u64 = args.next().map_or(1000, |a| a.parse().expect("PARTS_PER_SURFACE"));
    let seed: u64 = args.next().map_or(20_251_125, |a| a.parse().expect("SEED"));
    let project = linesight::app::project_dir();
    println!("| surface | parts | defective | caught | good rejected | scratch | pit | crack | stain |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for surface in Surface::ALL {
        let text = config::DEMO_CONFIG.split("[[camera]]").next().unwrap().to_string()
            + &format!(
                "[[camera]]\nid = \"eval\"\nbackpressure = \"block\"\n[camera.source]\nkind = \"synthetic\"\nsurface = \"{}\"\ndefect_probability = 0.3\nseed = {seed}\n",
                surface.name()
            )
            + &config::DEMO_CONFIG[config::DEMO_CONFIG.find("[model]").unwrap()..];
        let loaded = config::load_str(&text, "demo accuracy", project.clone()).unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let station =
            Station::build(&loaded, RunOptions { max_frames: Some(parts), outputs: vec![tx], ..Default::default() })
                .unwrap_or_else(|e| panic!("{e}"));
        station.run();
        let params = SynthParams { width: 480, height: 480, surface, defect_probability: 0.3, seed };
        let mut generator = Generator::new(params).unwrap();
        let (mut px, mut mask) = (vec![0u8; 480 * 480], vec![0u8; 480 * 480]);
        let (mut defective, mut caught, mut good, mut overkill) = (0u64, 0u64, 0u64, 0u64);
        let mut by_class = [(0u64, 0u64); 4];
        for record in rx.try_iter() {
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
                good += 1;
                overkill += ng as u64;
            }
        }
        let pct =
            |a: u64, b: u64| if b == 0 { "n/a".to_string() } else { format!("{:.1}%", 100.0 * a as f64 / b as f64) };
        let class = |c: DefectClass| {
            let (n, hit) = by_class[c.index()];
            format!("{} ({n})", pct(hit, n))
        };
        println!(
            "| {} | {} | {defective} | {} | {} | {} | {} | {} | {} |",
            surface.name(),
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
