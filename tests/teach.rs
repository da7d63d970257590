//! Teach mode end to end: `linesight teach` on synthetic good parts, the package it writes loaded
//! by `linesight eval` through the real pipeline, determinism, clear errors on bad input, and the
//! scoring graph checked against the Rust nearest-neighbour kernel.

mod common;

use common::{linesight, output, repo};
use linesight::config::InputContrast;
use linesight::teach::backbone::Backbone;
use linesight::teach::knn::Bank;
use linesight::teach::onnx::{self, InputShape, NearestSearch, Scoring};
use linesight::teach::placed::PlacedGaussians;
use linesight::teach::{learn, pca};
use ort::value::TensorRef;
use serde_json::Value;
use std::path::{Path, PathBuf};

const LITE0: &str = "models/backbone-lite0";

/// `linesight synth` parts 0..count of one seed; returns the raw folder and the labels.
fn synth(root: &Path, count: u64, seed: u64) -> (PathBuf, Vec<Value>) {
    let raw = root.join("raw");
    let (ok, out, err) = output(linesight().args(["synth", "--out"]).arg(&raw).args([
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--defect-probability",
        "0.4",
    ]));
    assert!(ok, "synth failed: {out}{err}");
    let labels = std::fs::read_to_string(raw.join("labels.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (raw, labels)
}

/// Teach folder = the good parts among the first `teach_parts`; MVTec-layout test set = the rest.
fn split_parts(root: &Path, raw: &Path, labels: &[Value], teach_parts: usize) -> (PathBuf, PathBuf) {
    let (good_dir, test) = (root.join("good"), root.join("mvtec/test"));
    for dir in [good_dir.clone(), test.join("good"), test.join("defect"), root.join("mvtec/ground_truth/defect")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    for (i, label) in labels.iter().enumerate() {
        let image = raw.join(label["file"].as_str().unwrap());
        let defective = label["defective"].as_bool().unwrap();
        let name = format!("{i:03}");
        match (i < teach_parts, defective) {
            (true, false) => std::fs::copy(&image, good_dir.join(format!("{name}.png"))).map(drop).unwrap(),
            (true, true) => {}
            (false, false) => std::fs::copy(&image, test.join(format!("good/{name}.png"))).map(drop).unwrap(),
            (false, true) => {
                std::fs::copy(&image, test.join(format!("defect/{name}.png"))).unwrap();
                let mask = raw.join(label["mask"].as_str().unwrap());
                std::fs::copy(mask, root.join(format!("mvtec/ground_truth/defect/{name}_mask.png"))).unwrap();
            }
        }
    }
    (good_dir, test)
}

fn teach_cmd(images: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    output(
        linesight()
            .args(["teach", "--images"])
            .arg(images)
            .arg("--out")
            .arg(out)
            .args(["--backbone", &repo().join(LITE0).display().to_string()])
            .args(extra),
    )
}

fn manifest(package: &Path) -> toml::Value {
    toml::from_str(&std::fs::read_to_string(package.join("model.toml")).unwrap()).unwrap()
}

#[test]
fn teach_then_eval_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, labels) = synth(dir.path(), 90, 11);
    let (good, test) = split_parts(dir.path(), &raw, &labels, 50);
    let package = dir.path().join("taught");
    let (ok, out, err) = teach_cmd(
        &good,
        &package,
        &[
            "--input-mode",
            "tile",
            "--grid-stride",
            "8",
            "--blur-sigma",
            "4",
            "--top-fraction",
            "0.001",
            "--coreset-ratio",
            "0.02",
            "--contrast",
            "standardised",
        ],
    );
    assert!(ok, "teach failed:\n{out}\n{err}");
    assert!(out.contains("teach time") && out.contains("peak memory"), "{out}");
    // Without labelled defects the escape printed is the painted marks', said to be a proxy.
    assert!(out.contains("synthetic defects (painted marks, a proxy") && out.contains("--defects DIR"), "{out}");

    // The package is an ordinary anomaly package that records how it was taught.
    let m = manifest(&package);
    assert_eq!(m["task"]["kind"].as_str(), Some("anomaly"));
    assert_eq!(m["input"]["mode"].as_str(), Some("tile"));
    let teach = &m["teach"];
    let (images, held) = (teach["images"].as_integer().unwrap(), teach["holdout_images"].as_integer().unwrap());
    assert_eq!(images as usize, std::fs::read_dir(&good).unwrap().count());
    assert!(held >= 2 && teach["bank_rows"].as_integer().unwrap() > 0);
    // The default bank bound is Lite0's scoring budget (backbone.toml: 1,536 multiply-adds per
    // pixel, i.e. 1,536 rows of 64 dims on the stride-8 grid), and the PCA is fully whitened.
    assert_eq!(teach["max_bank_rows"].as_integer(), Some(1536));
    assert_eq!(teach["pca_whiten"].as_float(), Some(1.0));
    // The threshold is the 99th percentile of the held-out good scores (expected overkill 1%),
    // and the manifest says what it is expected to cost: overkill with its confidence bound, and
    // the escape of synthetic defects painted on the held-out goods.
    let threshold = m["task"]["threshold"].as_float().unwrap();
    let op = &teach["operating_point"];
    assert_eq!(op["threshold"].as_float(), Some(threshold));
    assert!(op["rule"].as_str().unwrap().contains("99th percentile"), "{op}");
    let rejected = teach["holdout_rejected"].as_integer().unwrap();
    assert!(rejected <= 1 && rejected == op["holdout_goods_rejected"].as_integer().unwrap(), "{op}");
    let (overkill, upper) =
        (op["estimated_overkill"].as_float().unwrap(), op["estimated_overkill_upper95"].as_float().unwrap());
    assert!(overkill <= upper && upper < 1.0, "{op}");
    let synthetic = op["synthetic_defects"].as_integer().unwrap();
    assert!(synthetic > held && synthetic <= 2 * held, "{op}");
    let escape = op["estimated_escape_synthetic"].as_float().unwrap();
    assert!((0.0..0.9).contains(&escape), "{op}");
    // --input-mode tile with no --size: one candidate, recorded.
    let recipe = &teach["recipe"];
    assert_eq!(recipe["chosen"].as_str(), Some("tile 256×256 grid 8 standardised"));
    assert_eq!(recipe["candidates"].as_array().unwrap().len(), 1);
    assert_eq!(teach["input_contrast"].as_str(), Some("standardised"));

    // The runtime loads it and it separates fresh parts of the same product.
    let (ok, out, err) =
        output(linesight().args(["eval", "--json", "-", "--model"]).arg(&package).arg("--dataset").arg(&test));
    assert!(ok, "eval failed:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let auroc = report["image_auroc"].as_f64().unwrap();
    assert!(auroc >= 0.9, "image AUROC {auroc} on fresh synthetic parts: {report:#}");
    assert!(report["pixel_auroc"].as_f64().unwrap() > 0.8, "{report:#}");
    assert_eq!(report["threshold"].as_f64().unwrap() as f32, threshold as f32);
    // Eval puts teach's estimate beside what it measured.
    assert_eq!(report["teach_estimate"]["threshold"].as_f64().map(|t| t as f32), Some(threshold as f32));
}

/// Default teach (no --size, no --input-mode): several recipes tried on validation data and the
/// best kept; `--defects` with a broken file and a mask of the wrong size (named, skipped,
/// counted), whose usable defects are then caught at the chosen threshold.
#[test]
fn recipe_search_and_labelled_defects() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, labels) = synth(dir.path(), 70, 5);
    let (good, test) = split_parts(dir.path(), &raw, &labels, 50);
    let defects = dir.path().join("defects");
    std::fs::create_dir_all(defects.join("masks")).unwrap();
    let mut taken = 0;
    for label in labels.iter().filter(|l| l["defective"].as_bool().unwrap()).take(6) {
        let stem = format!("d{taken}");
        std::fs::copy(raw.join(label["file"].as_str().unwrap()), defects.join(format!("{stem}.png"))).unwrap();
        std::fs::copy(raw.join(label["mask"].as_str().unwrap()), defects.join(format!("masks/{stem}_mask.png")))
            .unwrap();
        taken += 1;
    }
    assert_eq!(taken, 6);
    std::fs::write(defects.join("broken.jpg"), b"not a jpeg").unwrap();
    std::fs::copy(defects.join("d0.png"), defects.join("odd.png")).unwrap();
    image::save_buffer(defects.join("masks/odd_mask.png"), &[0u8; 12], 4, 3, image::ExtendedColorType::L8).unwrap();

    let package = dir.path().join("taught");
    let (ok, out, err) = teach_cmd(&good, &package, &["--defects", &defects.display().to_string()]);
    assert!(ok, "teach failed:\n{out}\n{err}");
    assert!(err.contains("broken.jpg") && err.contains("odd.png") && err.contains("4×3"), "{err}");
    assert!(err.contains("2 of 8 file(s) skipped; 6 used"), "{err}");
    assert!(out.contains("of the 6 labelled defects") && !out.contains("painted marks, a proxy"), "{out}");
    let m = manifest(&package);
    let teach = &m["teach"];
    assert_eq!(teach["defect_images"].as_integer(), Some(6));
    let recipe = &teach["recipe"];
    let tried: Vec<&str> =
        recipe["candidates"].as_array().unwrap().iter().map(|c| c["recipe"].as_str().unwrap()).collect();
    // The three input sizes on the stride-16 grid with standardised contrast, then the best of
    // them on the stride-8 grid, with raw contrast, and scored by the places' Gaussians (tried
    // only because labelled defects can judge it).
    assert_eq!(
        tried[..3],
        [
            "resize 160×160 grid 16 standardised",
            "resize 224×224 grid 16 standardised",
            "resize 256×256 grid 16 standardised"
        ],
        "{recipe}"
    );
    assert_eq!(tried.len(), 6, "{recipe}");
    assert!(tried[3].contains("grid 8") && tried[..3].contains(&tried[3].replace("grid 8", "grid 16").as_str()));
    assert!(tried[4].ends_with("raw") && tried[..3].contains(&tried[4].replace("raw", "standardised").as_str()));
    assert!(tried[5].ends_with(" placed") && tried[..3].contains(&tried[5].trim_end_matches(" placed")));
    let chosen = recipe["chosen"].as_str().unwrap();
    assert!(tried.contains(&chosen) && out.contains(chosen) && out.contains("<- chosen"), "{out}");
    assert!(recipe["candidates"][0]["labelled_auroc"].as_float().is_some(), "6 defects take part: {recipe}");
    // The default (256², grid 16, standardised) is kept unless another beat it with confidence.
    let candidates = recipe["candidates"].as_array().unwrap();
    let preferred: Vec<bool> =
        candidates.iter().map(|c| c.get("preferred").and_then(|p| p.as_bool()) == Some(true)).collect();
    assert_eq!(preferred, [false, false, true, false, false, false], "{recipe}");
    assert!(out.contains("(default)") && out.contains("of resamples"), "{out}");
    let beat = |i: usize| candidates[i]["beat_best"].as_float().unwrap();
    assert!(candidates[0].get("beat_best").is_none() && (1..6).all(|i| (0.0..=1.0).contains(&beat(i))), "{recipe}");
    if chosen != tried[2] {
        let i = tried.iter().position(|t| *t == chosen).unwrap();
        assert!(
            beat(2) <= 0.1 || (i > 2 && beat(i) >= 0.9),
            "{chosen} replaced the default without confident evidence: {recipe}"
        );
    }
    let size = chosen.split(' ').nth(1).unwrap().split('×').next().unwrap().parse::<i64>().unwrap();
    assert_eq!(m["input"]["width"].as_integer(), Some(size), "the package feeds what was chosen");
    // With labelled defects, how the map is read is chosen too, on the winner: the default
    // first, then the sharp alternatives, judged by the labelled defects; the package reads its
    // map the chosen way.
    let post: Vec<&str> =
        recipe["post_candidates"].as_array().unwrap().iter().map(|c| c["recipe"].as_str().unwrap()).collect();
    assert_eq!(post, ["blur 16 px, top 5%", "blur 4 px, top 1%", "blur 4 px, top 5%"], "{recipe}");
    let post_chosen = recipe["post_chosen"].as_str().unwrap();
    let read = (teach["blur_sigma_px"].as_float().unwrap(), teach["top_fraction"].as_float().unwrap());
    let want = match post_chosen {
        "blur 16 px, top 5%" => (16.0, 0.05),
        "blur 4 px, top 1%" => (4.0, 0.01),
        "blur 4 px, top 5%" => (4.0, 0.05),
        other => panic!("chose {other}, not a candidate"),
    };
    assert!((read.0 - want.0).abs() < 1e-6 && (read.1 - want.1).abs() < 1e-6, "{post_chosen}: {teach}");
    assert!(out.contains("ways to read the map") && out.contains(post_chosen), "{out}");
    let op = &teach["operating_point"];
    assert_eq!(op["labelled_defects"].as_integer(), Some(6));

    // The labelled defects are caught by the shipped model through the real pipeline.
    let shown = dir.path().join("shown/test");
    std::fs::create_dir_all(shown.join("defect")).unwrap();
    std::fs::create_dir_all(shown.join("good")).unwrap();
    for i in 0..6 {
        std::fs::copy(defects.join(format!("d{i}.png")), shown.join(format!("defect/d{i}.png"))).unwrap();
    }
    for f in std::fs::read_dir(test.join("good")).unwrap().take(3) {
        let f = f.unwrap().path();
        std::fs::copy(&f, shown.join("good").join(f.file_name().unwrap())).unwrap();
    }
    let (ok, out, err) =
        output(linesight().args(["eval", "--json", "-", "--model"]).arg(&package).arg("--dataset").arg(&shown));
    assert!(ok, "eval failed:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["pipeline"]["confusion"]["defective_passed"].as_u64(), Some(0), "{report:#}");
}

/// `count` good 128² parts of `seed` from `linesight synth`; returns their folder.
fn good_parts(root: &Path, count: u32, seed: u64) -> PathBuf {
    let raw = root.join("raw");
    let (ok, out, err) = output(linesight().args(["synth", "--out"]).arg(&raw).args([
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--defect-probability",
        "0",
        "--width",
        "128",
        "--height",
        "128",
    ]));
    assert!(ok, "synth failed: {out}{err}");
    raw.join("images")
}

/// Ten good parts, squashed (fast): the minimum a quick teach needs.
fn ten_good_parts(root: &Path) -> PathBuf {
    good_parts(root, 10, 3)
}

#[test]
fn same_seed_same_model_other_seed_other_model() {
    let dir = tempfile::tempdir().unwrap();
    let images = ten_good_parts(dir.path());
    let sha = |out: &str, seed: &str| {
        let package = dir.path().join(out);
        let (ok, o, e) = teach_cmd(&images, &package, &["--size", "128", "--seed", seed]);
        assert!(ok, "teach failed:\n{o}\n{e}");
        manifest(&package)["sha256"].as_str().unwrap().to_string()
    };
    let a = sha("a", "5");
    assert_eq!(a, sha("b", "5"), "teaching twice with one seed writes the same model.onnx");
    assert_ne!(a, sha("c", "6"), "another seed holds out other images and picks another bank");
}

/// An obviously defective part in the good folder (a good one with a large dark blot) is named,
/// whichever side of the split it lands on; teaching goes on.
#[test]
fn outliers_among_the_goods_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let images = good_parts(dir.path(), 60, 9);
    let first = std::fs::read_dir(&images).unwrap().next().unwrap().unwrap().path();
    let mut blotted = image::open(&first).unwrap().to_luma8();
    for y in 40..70 {
        for x in 30..80 {
            blotted.put_pixel(x, y, image::Luma([10]));
        }
    }
    // Two seeds put it on either side of the split (checked below through the manifest).
    let mut sides = Vec::new();
    for seed in ["1", "3"] {
        blotted.save(images.join("part_zz_blotted.png")).unwrap();
        let package = dir.path().join(format!("m{seed}"));
        let (ok, out, err) = teach_cmd(
            &images,
            &package,
            &["--size", "128", "--input-mode", "resize", "--grid-stride", "16", "--seed", seed],
        );
        assert!(ok, "teach failed:\n{out}\n{err}");
        let named: Vec<&str> = err.lines().filter(|l| l.contains("looks defective")).collect();
        assert_eq!(named.len(), 1, "{err}");
        assert!(named[0].contains("part_zz_blotted.png"), "{err}");
        sides.push(named[0].contains("distance to the other good images"));
    }
    assert_eq!(sides, [true, false], "once among the teach images, once held out");
}

/// A good folder copied from a defect set with each image's (empty) mask beside it: the masks
/// are named and left out, never taught as good parts.
#[test]
fn defect_masks_among_the_goods_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let images = ten_good_parts(dir.path());
    let parts: Vec<PathBuf> = std::fs::read_dir(&images).unwrap().map(|f| f.unwrap().path()).collect();
    for (i, part) in parts.iter().enumerate() {
        let (w, h) = image::image_dimensions(part).unwrap();
        let stem = part.file_stem().unwrap().to_string_lossy().into_owned();
        // MTD's layout (the image as JPEG, its mask as PNG of the same stem) for half, MVTec's
        // `_mask` suffix for the others.
        let mask = if i % 2 == 0 {
            image::open(part).unwrap().to_luma8().save(images.join(format!("{stem}.jpg"))).unwrap();
            std::fs::remove_file(part).unwrap();
            images.join(format!("{stem}.png"))
        } else {
            images.join(format!("{stem}_mask.png"))
        };
        image::GrayImage::new(w, h).save(mask).unwrap();
    }
    let package = dir.path().join("m");
    let (ok, out, err) = teach_cmd(&images, &package, &["--size", "128", "--input-mode", "resize"]);
    assert!(ok, "teach failed:\n{out}\n{err}");
    assert!(err.contains("10 defect mask(s) among the good images left out"), "{err}");
    assert_eq!(manifest(&package)["teach"]["images"].as_integer(), Some(10), "the ten parts, no mask");
}

