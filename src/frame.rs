//! Frames and their metadata: what a source produces and every stage after it carries.

use crate::pool::Pooled;
use arrayvec::ArrayString;
use std::time::{Instant, SystemTime};

/// A part identifier, stored inline so stamping a frame never allocates. Longer ids are cut at a
/// character boundary.
pub type PartId = ArrayString<64>;

/// Make a [`PartId`] from any string, truncating to its capacity.
pub fn part_id(s: &str) -> PartId {
    let mut id = PartId::new();
    for ch in s.chars() {
        if id.try_push(ch).is_err() {
            break;
        }
    }
    id
}

/// Pixel layout of a frame buffer: 8 bits per channel, rows packed, no padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    Gray8,
    Rgb8,
}

impl PixelFormat {
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgb8 => 3,
        }
    }
}

/// Everything known about a frame besides its pixels.
#[derive(Clone, Copy, Debug)]
pub struct FrameMeta {
    /// Index of the camera in the station config (stable for the station's lifetime).
    pub camera: u16,
    /// Per-camera sequence number, starting at 0, without gaps at capture (drops happen later).
    pub seq: u64,
    /// Part identifier when the source knows one (file name, PLC trigger).
    pub part_id: Option<PartId>,
    /// Monotonic capture time: for latencies and deadlines.
    pub captured_at: Instant,
    /// Wall-clock capture time: for records people read.
    pub captured_wall: SystemTime,
    /// The recipe that judges this frame (index into the station's recipes), stamped at capture
    /// (see `pipeline::recipe_switch`).
    pub recipe: u16,
}

/// A captured image with its metadata. Pixels are on loan from the camera's pool.
pub struct Frame {
    pub meta: FrameMeta,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub pixels: Pooled<u8>,
}

impl Frame {
    /// Bytes in one row.
    pub fn stride(&self) -> usize {
        self.width as usize * self.format.channels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_part_ids_are_truncated_not_rejected() {
        let long = "x".repeat(100);
        assert_eq!(part_id(&long).len(), 64);
        assert_eq!(part_id("P-0001").as_str(), "P-0001");
    }
}
