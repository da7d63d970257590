//! A shadow camera's source: the copies of one live camera's frames the shadow tap hands over.
//! Each frame is tagged with a key (its part id in the shadow station) under which its live
//! judgement waits for the shadow's verdict; the buffer goes back to the tap for the next copy.

use crate::frame::part_id;
use crate::pipeline::shadow_tap::{LiveJudgement, ShadowFrame};
use crate::sources::{Grabbed, Source, SourceError};
use crossbeam_channel::{Receiver, Sender};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Most live judgements kept waiting for their shadow verdict; older ones (frames the shadow
/// station dropped without a verdict) are forgotten.
const MAX_WAITING: usize = 4096;

/// Live judgements by key, waiting for the shadow's verdict on the same frame.
#[derive(Default)]
pub struct Waiting {
    next: AtomicU64,
    judgements: Mutex<BTreeMap<u64, LiveJudgement>>,
}

impl Waiting {
    fn put(&self, live: LiveJudgement) -> u64 {
        let key = self.next.fetch_add(1, Relaxed);
        let mut map = self.judgements.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key, live);
        while map.len() > MAX_WAITING {
            map.pop_first();
        }
        key
    }

    /// The live judgement of the frame tagged `tag` (its part id in the shadow station).
    pub fn take(&self, tag: &str) -> Option<LiveJudgement> {
        let key: u64 = tag.parse().ok()?;
        self.judgements.lock().unwrap_or_else(|e| e.into_inner()).remove(&key)
    }
}

pub struct ChannelSource {
    frames: Receiver<ShadowFrame>,
    spares: Sender<Vec<u8>>,
    waiting: Arc<Waiting>,
}

impl ChannelSource {
    pub fn new(frames: Receiver<ShadowFrame>, spares: Sender<Vec<u8>>, waiting: Arc<Waiting>) -> Self {
        Self { frames, spares, waiting }
    }
}

impl Source for ChannelSource {
    fn open(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn grab(&mut self, pixels: &mut Vec<u8>) -> Result<Grabbed, SourceError> {
        // Closed when the shadow is detached or the live station stops: the shadow drains.
        let frame = self.frames.recv().map_err(|_| SourceError::EndOfStream)?;
        pixels.clear();
        pixels.extend_from_slice(&frame.pixels);
        let key = self.waiting.put(frame.live);
        let (width, height, format) = (frame.width, frame.height, frame.format);
        let _ = self.spares.send(frame.pixels);
        Ok(Grabbed { width, height, format, part_id: Some(part_id(&key.to_string())), captured_at: None })
    }

    /// Ends when its frames do, never paced, never reopened.
    fn is_replay(&self) -> bool {
        true
    }
}