/// Strip-shaped parts (8:1): the smallest input of their own aspect ratio is too narrow for the
/// map's default blur; it is named and skipped, and teach goes on with the others.
#[test]
fn strips_too_narrow_for_the_blur_are_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    let (ok, out, err) = output(linesight().args(["synth", "--out"]).arg(&raw).args([
        "--count",
        "10",
        "--defect-probability",
        "0",
        "--width",
        "512",
        "--height",
        "64",
    ]));
    assert!(ok, "synth failed: {out}{err}");
    let package = dir.path().join("m");
    let (ok, out, err) = teach_cmd(&raw.join("images"), &package, &[]);
    assert!(ok, "teach failed:\n{out}\n{err}");
    assert!(err.contains("too narrow for the map's blur of 16 px"), "{err}");
    let skipped = manifest(&package)["teach"]["recipe"]["skipped"].as_array().unwrap().len();
    assert!(skipped >= 1, "the narrow candidate is recorded as not tried");
    let tried = manifest(&package)["teach"]["recipe"]["candidates"].to_string();
    assert!(!tried.contains("placed"), "goods only, the places' Gaussians are not tried: {tried}");
}

/// `--scorer placed`: the package scores each patch by the goods' Gaussian at its place (no
/// bank), says so, and has a threshold from its held-out goods; with tiles it is refused, naming
/// the fix.
#[test]
fn the_placed_scorer_can_be_chosen_and_is_refused_for_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let images = ten_good_parts(dir.path());
    let package = dir.path().join("placed");
    let (ok, out, err) = teach_cmd(&images, &package, &["--size", "128", "--scorer", "placed"]);
    assert!(ok, "teach failed:\n{out}\n{err}");
    let m = manifest(&package);
    let teach = &m["teach"];
    assert_eq!(teach["placed"].as_bool(), Some(true), "{teach}");
    assert_eq!(teach["bank_rows"].as_integer(), Some(0), "{teach}");
    assert!(teach["recipe"]["chosen"].as_str().unwrap().ends_with(" placed"), "{teach}");
    assert!(out.contains("a Gaussian of the goods at each place"), "{out}");
    let threshold = m["task"]["threshold"].as_float();
    assert!(threshold.is_some_and(|t| t.is_finite() && t > 0.0), "{m}");

    let (ok, out, err) = teach_cmd(&images, &dir.path().join("t"), &["--input-mode", "tile", "--scorer", "placed"]);
    assert!(!ok, "{out}");
    assert!(err.contains("--scorer placed") && err.contains("--input-mode resize"), "{err}");
}

