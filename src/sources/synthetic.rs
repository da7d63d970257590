//! The synthetic camera: procedurally generated parts (see [`crate::synth`]) delivered like
//! frames from a real camera. Deterministic: frame k of seed s is always the same part.

use super::{Grabbed, Source, SourceError};
use crate::frame::{PixelFormat, part_id};
use crate::synth::{Generator, SynthParams};

pub struct SyntheticSource {
    generator: Generator,
    next_index: u64,
    /// The ground-truth mask of the last part (kept so the generator never allocates).
    mask: Vec<u8>,
}

impl SyntheticSource {
    pub fn new(params: SynthParams) -> Result<Self, SourceError> {
        let n = params.pixel_count();
        let generator = Generator::new(params).map_err(|e| SourceError::Disconnected(e.to_string()))?;
        Ok(Self { generator, next_index: 0, mask: vec![0; n] })
    }
}

impl Source for SyntheticSource {
    fn open(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn grab(&mut self, pixels: &mut Vec<u8>) -> Result<Grabbed, SourceError> {
        let p = self.generator.params();
        let (width, height) = (p.width, p.height);
        pixels.resize(self.mask.len(), 0);
        let index = self.next_index;
        self.next_index += 1;
        self.generator.render(index, pixels, &mut self.mask);
        // Part ids name the generated part, so a result can be matched to its ground truth
        // with `linesight synth` and the same seed.
        let mut id = part_id("part_");
        let _ = id.try_push_str(itoa_buf(index, &mut [0u8; 20]));
        Ok(Grabbed { width, height, format: PixelFormat::Gray8, part_id: Some(id), captured_at: None })
    }

    fn frame_size(&self) -> Option<(u32, u32)> {
        let p = self.generator.params();
        Some((p.width, p.height))
    }
}

/// Format `n` as zero-padded 6+ digits without allocating.
fn itoa_buf(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 && buf.len() - i >= 6 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_ids_match_the_synth_file_names() {
        assert_eq!(itoa_buf(7, &mut [0; 20]), "000007");
        assert_eq!(itoa_buf(1234567, &mut [0; 20]), "1234567");
    }
}
