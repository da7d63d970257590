//! Writing a synthetic data set to disk: images, masks and one JSON label line per part.
//!
//! Layout under `out/`: `images/part_{index:06}.png`, `masks/part_{index:06}.png` and
//! `labels.jsonl`, whose lines read
//! `{"index":0,"file":"images/part_000000.png","mask":"masks/part_000000.png","defective":true,
//! "defects":[{"class":"scratch","bbox":[x,y,w,h],"area_px":123}]}`.

use super::{DefectClass, Generator, SynthParams};
use anyhow::Context;
use image::{ExtendedColorType, ImageFormat};
use serde::Serialize;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

/// What [`write_dataset`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DatasetSummary {
    pub parts: u64,
    pub defective: u64,
    /// Defects drawn, by class, in [`DefectClass::ALL`] order.
    pub defects_by_class: [u64; 4],
}

#[derive(Serialize)]
struct Label<'a> {
    index: u64,
    file: &'a str,
    mask: &'a str,
    defective: bool,
    defects: Vec<LabelDefect>,
}

#[derive(Serialize)]
struct LabelDefect {
    class: DefectClass,
    /// x, y, width, height in pixels.
    bbox: [u32; 4],
    area_px: u32,
}

/// Renders parts `0..count` of `params` into `out` (created if missing; files already there with
/// the same names are overwritten).
pub fn write_dataset(out: &Path, count: u64, params: &SynthParams) -> anyhow::Result<DatasetSummary> {
    let mut generator = Generator::new(params.clone())?;
    for dir in ["images", "masks"] {
        let dir = out.join(dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let labels_path = out.join("labels.jsonl");
    let mut labels =
        BufWriter::new(File::create(&labels_path).with_context(|| format!("creating {}", labels_path.display()))?);
    let (width, height) = (params.width, params.height);
    let mut pixels = vec![0u8; params.pixel_count()];
    let mut mask = vec![0u8; params.pixel_count()];
    let mut summary = DatasetSummary::default();
    for index in 0..count {
        let truth = generator.render(index, &mut pixels, &mut mask);
        let file = format!("images/part_{index:06}.png");
        let mask_file = format!("masks/part_{index:06}.png");
        for (name, data) in [(&file, &pixels), (&mask_file, &mask)] {
            let path = out.join(name);
            image::save_buffer_with_format(&path, data, width, height, ExtendedColorType::L8, ImageFormat::Png)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let label = Label {
            index,
            file: &file,
            mask: &mask_file,
            defective: truth.is_defective(),
            defects: truth
                .defects
                .iter()
                .map(|d| LabelDefect { class: d.class, bbox: [d.x, d.y, d.w, d.h], area_px: d.area_px })
                .collect(),
        };
        serde_json::to_writer(&mut labels, &label)?;
        labels.write_all(b"\n")?;
        summary.parts += 1;
        summary.defective += u64::from(truth.is_defective());
        for d in &truth.defects {
            summary.defects_by_class[d.class.index()] += 1;
        }
    }
    labels.flush().with_context(|| format!("writing {}", labels_path.display()))?;
    Ok(summary)
}