#[test]
fn the_place_scale_is_measured_recorded_and_can_be_forced() {
    let dir = tempfile::tempdir().unwrap();
    let images = good_parts(dir.path(), 60, 11);
    // Teach into `name` (it must succeed); its stdout and stderr together.
    let taught = |name: &str, args: &[&str]| {
        let (ok, out, err) = teach_cmd(&images, &dir.path().join(name), args);
        assert!(ok, "teach failed:\n{out}\n{err}");
        format!("{out}{err}")
    };
    let structure = |name: &str| {
        let m = manifest(&dir.path().join(name));
        (
            m["teach"]["place_scale"].as_bool().unwrap(),
            m["teach"].get("place_structure").and_then(toml::Value::as_float),
        )
    };
    let whole = ["--size", "128", "--input-mode", "resize"];
    // Auto: measured on the held-out goods and used only from the threshold on.
    let out = taught("auto", &whole);
    let (used, measured) = structure("auto");
    let measured = measured.expect("whole parts: the places' structure is measured");
    assert!(measured.is_finite() && measured >= 0.0);
    assert_eq!(used, measured >= linesight::teach::place_scale::MIN_STRUCTURE, "{measured}");
    assert!(out.contains("places of the grid:"), "{out}");
    // Forced on and off, whatever the places say; the thresholds follow from the scores each
    // model computes, so they differ.
    let out = taught("on", &[&whole[..], &["--place-scale", "on"]].concat());
    assert_eq!(structure("on"), (true, Some(measured)));
    assert!(out.contains("divided by what good parts score there"), "{out}");
    taught("off", &[&whole[..], &["--place-scale", "off"]].concat());
    assert_eq!(structure("off"), (false, Some(measured)), "off: measured and recorded, not used");
    let threshold = |name: &str| manifest(&dir.path().join(name))["task"]["threshold"].as_float().unwrap();
    assert_ne!(threshold("on"), threshold("off"));
    // Tiles have no fixed places: forced on, it is not used, and teach says so.
    let out = taught("tiles", &["--input-mode", "tile", "--size", "64", "--blur-sigma", "4", "--place-scale", "on"]);
    assert_eq!(structure("tiles"), (false, None));
    assert!(out.contains("--place-scale on: not used"), "{out}");
    let (ok, _, err) = teach_cmd(&images, &dir.path().join("bad"), &["--place-scale", "sometimes"]);
    assert!(!ok && err.contains("--place-scale \"sometimes\""), "{err}");
}

