//! `linesight eval` end to end: the real binary over MVTec-layout data sets made from synthetic
//! parts, inspected by the demo model through the real pipeline.

mod common;

use common::{demo_model, linesight, output, repo};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `linesight synth` parts laid out as MVTec AD: `root/test/{good,defect}/NNN.png` and
/// `root/ground_truth/defect/NNN_mask.png`. File names restart at 000 in each class folder, so the
/// same name appears in both: results must map back by more than the name. Returns the `test`
/// folder and the (good, defective) counts.
fn mvtec_dataset(root: &Path, count: u64, seed: u64) -> (PathBuf, usize, usize) {
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
    let test = root.join("test");
    let (mut good, mut defective) = (0, 0);
    for line in std::fs::read_to_string(raw.join("labels.jsonl")).unwrap().lines() {
        let label: Value = serde_json::from_str(line).unwrap();
        let image = raw.join(label["file"].as_str().unwrap());
        if label["defective"].as_bool().unwrap() {
            let name = format!("{defective:03}");
            std::fs::create_dir_all(test.join("defect")).unwrap();
            std::fs::create_dir_all(root.join("ground_truth/defect")).unwrap();
            std::fs::copy(&image, test.join(format!("defect/{name}.png"))).unwrap();
            let mask = raw.join(label["mask"].as_str().unwrap());
            std::fs::copy(&mask, root.join(format!("ground_truth/defect/{name}_mask.png"))).unwrap();
            defective += 1;
        } else {
            std::fs::create_dir_all(test.join("good")).unwrap();
            std::fs::copy(&image, test.join(format!("good/{good:03}.png"))).unwrap();
            good += 1;
        }
    }
    assert!(good > 0 && defective > 0, "seed {seed} gave {good} good and {defective} defective parts");
    (test, good, defective)
}

/// Run `linesight eval` with `--json -` and return the report.
fn eval_json(dataset: &Path, extra: &[&str]) -> Value {
    let (ok, out, err) = output(
        linesight().args(["eval", "--model", &demo_model(), "--json", "-", "--dataset"]).arg(dataset).args(extra),
    );
    assert!(ok, "eval failed:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number: {v:#}"))
}

#[test]
fn demo_model_on_synthetic_parts_scores_high_and_every_count_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let (test, good, defective) = mvtec_dataset(dir.path(), 60, 3);
    let csv = dir.path().join("images.csv");
    let json = dir.path().join("report.json");
    let config = repo().join("configs/folder-replay.toml");
    let (ok, out, err) = output(
        linesight()
            .args(["eval", "--model", &demo_model(), "--dataset"])
            .arg(&test)
            .arg("--json")
            .arg(&json)
            .arg("--csv")
            .arg(&csv)
            .arg("--config")
            .arg(&config),
    );
    assert!(ok, "eval failed:\n{out}\n{err}");
    // The human table on stdout.
    assert!(out.contains("image AUROC") && out.contains("escape rate") && out.contains("overkill rate"), "{out}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in
        ["image_auroc", "pixel_auroc", "threshold", "escape_rate", "overkill_rate", "images", "confusion", "classes"]
    {
        assert!(report.get(key).is_some(), "no {key} in {report:#}");
    }
    let auroc = f(&report, "image_auroc");
    assert!((0.9..=1.0).contains(&auroc), "image AUROC {auroc}");
    let pixel = f(&report, "pixel_auroc");
    assert!((0.9..=1.0).contains(&pixel), "pixel AUROC {pixel}");
    assert_eq!(report["operating_point"], "pipeline");
    assert_eq!(f(&report, "images") as usize, good + defective);
    assert_eq!(f(&report, "inspected") as usize, good + defective);

    let c = &report["confusion"];
    let counts: Vec<u64> = ["defective_rejected", "defective_passed", "good_rejected", "good_passed"]
        .iter()
        .map(|k| c[k].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>() as usize, good + defective, "{c}");
    assert_eq!((counts[0] + counts[1]) as usize, defective);
    assert!(f(&report, "escape_rate") <= 0.1 && f(&report, "overkill_rate") <= 0.1, "{report:#}");

    // One CSV row per image, agreeing with the confusion matrix; equal file names in the two
    // class folders map back to their own images.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("file,class,label,score,verdict,decision"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), good + defective);
    let tally = |label: &str, decision: &str| rows.iter().filter(|r| r[2] == label && r[5] == decision).count() as u64;
    assert_eq!(
        [tally("defective", "NG"), tally("defective", "OK"), tally("good", "NG"), tally("good", "OK")].to_vec(),
        counts
    );
    let score = |class: &str, name: &str| -> f64 {
        let row = rows.iter().find(|r| r[1] == class && r[0].ends_with(&format!("/{class}/{name}"))).unwrap();
        row[3].parse().unwrap()
    };
    assert!(score("defect", "000.png") > score("good", "000.png"), "{text}");
    assert_eq!(report["classes"][0]["class"], "good");
    assert_eq!(report["classes"][1]["class"], "defect");
}

