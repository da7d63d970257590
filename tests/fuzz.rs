//! Property tests on the station's inputs from outside (issue 13, "Fuzzing"): model manifests,
//! model output shapes, image files through the folder source, and what a PLC writes into the
//! registers the station reads. Each property says what must hold for *any* input: never a
//! panic, and only results that are safe to act on.
//!
//! CI runs a few thousand cases each (`PROPTEST_CASES` overrides; `make fuzz` runs many more).
//! The config loader and the API's query parameters have their own properties in
//! `tests/config.rs` and `tests/store_api.rs`.

use linesight::model::ModelPackage;
use linesight::model::manifest::{Manifest, TaskSpec};
use linesight::model::outputs::{Dim, check_output};
use linesight::sinks::line::event::{ErrorCode, StationStatus};
use linesight::sinks::line::handshake::{Handshake, ResultSlot, TriggerCounter};
use linesight::sources::folder::{FolderSource, decode_checked};
use linesight::sources::{Source, SourceError};
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A TOML number as the manifest would hold it, including the ones TOML can spell that no
/// model means (nan, inf, huge, negative).
fn toml_float() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("0.0".to_string()),
        Just("1e30".to_string()),
        (-2.0f32..2.0).prop_map(|v| format!("{v:?}")),
    ]
}

fn toml_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(1),
        Just(3),
        Just(65_536),
        Just(i64::from(u32::MAX)),
        Just(i64::MAX),
        0i64..5000
    ]
}

fn class_list() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![Just("a".to_string()), Just("b".to_string()), Just(" ".to_string()), "[a-z]{1,6}"],
        0..5,
    )
}

prop_compose! {
    fn manifest_text()(
        width in toml_int(), height in toml_int(), channels in toml_int(), batch in toml_int(),
        mean in proptest::collection::vec(toml_float(), 0..4), std in proptest::collection::vec(toml_float(), 0..4),
        task in 0..4usize, classes in class_list(), threshold in toml_float(), iou in toml_float(),
        background in proptest::option::of(0i64..6), min_width in proptest::option::of(toml_int()),
    ) -> String {
        let list = |v: &[String]| v.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
        let task = match task {
            0 => format!(
                "kind = \"segmentation\"\noutput = \"defect_prob\"\nclasses = [{}]\npixel_threshold = {threshold}\n{}",
                list(&classes),
                background.map_or(String::new(), |b| format!("background_class = {b}\n"))
            ),
            1 => format!("kind = \"classification\"\noutput = \"defect_prob\"\nclasses = [{}]\n", list(&classes)),
            2 => format!(
                "kind = \"detection\"\noutput = \"defect_prob\"\nformat = \"yolov8\"\nclasses = [{}]\nscore_threshold = {threshold}\niou_threshold = {iou}\n",
                list(&classes)
            ),
            _ => format!("kind = \"anomaly\"\nthreshold = {threshold}\n"),
        };
        let sha = "fb4067864d4734c9cb686bfd4142ff484aeef41b25108b208c88e227bab846e5";
        format!(
            "name = \"fuzz\"\nsha256 = \"{sha}\"\n[input]\nname = \"image\"\nwidth = {width}\nheight = {height}\nchannels = {channels}\nbatch = {batch}\n{}[input.normalization]\nmean = [{}]\nstd = [{}]\n[task]\n{task}",
            min_width.map_or(String::new(), |m| format!("min_width = {m}\n")),
            mean.join(", "),
            std.join(", ")
        )
    }
}