#[test]
fn too_few_images_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let images = ten_good_parts(dir.path());
    for f in std::fs::read_dir(&images).unwrap().skip(3) {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out_dir = dir.path().join("m");
    let (ok, _, err) = teach_cmd(&images, &out_dir, &["--size", "128"]);
    assert!(!ok);
    assert!(err.contains("holds 3 image(s)") && err.contains("at least 8"), "{err}");
    assert!(!out_dir.exists(), "no package is written");
}

#[test]
fn unreadable_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let images = ten_good_parts(dir.path());
    std::fs::write(images.join("part_broken.png"), b"not a png at all").unwrap();
    // Whichever split the seed makes, the broken file is met (teach or held out) and named.
    let out_dir = dir.path().join("m");
    let (ok, _, err) = teach_cmd(&images, &out_dir, &["--size", "128"]);
    assert!(!ok);
    assert!(err.contains("part_broken.png") && err.contains("remove or replace"), "{err}");
    assert!(!out_dir.exists(), "no package is written");
}

#[test]
fn bad_options_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let images = ten_good_parts(dir.path());
    let (ok, _, err) = teach_cmd(
        &images,
        &dir.path().join("m"),
        &["--coreset-ratio", "0", "--holdout", "1.5", "--tile-overlap", "300", "--blur-sigma", "0"],
    );
    assert!(!ok);
    assert!(err.contains("--coreset-ratio 0") && err.contains("--holdout 1.5"), "{err}");
    // Teach may tile when the input is not fixed to whole images: tiles of 256² without --size.
    assert!(err.contains("--tile-overlap 300 must be smaller than the tile side 256"), "{err}");
    assert!(err.contains("--blur-sigma 0 must be > 0"), "{err}");
    assert!(!dir.path().join("m").exists(), "no package is written");
}

/// `--precision int8` quantizes the backbone inside teach, on the good parts, and records it in
/// model.toml; `fp32` keeps the float backbone; a backbone that is already an INT8 copy (made
/// beforehand, `[quantization]` in its backbone.toml) is taught on as it is. The copy here is the
/// float graph under the INT8 name and table: what is checked is which package teach composes on.
#[test]
fn int8_precision_quantizes_the_backbone_on_the_good_parts() {
    let dir = tempfile::tempdir().unwrap();
    let images = ten_good_parts(dir.path());
    let teach = |out: &Path, precision: &str, backbone: &Path| {
        let (ok, o, e) = output(
            linesight()
                .args(["teach", "--precision", precision, "--size", "128", "--images"])
                .arg(&images)
                .arg("--out")
                .arg(out)
                .arg("--backbone")
                .arg(backbone),
        );
        assert!(ok, "teach --precision {precision} failed:\n{o}\n{e}");
        (manifest(out)["teach"].clone(), o)
    };
    let float = repo().join(LITE0);
    let (int8, printed) = teach(&dir.path().join("m1"), "int8", &float);
    assert_eq!(int8["backbone"].as_str(), Some("backbone-lite0-int8"));
    assert_eq!(int8["backbone_int8"].as_bool(), Some(true), "model.toml says the backbone was INT8");
    assert!(int8["int8_calibration_inputs"].as_integer().is_some_and(|n| n > 0), "{int8}");
    let bits = if linesight::stages::infer::cpu::has_vnni() { 8 } else { 7 };
    assert_eq!(int8["int8_weight_bits"].as_integer(), Some(bits), "{int8}");
    assert!(printed.contains("backbone backbone-lite0-int8 (INT8, quantized here"), "{printed}");
    // Goods only: no labelled defect to judge how the map is read, so the default reads it.
    assert!(int8["recipe"].get("post_candidates").is_none(), "{int8}");
    assert_eq!((int8["blur_sigma_px"].as_float(), int8["top_fraction"].as_float()), (Some(16.0), Some(0.05)));

    let (fp32, _) = teach(&dir.path().join("m2"), "fp32", &float);
    assert_eq!(fp32["backbone"].as_str(), Some("backbone-lite0"));
    assert!(fp32.get("backbone_int8").is_none_or(|v| v.as_bool() == Some(false)), "{fp32}");

    let copy = dir.path().join("backbone-lite0-int8");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(float.join("model.onnx"), copy.join("model.onnx")).unwrap();
    let toml = std::fs::read_to_string(float.join("backbone.toml")).unwrap();
    let toml = toml.replacen("name = \"backbone-lite0\"", "name = \"backbone-lite0-int8\"", 1)
        + "\n[quantization]\nformat = \"QDQ static\"\n";
    std::fs::write(copy.join("backbone.toml"), toml).unwrap();
    let (as_is, _) = teach(&dir.path().join("m3"), "int8", &copy);
    assert_eq!(as_is["backbone"].as_str(), Some("backbone-lite0-int8"));
    assert!(as_is.get("int8_calibration_inputs").is_none(), "the copy is not quantized again: {as_is}");
}