#[test]
fn target_escape_zero_gives_no_escapes_and_reports_its_overkill() {
    let dir = tempfile::tempdir().unwrap();
    let (test, _, _) = mvtec_dataset(dir.path(), 30, 5);
    let report = eval_json(&test, &["--target-escape", "0"]);
    assert_eq!(report["operating_point"], "target_escape");
    assert_eq!(f(&report, "escape_rate"), 0.0);
    assert_eq!(report["confusion"]["defective_passed"], 0);
    let overkill = f(&report, "overkill_rate");
    assert!((0.0..=1.0).contains(&overkill));
    assert!(report["threshold"].is_number(), "{report:#}");

    // --threshold sets the operating point by hand: above every score, nothing is rejected.
    let report = eval_json(&test, &["--threshold", "2"]);
    assert_eq!(report["operating_point"], "threshold");
    assert_eq!(f(&report, "escape_rate"), 1.0);
    assert_eq!(f(&report, "overkill_rate"), 0.0);
}

#[test]
fn only_good_images_report_auroc_as_undefined_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (test, good, _) = mvtec_dataset(dir.path(), 12, 9);
    std::fs::remove_dir_all(test.join("defect")).unwrap();
    let report = eval_json(&test, &[]);
    assert!(report["image_auroc"].is_null(), "{report:#}");
    assert!(report["pixel_auroc"].is_null(), "{report:#}");
    assert!(report["escape_rate"].is_null(), "{report:#}");
    assert_eq!(f(&report, "images") as usize, good);
    assert!(report["overkill_rate"].is_number());

    let (ok, out, err) = output(linesight().args(["eval", "--model", &demo_model(), "--dataset"]).arg(&test));
    assert!(ok, "{out}{err}");
    assert!(out.contains("image AUROC  undefined"), "{out}");
}

#[test]
fn unreadable_images_are_counted_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (test, good, defective) = mvtec_dataset(dir.path(), 12, 9);
    std::fs::write(test.join("good/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let report = eval_json(&test, &[]);
    assert_eq!(f(&report, "images") as usize, good + defective + 1);
    assert_eq!(f(&report, "inspected") as usize, good + defective);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report:#}");
    assert!(problems[0]["file"].as_str().unwrap().ends_with("good/broken.png"));
    assert!(problems[0]["error"].as_str().unwrap().contains("unreadable"), "{report:#}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let no_good = dir.path().join("test");
    std::fs::create_dir_all(no_good.join("crack")).unwrap();
    let (ok, _, err) = output(linesight().args(["eval", "--model", &demo_model(), "--dataset"]).arg(&no_good));
    assert!(!ok);
    assert!(err.contains("no `good/` folder") && err.contains("MVTec"), "{err}");

    std::fs::create_dir_all(no_good.join("good")).unwrap();
    let (ok, _, err) = output(linesight().args(["eval", "--model", &demo_model(), "--dataset"]).arg(&no_good));
    assert!(!ok);
    assert!(err.contains("no images"), "{err}");

    let (test, _, _) = mvtec_dataset(&dir.path().join("parts"), 12, 9);
    let missing = dir.path().join("no-model");
    let (ok, _, err) = output(linesight().args(["eval", "--dataset"]).arg(&test).arg("--model").arg(&missing));
    assert!(!ok);
    assert!(err.contains("no-model"), "{err}");
}
