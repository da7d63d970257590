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
    /// Fault injection (see [`CameraFault`]): grabs so far, and until when an unplugged camera
    /// refuses to open.
    grabs: u64,
    unplugged_until: Option<std::time::Instant>,
}

/// Fault injection for tests and the fault suite: a synthetic camera that freezes (every
/// `freeze_every`-th grab hangs `freeze_ms`, then delivers the frame it took when it froze, as a
/// stalled network stream delivers its backlog) and is unplugged (every `unplug_every`-th grab
/// fails as a disconnect, and the camera will not open for `unplug_ms`). Set with
/// `LINESIGHT_FAULT_CAMERA="freeze_every=N,freeze_ms=M,unplug_every=K,unplug_ms=U"` (any
/// subset); never on by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CameraFault {
    pub freeze_every: u64,
    pub freeze_ms: u64,
    pub unplug_every: u64,
    pub unplug_ms: u64,
}

impl CameraFault {
    pub const ENV: &'static str = "LINESIGHT_FAULT_CAMERA";

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("{}: {part:?} is not KEY=N", Self::ENV))?;
            let n: u64 = value.parse().map_err(|_| format!("{}: {key}={value:?} is not a number", Self::ENV))?;
            match key {
                "freeze_every" => f.freeze_every = n,
                "freeze_ms" => f.freeze_ms = n,
                "unplug_every" => f.unplug_every = n,
                "unplug_ms" => f.unplug_ms = n,
                _ => {
                    return Err(format!(
                        "{}: unknown key {key:?} (freeze_every, freeze_ms, unplug_every, unplug_ms)",
                        Self::ENV
                    ));
                }
            }
        }
        Ok(f)
    }

    /// The fault set in the environment, read once.
    pub fn from_env() -> Option<Self> {
        static FAULT: std::sync::OnceLock<Option<CameraFault>> = std::sync::OnceLock::new();
        *FAULT.get_or_init(|| std::env::var(Self::ENV).ok().and_then(|t| Self::parse(&t).ok()))
    }
}

impl SyntheticSource {
    pub fn new(params: SynthParams) -> Result<Self, SourceError> {
        let n = params.pixel_count();
        let generator = Generator::new(params).map_err(|e| SourceError::Disconnected(e.to_string()))?;
        Ok(Self { generator, next_index: 0, mask: vec![0; n], grabs: 0, unplugged_until: None })
    }
}

impl Source for SyntheticSource {
    fn open(&mut self) -> Result<(), SourceError> {
        match self.unplugged_until {
            Some(t) if std::time::Instant::now() < t => {
                Err(SourceError::Disconnected("FAULT INJECTION: camera unplugged".into()))
            }
            _ => Ok(()),
        }
    }

    fn grab(&mut self, pixels: &mut Vec<u8>) -> Result<Grabbed, SourceError> {
        let mut captured_at = None;
        if let Some(f) = CameraFault::from_env() {
            self.grabs += 1;
            if f.unplug_every > 0 && self.grabs.is_multiple_of(f.unplug_every) {
                self.unplugged_until = Some(std::time::Instant::now() + std::time::Duration::from_millis(f.unplug_ms));
                return Err(SourceError::Disconnected("FAULT INJECTION: camera unplugged".into()));
            }
            if f.freeze_every > 0 && self.grabs.is_multiple_of(f.freeze_every) {
                captured_at = Some(std::time::Instant::now());
                std::thread::sleep(std::time::Duration::from_millis(f.freeze_ms));
            }
        }
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
        Ok(Grabbed { width, height, format: PixelFormat::Gray8, part_id: Some(id), captured_at })
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