/// Teach's INT8 backbone (`teach::int8`), calibrated on good parts: on other good parts its patch
/// features stay close to the float backbone's — closer with 8-bit weights than with 7 — and ONNX
/// Runtime runs every quantized convolution as an integer kernel (QLinearConv), which is where
/// the speed comes from.
#[test]
fn the_int8_backbone_stays_close_to_the_float_one_and_runs_integer_kernels() {
    use linesight::teach::int8::{self, WeightBits};
    let dir = tempfile::tempdir().unwrap();
    let images = good_parts(dir.path(), 16, 21);
    let shape = InputShape { channels: 3, height: 128, width: 128, contrast: InputContrast::Standardised };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&images).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let tensor = |paths: &[PathBuf]| -> Vec<f32> {
        let mut out = Vec::new();
        for p in paths {
            let gray = image::open(p).unwrap().to_luma32f();
            assert_eq!(gray.dimensions(), (128, 128));
            for _ in 0..3 {
                out.extend_from_slice(gray.as_raw());
            }
        }
        out
    };
    let (calibration, held_out) = (tensor(&files[..10]), tensor(&files[10..]));
    let float = Backbone::load(&repo().join(LITE0)).unwrap();
    let features = |backbone: &Backbone| -> Vec<f32> {
        let graph = onnx::feature_graph(backbone, shape, 8).unwrap();
        let mut session = learn::session_from_bytes(&graph, 2).unwrap();
        let n = held_out.len() / (3 * 128 * 128);
        let t = TensorRef::from_array_view(([n, 3, 128, 128], &held_out[..])).unwrap();
        let out = session.run(ort::inputs![onnx::INPUT => t]).unwrap();
        out[onnx::PATCHES].try_extract_tensor::<f32>().unwrap().1.to_vec()
    };
    let reference = features(&float);
    let dim = float.feature_dim();
    // Mean relative distance of each patch's feature vector to the float one's.
    let error = |bits: WeightBits| -> (f64, Backbone) {
        let (q, report) = int8::quantize(&float, shape, &calibration, bits, 2).unwrap();
        assert_eq!(report.calibration_inputs, 10);
        assert!(q.int8 && q.name == "backbone-lite0-int8");
        let got = features(&q);
        let e = got
            .chunks_exact(dim)
            .zip(reference.chunks_exact(dim))
            .map(|(a, b)| {
                let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                let n: f32 = b.iter().map(|y| y * y).sum();
                (d / n).sqrt() as f64
            })
            .sum::<f64>()
            / (reference.len() / dim) as f64;
        (e, q)
    };
    let (eight, q8) = error(WeightBits::Eight);
    let (seven, _) = error(WeightBits::Seven);
    eprintln!("INT8 patch features against FP32: mean relative error {eight:.4} (8-bit weights), {seven:.4} (7-bit)");
    assert!(seven < 0.15, "7-bit weights: features {seven:.4} away from the float ones");
    if linesight::stages::infer::cpu::has_vnni() {
        assert!(eight < 0.10, "8-bit weights: features {eight:.4} away from the float ones");
        assert!(eight < seven, "8-bit weights ({eight:.4}) no closer than 7-bit ({seven:.4})");
    } else {
        // ONNX Runtime's kernels saturate on 8-bit weights here (the reason teach uses 7 bits on
        // such CPUs), so only the 7-bit copy is judged.
        eprintln!("NOTE: this CPU has no VNNI-class instructions: the 8-bit INT8 backbone is not judged here");
    }

    // What ONNX Runtime makes of the INT8 graph: integer convolutions, all but the float prefix.
    let kernels = |model: &[u8]| -> std::collections::HashMap<String, usize> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("optimised.onnx");
        let env = linesight::stages::infer::runtime::environment().unwrap();
        let session = ort::session::Session::builder(env)
            .unwrap()
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
            .unwrap()
            .with_optimized_model_path(&path)
            .unwrap()
            .commit_from_memory(model)
            .unwrap();
        drop(session);
        use protobuf::Message;
        let m = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
        let mut count = std::collections::HashMap::new();
        for n in &m.graph.node {
            *count.entry(n.op_type.clone()).or_insert(0) += 1;
        }
        count
    };
    let float_ops = kernels(&float.onnx_bytes);
    let float_convs = float_ops.get("Conv").copied().unwrap_or(0) + float_ops.get("FusedConv").copied().unwrap_or(0);
    let int8_ops = kernels(&q8.onnx_bytes);
    let integer = int8_ops.get("QLinearConv").copied().unwrap_or(0);
    assert_eq!(integer + 2, float_convs, "all but the stem and the first depthwise convolution: {int8_ops:?}");
}

