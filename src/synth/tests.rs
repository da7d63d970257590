use super::*;

fn params(surface: Surface, defect_probability: f64, seed: u64) -> SynthParams {
    SynthParams { width: 480, height: 480, surface, defect_probability, seed }
}

fn render(generator: &mut Generator, index: u64) -> (Vec<u8>, Vec<u8>, SynthTruth) {
    let n = generator.params().pixel_count();
    let (mut pixels, mut mask) = (vec![0; n], vec![0; n]);
    let truth = generator.render(index, &mut pixels, &mut mask);
    (pixels, mask, truth)
}

#[test]
fn a_part_depends_only_on_seed_and_index() {
    for surface in Surface::ALL {
        let mut a = Generator::new(params(surface, 0.5, 7)).unwrap();
        let mut b = Generator::new(params(surface, 0.5, 7)).unwrap();
        // b renders other parts first: part 5 must not notice.
        for i in [9, 0, 3] {
            render(&mut b, i);
        }
        let first = render(&mut a, 5);
        assert_eq!(first, render(&mut b, 5), "{surface}");
        assert_eq!(first, render(&mut a, 5), "{surface}: re-rendering changed the part");
        assert_ne!(first.0, render(&mut a, 6).0, "{surface}: parts 5 and 6 are identical");
        let mut other_seed = Generator::new(params(surface, 0.5, 8)).unwrap();
        assert_ne!(first.0, render(&mut other_seed, 5).0, "{surface}: seed is ignored");
    }
}

#[test]
fn defect_probability_is_respected() {
    for (surface, p) in [(Surface::BrushedMetal, 0.3), (Surface::CeramicTile, 0.7)] {
        let mut generator = Generator::new(params(surface, p, 1)).unwrap();
        let defective = (0..500).filter(|&i| render(&mut generator, i).2.is_defective()).count();
        // 500 parts: the standard deviation is about 10 parts; allow more than 4 of them.
        let expected = 500.0 * p;
        assert!((defective as f64 - expected).abs() < 45.0, "{surface}: {defective} defective of 500 at p = {p}");
    }
    for p in [0.0, 1.0] {
        let mut generator = Generator::new(params(Surface::BrushedMetal, p, 2)).unwrap();
        let defective = (0..50).filter(|&i| render(&mut generator, i).2.is_defective()).count();
        assert_eq!(defective as f64, 50.0 * p);
    }
}

#[test]
fn masks_and_truth_agree() {
    let mut seen = [0usize; 4];
    for surface in Surface::ALL {
        let mut generator = Generator::new(params(surface, 0.5, 3)).unwrap();
        for index in 0..200 {
            let (_, mask, truth) = render(&mut generator, index);
            let marked = mask.iter().filter(|&&m| m != 0).count();
            assert!(mask.iter().all(|&m| m == 0 || m == MASK_DEFECT));
            assert_eq!(marked > 0, truth.is_defective(), "{surface} part {index}");
            assert!(truth.defects.len() <= 3);
            let inside = |x: u32, y: u32, d: &TruthDefect| x >= d.x && x < d.x + d.w && y >= d.y && y < d.y + d.h;
            for (i, &m) in mask.iter().enumerate() {
                let (x, y) = ((i % 480) as u32, (i / 480) as u32);
                if m != 0 {
                    assert!(
                        truth.defects.iter().any(|d| inside(x, y, d)),
                        "{surface} part {index}: mask pixel ({x}, {y}) outside every box"
                    );
                }
            }
            for d in &truth.defects {
                seen[d.class.index()] += 1;
                assert!(d.x + d.w <= 480 && d.y + d.h <= 480, "{d:?}");
                assert!(d.area_px >= 1 && d.area_px <= d.w * d.h, "{d:?}");
                let in_box = mask
                    .iter()
                    .enumerate()
                    .filter(|&(i, &m)| m != 0 && inside((i % 480) as u32, (i / 480) as u32, d))
                    .count();
                assert!(in_box as u32 >= d.area_px.min(1), "{d:?} has no mask pixel");
            }
            let areas: u32 = truth.defects.iter().map(|d| d.area_px).sum();
            assert!(areas as usize >= marked);
        }
    }
    assert!(seen.iter().all(|&n| n > 10), "classes drawn: {seen:?}");
}

#[test]
fn defects_change_the_pixels_under_their_mask() {
    let p = params(Surface::CeramicTile, 1.0, 4);
    let mut good = Generator::new(SynthParams { defect_probability: 0.0, ..p.clone() }).unwrap();
    let mut bad = Generator::new(p).unwrap();
    for index in 0..20 {
        // The same part index draws the same surface, with and without defects, as long as the
        // surface draws come first: compare the two renderings under the mask.
        let (clean, _, _) = render(&mut good, index);
        let (dirty, mask, _) = render(&mut bad, index);
        let (mut sum, mut n) = (0.0, 0.0);
        for ((c, d), m) in clean.iter().zip(&dirty).zip(&mask) {
            if *m != 0 {
                sum += (*c as f64 - *d as f64).abs();
                n += 1.0;
            }
        }
        assert!(sum / n >= 7.0, "part {index}: mean change {} under the mask", sum / n);
    }
}

#[test]
fn bad_params_are_rejected() {
    let ok = params(Surface::BrushedMetal, 0.3, 0);
    assert!(ok.validate().is_ok());
    let small = SynthParams { width: 10, ..ok.clone() };
    assert!(matches!(Generator::new(small), Err(SynthError::Size { .. })));
    for p in [-0.1, 1.5, f64::NAN] {
        let bad = SynthParams { defect_probability: p, ..ok.clone() };
        assert!(matches!(bad.validate(), Err(SynthError::DefectProbability(_))));
    }
    assert_eq!("ceramic_tile".parse::<Surface>(), Ok(Surface::CeramicTile));
    assert!("glass".parse::<Surface>().is_err());
}

#[test]
fn odd_sizes_render() {
    for (width, height) in [(64, 64), (640, 97), (123, 1000)] {
        let p = SynthParams { width, height, surface: Surface::CeramicTile, defect_probability: 1.0, seed: 5 };
        let mut generator = Generator::new(p).unwrap();
        for index in 0..20 {
            let (_, mask, truth) = render(&mut generator, index);
            assert!(truth.is_defective());
            assert!(mask.iter().any(|&m| m != 0));
        }
    }
}

#[test]
fn write_dataset_lays_out_images_masks_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let p = SynthParams { width: 96, height: 64, ..params(Surface::BrushedMetal, 0.5, 6) };
    let summary = write_dataset(dir.path(), 12, &p).unwrap();
    assert_eq!(summary.parts, 12);
    let labels = std::fs::read_to_string(dir.path().join("labels.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = labels.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 12);
    let defective = lines.iter().filter(|l| l["defective"] == true).count();
    assert_eq!(defective as u64, summary.defective);
    let drawn: u64 = summary.defects_by_class.iter().sum();
    let listed: usize = lines.iter().map(|l| l["defects"].as_array().unwrap().len()).sum();
    assert_eq!(drawn, listed as u64);
    let first = &lines[0];
    assert_eq!(first["file"], "images/part_000000.png");
    let image = image::open(dir.path().join("images/part_000000.png")).unwrap().to_luma8();
    assert_eq!(image.dimensions(), (96, 64));
    let mask = image::open(dir.path().join("masks/part_000011.png")).unwrap().to_luma8();
    let mut generator = Generator::new(p).unwrap();
    assert_eq!(mask.as_raw(), &render(&mut generator, 11).1);
}
