//! Calibration targets: which pattern, how many points, how far apart, and where each point lies
//! on the board in millimetres.

use super::CalibrationError;
use std::fmt;
use std::str::FromStr;

/// The kind of calibration target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A chessboard; points are its inner corners (refined to sub-pixel accuracy).
    Chessboard,
    /// A symmetric grid of circles; points are the circle centres.
    Circles,
    /// An asymmetric (staggered) grid of circles, as OpenCV's `acircles_pattern.png`.
    AsymmetricCircles,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Chessboard, Target::Circles, Target::AsymmetricCircles];

    /// The name used on the command line and in calibration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Chessboard => "chessboard",
            Target::Circles => "circles",
            Target::AsymmetricCircles => "asymmetric-circles",
        }
    }

    /// The name OpenCV's `camera_calibration` sample writes as `calibration_pattern`.
    pub fn opencv_name(self) -> &'static str {
        match self {
            Target::Chessboard => "CHESSBOARD",
            Target::Circles => "CIRCLES_GRID",
            Target::AsymmetricCircles => "ASYMMETRIC_CIRCLES_GRID",
        }
    }
}

impl FromStr for Target {
    type Err = CalibrationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            CalibrationError::Input(format!("unknown target {s:?}: use chessboard, circles or asymmetric-circles"))
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Points per row (`cols`) and rows of points (`rows`), as OpenCV's `patternSize`. For a
/// chessboard these are inner corners (a board of 10 × 7 squares has 9 × 6); for an asymmetric
/// grid `cols` counts the circles in one row (OpenCV's 4 × 11 pattern has 4 per row, 11 rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    pub cols: u32,
    pub rows: u32,
}

impl Board {
    pub fn points(&self) -> usize {
        (self.cols * self.rows) as usize
    }
}

impl FromStr for Board {
    type Err = CalibrationError;
    /// `COLSxROWS`, e.g. `9x6` (an `×` works too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CalibrationError::Input(format!("board {s:?}: write COLSxROWS, e.g. 9x6 (points per row × rows)"));
        let (c, r) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
        let cols: u32 = c.trim().parse().map_err(|_| bad())?;
        let rows: u32 = r.trim().parse().map_err(|_| bad())?;
        if !(2..=1000).contains(&cols) || !(2..=1000).contains(&rows) {
            return Err(CalibrationError::Input(format!("board {s:?}: each side needs 2..=1000 points")));
        }
        Ok(Board { cols, rows })
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.cols, self.rows)
    }
}

/// A physical target: pattern, point grid and spacing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TargetSpec {
    pub target: Target,
    pub board: Board,
    /// Chessboard: square side. Symmetric circles: centre-to-centre distance. Asymmetric circles:
    /// the distance between neighbouring rows (circles in one row are `2 × spacing` apart), as
    /// OpenCV's `squareSize` for that pattern.
    pub spacing_mm: f64,
}

impl TargetSpec {
    pub fn new(target: Target, board: Board, spacing_mm: f64) -> Result<Self, CalibrationError> {
        if !(spacing_mm.is_finite() && spacing_mm > 0.0) {
            return Err(CalibrationError::Input(format!("--spacing-mm {spacing_mm}: must be a positive length in mm")));
        }
        Ok(Self { target, board, spacing_mm })
    }

    /// The board position of every point in millimetres (z = 0), in the order the detector
    /// returns them: row by row, `cols` points per row.
    pub fn object_points(&self) -> Vec<[f32; 3]> {
        let s = self.spacing_mm;
        let mut out = Vec::with_capacity(self.board.points());
        for i in 0..self.board.rows {
            for j in 0..self.board.cols {
                let (x, y) = match self.target {
                    Target::Chessboard | Target::Circles => (f64::from(j) * s, f64::from(i) * s),
                    Target::AsymmetricCircles => (f64::from(2 * j + i % 2) * s, f64::from(i) * s),
                };
                out.push([x as f32, y as f32, 0.0]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_parse_and_refuse_nonsense() {
        assert_eq!("4x11".parse::<Board>().unwrap(), Board { cols: 4, rows: 11 });
        assert_eq!("9×6".parse::<Board>().unwrap(), Board { cols: 9, rows: 6 });
        for bad in ["", "9", "9x", "x6", "1x6", "9x6x2", "-3x4"] {
            assert!(bad.parse::<Board>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn targets_round_trip_their_names() {
        for t in Target::ALL {
            assert_eq!(t.as_str().parse::<Target>().unwrap(), t);
        }
        let err = "checkerboard".parse::<Target>().unwrap_err().to_string();
        assert!(err.contains("chessboard, circles or asymmetric-circles"), "{err}");
    }

    #[test]
    fn asymmetric_grid_points_are_staggered_like_opencv() {
        let spec = TargetSpec::new(Target::AsymmetricCircles, Board { cols: 4, rows: 3 }, 10.0).unwrap();
        let p = spec.object_points();
        assert_eq!(p.len(), 12);
        assert_eq!(p[0], [0.0, 0.0, 0.0]);
        assert_eq!(p[1], [20.0, 0.0, 0.0]);
        assert_eq!(p[4], [10.0, 10.0, 0.0]); // row 1 is shifted by one spacing
        assert_eq!(p[8], [0.0, 20.0, 0.0]);
    }

    #[test]
    fn chessboard_points_are_a_square_grid() {
        let spec = TargetSpec::new(Target::Chessboard, Board { cols: 3, rows: 2 }, 2.5).unwrap();
        assert_eq!(spec.object_points()[5], [5.0, 2.5, 0.0]);
        assert!(TargetSpec::new(Target::Chessboard, Board { cols: 3, rows: 2 }, 0.0).is_err());
    }
}