/// Gray parts are fed on one channel, the backbone's colour normalisation folded into its stem
/// (`onnx::gray`): away from the bottom and right edges, where the stem's padding differs, the
/// features equal those of the gray image repeated on three channels. Teach writes a one-channel
/// model for gray parts and a three-channel one for colour parts.
#[test]
fn gray_parts_are_fed_on_one_channel() {
    let size = 128;
    let stride = 8;
    let g = size / stride;
    let image: Vec<f32> = (0..size * size)
        .map(|i| 0.5 + 0.4 * ((i % size) as f32 * 0.11).sin() * ((i / size) as f32 * 0.05 + 0.3).cos())
        .collect();
    let repeated: Vec<f32> = image.iter().cycle().take(3 * size * size).copied().collect();
    for dir in [LITE0, "models/backbone-lite2"] {
        let backbone = Backbone::load(&repo().join(dir)).unwrap();
        assert!(onnx::gray_input_supported(&backbone), "{dir}");
        let features = |channels: usize, x: &[f32]| -> Vec<f32> {
            let shape = InputShape { channels, height: size, width: size, contrast: InputContrast::Standardised };
            let graph = onnx::feature_graph(&backbone, shape, stride).unwrap();
            let mut session = learn::session_from_bytes(&graph, 1).unwrap();
            let t = TensorRef::from_array_view(([1usize, channels, size, size], x)).unwrap();
            let out = session.run(ort::inputs![onnx::INPUT => t]).unwrap();
            out[onnx::PATCHES].try_extract_tensor::<f32>().unwrap().1.to_vec()
        };
        let (one, three) = (features(1, &image), features(3, &repeated));
        assert_eq!(one.len(), three.len());
        let dim = backbone.feature_dim();
        let largest = three.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mut inner = 0.0f32;
        let (mut diff2, mut norm2) = (0.0f64, 0.0f64);
        for cell in 0..g * g {
            let (y, x) = (cell / g, cell % g);
            for k in 0..dim {
                let (a, b) = (one[cell * dim + k], three[cell * dim + k]);
                diff2 += f64::from(a - b).powi(2);
                norm2 += f64::from(b).powi(2);
                if y < g / 2 && x < g / 2 {
                    inner = inner.max((a - b).abs());
                }
            }
        }
        assert!(inner < 0.01 * largest, "{dir}: top-left features differ by {inner} (largest {largest})");
        let relative = (diff2 / norm2).sqrt();
        assert!(relative < 0.04, "{dir}: features differ by {relative} overall");
    }

    let dir = tempfile::tempdir().unwrap();
    let gray = ten_good_parts(dir.path());
    let colour = dir.path().join("colour");
    std::fs::create_dir_all(&colour).unwrap();
    for entry in std::fs::read_dir(&gray).unwrap() {
        let path = entry.unwrap().path();
        let luma = image::open(&path).unwrap().to_luma8();
        let rgb = image::RgbImage::from_fn(luma.width(), luma.height(), |x, y| {
            let v = luma.get_pixel(x, y)[0];
            image::Rgb([v, v / 2, 255 - v])
        });
        rgb.save(colour.join(path.with_extension("png").file_name().unwrap())).unwrap();
    }
    for (images, channels) in [(&gray, 1), (&colour, 3)] {
        let package = dir.path().join(format!("m{channels}"));
        let (ok, o, e) = teach_cmd(images, &package, &["--size", "128"]);
        assert!(ok, "teach failed:\n{o}\n{e}");
        assert_eq!(manifest(&package)["input"]["channels"].as_integer(), Some(channels), "{}", images.display());
    }
}

/// Bilinear ×f upsample with half-pixel centres (ONNX Resize `linear`, `half_pixel`; edges clamp).
fn upsample(grid: &[f32], gh: usize, gw: usize, f: usize) -> Vec<f32> {
    let (h, w) = (gh * f, gw * f);
    let coord = |o: usize, n: usize| {
        let x = ((o as f32 + 0.5) / f as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i = x.floor() as usize;
        (i, (i + 1).min(n - 1), x - i as f32)
    };
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        let (y0, y1, wy) = coord(y, gh);
        for x in 0..w {
            let (x0, x1, wx) = coord(x, gw);
            let top = grid[y0 * gw + x0] * (1.0 - wx) + grid[y0 * gw + x1] * wx;
            let bottom = grid[y1 * gw + x0] * (1.0 - wx) + grid[y1 * gw + x1] * wx;
            out[y * w + x] = top * (1.0 - wy) + bottom * wy;
        }
    }
    out
}

/// Separable Gaussian blur with reflect padding (ONNX Pad `reflect`: the edge is not repeated).
fn blur_reflect(map: &[f32], h: usize, w: usize, sigma: f32) -> Vec<f32> {
    let k = onnx::gaussian_kernel(sigma);
    let r = (k.len() / 2) as i64;
    let reflect = |i: i64, n: usize| -> usize {
        let n = n as i64;
        (if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        }) as usize
    };
    let mut along_x = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            along_x[y * w + x] =
                k.iter().enumerate().map(|(j, kj)| kj * map[y * w + reflect(x as i64 + j as i64 - r, w)]).sum();
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] =
                k.iter().enumerate().map(|(j, kj)| kj * along_x[reflect(y as i64 + j as i64 - r, h) * w + x]).sum();
        }
    }
    out
}

/// The scoring graph (PCA, the bank as a Gemm, minimum, square root, map blur and upsampling,
/// score) gives what the Rust kernels give: with the score as the map's maximum, the score equals
/// the maximum of the Rust nearest-neighbour distances blurred and upsampled the same way, and so
/// does the map; and a part scored against a bank of its own patches scores 0.
#[test]
fn scoring_graph_matches_the_rust_kernels() {
    // On the finest tap's grid (stride 8: the coarser tap upsampled) and on the coarser one
    // (stride 16: the finer tap pooled), with a blur too narrow to matter, and with a blur of one
    // cell, which the graph applies on the patch grid before upsampling.
    // Then with the local-density normalisation (each distance divided by its nearest bank row's
    // local scale), with a whitened PCA (the default projection), and with a learned distance
    // correction (each patch's distance plus c·z). Stride 8's 256 bank rows are searched in two
    // blocks; 200 of them in two blocks, the second padded.
    let case = GraphCase { stride: 8, blur: 0.05, local: false, whiten: 0.0, corrected: false, bank_rows: None };
    for case in [
        case,
        GraphCase { stride: 16, ..case },
        GraphCase { stride: 16, blur: 16.0, ..case },
        GraphCase { local: true, ..case },
        GraphCase { local: true, bank_rows: Some(200), ..case },
        GraphCase { stride: 16, blur: 16.0, local: true, ..case },
        GraphCase { stride: 16, blur: 16.0, local: true, whiten: 1.0, ..case },
        GraphCase { corrected: true, ..case },
        GraphCase { stride: 16, blur: 16.0, local: true, whiten: 1.0, corrected: true, ..case },
    ] {
        scoring_graph_matches_on_grid(case, NearestSearch::Exact);
    }
}

/// The int8 search (models on an INT8 backbone) finds each patch's nearest row or one a little
/// farther, and reports that row's true distance: without local scales the graph's map is never
/// below the exact one; with them (the row found brings its own scale) it stays close to it; and a
/// part against its own patches still scores near 0.
#[test]
fn the_int8_search_never_scores_below_the_exact_one() {
    let case = GraphCase { stride: 8, blur: 0.05, local: true, whiten: 1.0, corrected: false, bank_rows: None };
    for case in [
        case,
        GraphCase { bank_rows: Some(200), ..case },
        GraphCase { local: false, ..case },
        GraphCase { stride: 16, blur: 16.0, ..case },
    ] {
        scoring_graph_matches_on_grid(case, NearestSearch::Int8);
    }
}