/// Item shapes with extreme and zero dimensions, any rank.
fn item_shape() -> impl Strategy<Value = Vec<Dim>> {
    proptest::collection::vec(
        proptest::option::of(prop_oneof![Just(0usize), Just(1), Just(84), Just(8400), 0usize..300]),
        0..5,
    )
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Any manifest either loads with every problem named, or loads clean: classes non-empty and
    /// unique, channels 1 or 3, finite thresholds and normalisation.
    #[test]
    fn manifests_load_or_are_refused_never_panic(text in manifest_text()) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(repo().join("models/demo/model.onnx"), dir.path().join("model.onnx")).unwrap();
        std::fs::write(dir.path().join("model.toml"), &text).unwrap();
        match ModelPackage::load(dir.path()) {
            Ok(p) => {
                let m = &p.manifest;
                prop_assert!(m.problems().is_empty());
                let classes = m.task.classes();
                prop_assert!(!classes.is_empty());
                prop_assert!(m.input.channels == 1 || m.input.channels == 3);
                prop_assert!(m.input.normalization.std.iter().all(|s| s.is_finite() && *s != 0.0));
                let (w, h) = m.input.min_size();
                prop_assert!(w >= 1 && h >= 1);
                if let TaskSpec::Anomaly(a) = &m.task {
                    prop_assert!(a.threshold.is_finite());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("model.toml") || e.to_string().contains("model package")),
        }
    }

    /// Any text: parsing never panics.
    #[test]
    fn any_text_as_a_manifest_never_panics(text in "\\PC{0,400}") {
        let _ = toml::from_str::<Manifest>(&text).map(|m| m.problems());
    }

    /// Any output shape against any task: accepted or refused with a message naming the output,
    /// never a panic.
    #[test]
    fn output_shapes_are_checked_never_panic(text in manifest_text(), index in 0..2usize, item in item_shape()) {
        if let Ok(m) = toml::from_str::<Manifest>(&text)
            && let Err(e) = check_output(&m.task, &m.input, index, "out", &item)
        {
            prop_assert!(e.contains("\"out\""));
        }
    }

    /// What a PLC writes into the registers the station reads (acknowledgements, the trigger
    /// counter), in any order and value: the handshake never panics and never holds more than
    /// its capacity.
    #[test]
    fn plc_register_values_never_break_the_handshake(
        events in proptest::collection::vec((0..3u8, any::<u16>()), 0..300),
    ) {
        let mut hs = Handshake::new(8, StationStatus { ready: false, error: ErrorCode::Starting });
        let mut triggers = TriggerCounter::default();
        let mut next_id = 1u16;
        for (kind, value) in events {
            match kind {
                0 => {
                    hs.push(ResultSlot { id: next_id, verdict: value % 4, class_code: value, camera: 1, part_number: value });
                    next_id = next_id % 65_535 + 1;
                }
                1 => {
                    hs.ack(value);
                }
                _ => {
                    if let Some(jump) = triggers.observe(value) {
                        prop_assert!(jump > 0);
                    }
                }
            }
            prop_assert!(hs.buffered() <= 8);
            let _ = hs.image();
        }
    }
}

/// A valid JPEG and PNG of a small part, as bytes.
fn images() -> [Vec<u8>; 2] {
    let img = image::ImageBuffer::from_fn(48, 32, |x, y| image::Luma([((x * 5) ^ (y * 7)) as u8]));
    let encode = |format| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    [encode(image::ImageFormat::Jpeg), encode(image::ImageFormat::Png)]
}

/// Bytes of an image file as they arrive from outside: valid, cut short anywhere, with bytes
/// flipped, or anything at all.
fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
    let [jpeg, png] = images();
    prop_oneof![
        (0..2usize, any::<prop::sample::Index>()).prop_map(move |(which, cut)| {
            let whole = if which == 0 { &jpeg } else { &png };
            whole[..cut.index(whole.len() + 1)].to_vec()
        }),
        (0..2usize, proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)).prop_map({
            let [jpeg, png] = images();
            move |(which, flips)| {
                let mut bytes = if which == 0 { jpeg.clone() } else { png.clone() };
                for (at, v) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = v;
                }
                bytes
            }
        }),
        proptest::collection::vec(any::<u8>(), 0..2000),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Any file in a replayed folder: a frame of the size its pixels say, or a bad frame with a
    /// reason; a JPEG cut short is never a frame.
    #[test]
    fn image_files_through_the_folder_source_never_panic(bytes in file_bytes(), ext in prop_oneof![Just("jpg"), Just("png"), Just("bmp"), Just("tif")]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("part.{ext}"));
        std::fs::write(&path, &bytes).unwrap();
        // Written long ago, as far as the source can tell: no settling wait.
        std::fs::File::options().write(true).open(&path).unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();
        let mut pixels = Vec::new();
        match src.grab(&mut pixels) {
            Ok(g) => {
                prop_assert_eq!(pixels.len(), g.width as usize * g.height as usize * g.format.channels());
                let eoi = bytes.iter().rposition(|&b| b != 0 && b != 0xFF).is_some_and(|i| i >= 1 && bytes[i - 1..=i] == [0xFF, 0xD9]);
                prop_assert!(!bytes.starts_with(&[0xFF, 0xD8]) || eoi, "a JPEG without its end marker became a frame");
            }
            Err(SourceError::BadFrame { reason, detail }) => {
                prop_assert!(!reason.is_empty() && detail.contains("part."));
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
        let mut buf = Vec::new();
        let _ = decode_checked(&path, &mut pixels, &mut buf);
    }
}