/// The scoring graph with the places' Gaussians gives each patch the Rust reference's distance
/// (`PlacedGaussians::distances`) on the grid, and the image score is the map's maximum of them.
#[test]
fn placed_scoring_graph_matches_the_rust_reference() {
    let backbone = Backbone::load(&repo().join(LITE0)).unwrap();
    let (size, stride) = (128, 16);
    let shape = InputShape { channels: 3, height: size, width: size, contrast: InputContrast::Standardised };
    let dim = backbone.feature_dim();
    let grid = size / stride;
    let image = |phase: f32| smooth_image(size, phase);
    let mut patches = patch_rows(&backbone, shape, stride);
    let goods: Vec<f32> = (0..4).flat_map(|k| patches(&image(0.3 * k as f32))).collect();
    let mut fitted = pca::fit(&goods, dim, 8, 10_000, 0).unwrap();
    fitted.whiten(1.0);
    let z = fitted.project(&goods).unwrap();
    let placed = PlacedGaussians::fit(&z, 4, grid, grid, fitted.dims).unwrap();
    let scoring = Scoring {
        mean: &fitted.mean,
        projection: &fitted.components,
        bank: &[],
        grid_stride: stride,
        blur_sigma_px: 0.05,
        top_fraction: 1.0 / (size * size) as f32,
        local_scale: None,
        correction: None,
        search: NearestSearch::Exact,
        grid_scores: true,
        placed: Some(&placed),
        place_scale: None,
    };
    let model = onnx::scoring_model(&backbone, shape, &scoring).unwrap();
    let mut scorer = learn::session_from_bytes(&model, 1).unwrap();
    let probe = image(2.1);
    let t = TensorRef::from_array_view(([1usize, 3, size, size], &probe[..])).unwrap();
    let out = scorer.run(ort::inputs![onnx::INPUT => t]).unwrap();
    let score = out[onnx::SCORE].try_extract_tensor::<f32>().unwrap().1[0];
    let on_grid = out[onnx::GRID_SCORES].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let want = placed.distances(&fitted.project(&patches(&probe)).unwrap());
    assert_eq!(on_grid.len(), grid * grid);
    for (got, want) in on_grid.iter().zip(&want) {
        assert!((got - want).abs() <= 1e-3 * want.max(1.0), "graph {got} against reference {want}");
    }
    let max = want.iter().fold(f32::MIN, |m, &v| m.max(v));
    assert!(max > 1.0 && (score - max).abs() <= 1e-3 * max, "image score {score} against the grid's maximum {max}");
    // A misfitted grid is refused with what was expected.
    let other = InputShape { height: 96, ..shape };
    let err = onnx::scoring_model(&backbone, other, &scoring).unwrap_err();
    assert!(err.contains("8×8 grid"), "{err}");

    // The places' scale: each place's patch score divided by it before the map (the grid scores
    // stay as they were, what teach measures the scale on), and the post-processing graph given
    // the same scale reads those grid scores to the same image score, as teach's rescoring does.
    let hot = on_grid.iter().enumerate().fold(0, |best, (i, &v)| if v > on_grid[best] { i } else { best });
    let mut scale = vec![1.0f32; grid * grid];
    scale[hot] = 4.0;
    let scaled = Scoring { place_scale: Some(&scale), ..scoring };
    let model = onnx::scoring_model(&backbone, shape, &scaled).unwrap();
    let mut scorer = learn::session_from_bytes(&model, 1).unwrap();
    let t = TensorRef::from_array_view(([1usize, 3, size, size], &probe[..])).unwrap();
    let out = scorer.run(ort::inputs![onnx::INPUT => t]).unwrap();
    let scaled_score = out[onnx::SCORE].try_extract_tensor::<f32>().unwrap().1[0];
    assert_eq!(out[onnx::GRID_SCORES].try_extract_tensor::<f32>().unwrap().1, &on_grid[..]);
    let want: f32 = on_grid.iter().zip(&scale).map(|(v, s)| v / s).fold(f32::MIN, f32::max);
    assert!(want < max && (scaled_score - want).abs() <= 1e-3 * want, "scaled score {scaled_score}, want {want}");
    let post = onnx::post_model(&backbone, shape, stride, 0.05, 1.0 / (size * size) as f32, Some(&scale)).unwrap();
    let mut post = learn::session_from_bytes(&post, 1).unwrap();
    let t = TensorRef::from_array_view(([1usize, 1, grid, grid], &on_grid[..])).unwrap();
    let out = post.run(ort::inputs![onnx::GRID_SCORES => t]).unwrap();
    assert_eq!(out[onnx::SCORE].try_extract_tensor::<f32>().unwrap().1[0], scaled_score);
    // A scale of the wrong size, or with a zero, is refused.
    let short = Scoring { place_scale: Some(&scale[1..]), ..scoring };
    assert!(onnx::scoring_model(&backbone, shape, &short).unwrap_err().contains("place scales"));
    scale[0] = 0.0;
    let zero = Scoring { place_scale: Some(&scale), ..scoring };
    assert!(onnx::scoring_model(&backbone, shape, &zero).unwrap_err().contains("finite and > 0"));
}

/// A smooth 3-channel test image of `size`², different for each `phase`.
fn smooth_image(size: usize, phase: f32) -> Vec<f32> {
    (0..3 * size * size)
        .map(|i| 0.5 + 0.4 * ((i % size) as f32 * 0.07 + (i / size) as f32 * 0.03 + phase).sin())
        .collect()
}

/// The feature graph's patch rows of one 3-channel input of `shape`, on the grid of `stride`.
fn patch_rows(backbone: &Backbone, shape: InputShape, stride: usize) -> impl FnMut(&[f32]) -> Vec<f32> {
    let features = onnx::feature_graph(backbone, shape, stride).unwrap();
    let mut session = learn::session_from_bytes(&features, 1).unwrap();
    move |x: &[f32]| {
        let t = TensorRef::from_array_view(([1usize, 3, shape.height, shape.width], x)).unwrap();
        let out = session.run(ort::inputs![onnx::INPUT => t]).unwrap();
        out[onnx::PATCHES].try_extract_tensor::<f32>().unwrap().1.to_vec()
    }
}

#[derive(Clone, Copy, Debug)]
struct GraphCase {
    stride: usize,
    blur: f32,
    local: bool,
    whiten: f64,
    corrected: bool,
    /// Keep only the first rows of the bank (a block left part-empty).
    bank_rows: Option<usize>,
}

/// Brute force: each query's distance to its nearest bank row, divided by that row's scale.
fn scaled_nearest(queries: &[f32], bank: &[f32], dims: usize, scales: &[f32]) -> Vec<f32> {
    queries
        .chunks_exact(dims)
        .map(|q| {
            let (best, d2) = bank
                .chunks_exact(dims)
                .map(|b| q.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>())
                .enumerate()
                .fold((0, f32::INFINITY), |m, (i, d)| if d < m.1 { (i, d) } else { m });
            d2.sqrt() / scales[best]
        })
        .collect()
}

fn scoring_graph_matches_on_grid(case: GraphCase, search: NearestSearch) {
    let GraphCase { stride, blur, local, whiten, corrected, bank_rows } = case;
    let backbone = Backbone::load(&repo().join(LITE0)).unwrap();
    let size = 128;
    // Standardised contrast, the default: the graph's first nodes are then part of the check.
    let shape = InputShape { channels: 3, height: size, width: size, contrast: InputContrast::Standardised };
    let dim = backbone.feature_dim();
    let grid = size / stride;
    // Two different smooth images.
    let image = |phase: f32| smooth_image(size, phase);
    let (a, b) = (image(0.0), image(1.3));
    let mut patches = patch_rows(&backbone, shape, stride);
    let (pa, pb) = (patches(&a), patches(&b));
    assert_eq!(pa.len(), grid * grid * dim);

    let mut fitted = pca::fit(&pa, dim, 16, 10_000, 0).unwrap();
    fitted.whiten(whiten);
    let mut bank_a = fitted.project(&pa).unwrap();
    if let Some(rows) = bank_rows {
        bank_a.truncate(rows * fitted.dims);
    }
    let scales = local.then(|| Bank::new(bank_a.clone(), fitted.dims).unwrap().local_scales(3, 1).unwrap());
    let correction: Vec<f32> = (0..fitted.dims).map(|k| 0.05 * ((k as f32) * 1.7).sin()).collect();
    let scoring = Scoring {
        mean: &fitted.mean,
        projection: &fitted.components,
        bank: &bank_a,
        grid_stride: stride,
        blur_sigma_px: blur,
        top_fraction: 1.0 / (size * size) as f32,
        local_scale: scales.as_deref(),
        correction: corrected.then_some(correction.as_slice()),
        search,
        grid_scores: true,
        placed: None,
        place_scale: None,
    };
    let model = onnx::scoring_model(&backbone, shape, &scoring).unwrap();
    let mut scorer = learn::session_from_bytes(&model, 1).unwrap();
    let mut score = |x: &[f32]| -> (f32, Vec<f32>, Vec<f32>) {
        let t = TensorRef::from_array_view(([1usize, 3, size, size], x)).unwrap();
        let out = scorer.run(ort::inputs![onnx::INPUT => t]).unwrap();
        let s = out[onnx::SCORE].try_extract_tensor::<f32>().unwrap().1[0];
        let grid = out[onnx::GRID_SCORES].try_extract_tensor::<f32>().unwrap().1.to_vec();
        (s, out[onnx::MAP].try_extract_tensor::<f32>().unwrap().1.to_vec(), grid)
    };

    let (self_score, self_map, grid_a) = score(&a);
    assert_eq!(self_map.len(), size * size);
    let own = if search == NearestSearch::Exact { 2e-2 } else { 0.25 };
    assert!(
        corrected || bank_rows.is_some() || self_score.abs() < own,
        "{case:?}: a part against its own patches scores {self_score}"
    );

    let bank = Bank::new(bank_a.clone(), fitted.dims).unwrap();
    let queries = fitted.project(&pb).unwrap();
    let mut nearest = match &scales {
        Some(scales) => scaled_nearest(&queries, &bank_a, fitted.dims, scales),
        None => bank.nearest_distances(&queries).unwrap(),
    };
    if corrected {
        for (d, z) in nearest.iter_mut().zip(queries.chunks_exact(fitted.dims)) {
            *d += correction.iter().zip(z).map(|(c, v)| c * v).sum::<f32>();
        }
    }
    let reference = if onnx::blurs_on_grid(blur, stride) {
        upsample(&blur_reflect(&nearest, grid, grid, blur / stride as f32), grid, grid, stride)
    } else {
        upsample(&nearest, grid, grid, stride)
    };
    let want = reference.iter().fold(f32::MIN, |m, &v| m.max(v));
    let (got, map, grid_scores) = score(&b);
    assert!(want > 0.1, "the two images differ: reference max {want}");
    let tol = 2e-3 * want.max(1.0);
    // The post-processing alone, on the model's own patch scores, gives the model's score and
    // map: what teach's search over the map's smoothing relies on.
    let post = onnx::post_model(&backbone, shape, stride, blur, 1.0 / (size * size) as f32, None).unwrap();
    let mut post = learn::session_from_bytes(&post, 1).unwrap();
    // Both images as one batch, as an image's tiles are fed: each item its own score and map.
    let both = [grid_a.as_slice(), grid_scores.as_slice()].concat();
    let t = TensorRef::from_array_view(([2usize, 1, grid, grid], &both[..])).unwrap();
    let out = post.run(ort::inputs![onnx::GRID_SCORES => t]).unwrap();
    let scores = out[onnx::SCORE].try_extract_tensor::<f32>().unwrap().1.to_vec();
    assert_eq!(scores, [self_score, got], "{case:?}: post-processing scores");
    let maps = out[onnx::MAP].try_extract_tensor::<f32>().unwrap().1;
    assert_eq!(&maps[size * size..], &map[..], "{case:?}: post-processing map");
    if search == NearestSearch::Exact {
        let worst = grid_scores.iter().zip(&nearest).map(|(g, r)| (g - r).abs()).fold(0.0f32, f32::max);
        assert!(worst <= tol, "{case:?}: the grid scores differ from the Rust distances by up to {worst}");
    }
    match search {
        NearestSearch::Exact => {
            assert!((got - want).abs() <= tol, "{case:?}: graph score {got} vs Rust kernels {want}");
            let worst = map.iter().zip(&reference).map(|(g, r)| (g - r).abs()).fold(0.0f32, f32::max);
            assert!(worst <= tol, "{case:?}: map differs from the reference by up to {worst}");
        }
        NearestSearch::Int8 => {
            assert!((got - want).abs() <= 0.05 * want, "{case:?}: int8 search score {got} vs exact {want}");
            if !local {
                let below = map.iter().zip(&reference).map(|(g, r)| r - g).fold(f32::MIN, f32::max);
                assert!(below <= tol, "{case:?}: the int8 map is below the exact one by up to {below}");
            }
            let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
            let (m_got, m_want) = (mean(&map), mean(&reference));
            assert!((m_got - m_want).abs() <= 0.05 * m_want, "{case:?}: int8 map mean {m_got} vs exact {m_want}");
        }
    }
}
