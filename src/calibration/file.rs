//! The calibration file: an OpenCV FileStorage YAML that OpenCV's own tools read (the field names
//! of OpenCV's `camera_calibration` sample: `camera_matrix`, `distortion_coefficients`,
//! `image_width`, `image_height`, `avg_reprojection_error`, …), plus linesight's own fields in a
//! `linesight` map (target, views, working-plane scale and how it was obtained).
//!
//! Reading checks everything the station relies on and refuses the file with the reason, so a
//! corrupt or hand-edited file is caught by `linesight check`, not on the line.

use super::CalibrationError;
use super::target::{Board, Target, TargetSpec};
use opencv::core::{self, FileNode, FileStorage, Mat, Vector};
use opencv::prelude::*;
use std::path::Path;

/// The version of the `linesight` map this build writes and reads.
pub const FORMAT_VERSION: i32 = 1;

/// Distortion coefficient counts OpenCV's models use (k1 k2 p1 p2 [k3 [k4 k5 k6 [s1..s4 [τx τy]]]]).
const DIST_COUNTS: [usize; 5] = [4, 5, 8, 12, 14];

/// How the millimetres-per-pixel scale was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleSource {
    /// Measured from an image of the target lying on the working plane (homography).
    Homography,
    /// Set by hand (`--mm-per-px`).
    Manual,
}

impl ScaleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleSource::Homography => "homography",
            ScaleSource::Manual => "manual",
        }
    }
}

/// Millimetres per pixel on the inspected surface, in undistorted frames.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaneScale {
    pub mm_per_px: f64,
    pub source: ScaleSource,
    /// How it was measured, for people (image, residual, spread across the board).
    pub note: String,
    /// Homography from undistorted image pixels to plane millimetres (row-major), when measured.
    pub homography: Option<[f64; 9]>,
}

/// A camera's calibration: intrinsics for the image size it was made at, how well they fit, and
/// optionally the working-plane scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    pub image_width: u32,
    pub image_height: u32,
    /// Row-major `[fx 0 cx; 0 fy cy; 0 0 1]`.
    pub camera_matrix: [f64; 9],
    /// OpenCV's order: k1, k2, p1, p2, k3 (more for the rational / thin-prism models).
    pub dist_coeffs: Vec<f64>,
    /// RMS reprojection error over all views, in pixels (absent in a hand-written file).
    pub rms_px: Option<f64>,
    /// RMS reprojection error of each view, in the order of `views`.
    pub per_view_px: Vec<f64>,
    pub target: Option<TargetSpec>,
    /// File names of the views used.
    pub views: Vec<String>,
    /// Views left out, each `name: reason`.
    pub skipped: Vec<String>,
    /// UTC, ISO 8601.
    pub calibration_time: String,
    pub scale: Option<PlaneScale>,
}

impl Calibration {
    pub fn fx(&self) -> f64 {
        self.camera_matrix[0]
    }
    pub fn fy(&self) -> f64 {
        self.camera_matrix[4]
    }
    pub fn cx(&self) -> f64 {
        self.camera_matrix[2]
    }
    pub fn cy(&self) -> f64 {
        self.camera_matrix[5]
    }

    /// The camera matrix and distortion coefficients as OpenCV matrices.
    pub fn opencv_matrices(&self) -> Result<(Mat, Mat), CalibrationError> {
        let k = &self.camera_matrix;
        let cm = Mat::from_slice_2d(&[[k[0], k[1], k[2]], [k[3], k[4], k[5]], [k[6], k[7], k[8]]])?;
        let dist = Mat::from_slice(&self.dist_coeffs)?.try_clone()?;
        Ok((cm, dist))
    }

    /// Everything the station relies on, or why not.
    pub fn check(&self) -> Result<(), String> {
        let (w, h) = (self.image_width, self.image_height);
        if !(2..=65_535).contains(&w) || !(2..=65_535).contains(&h) {
            return Err(format!("image size {w}×{h} is not a camera image size"));
        }
        let k = &self.camera_matrix;
        if k.iter().any(|v| !v.is_finite()) {
            return Err("camera_matrix has a non-finite value".into());
        }
        if k[0] <= 0.0 || k[4] <= 0.0 {
            return Err(format!("camera_matrix focal lengths fx = {}, fy = {} must be positive", k[0], k[4]));
        }
        if k[3] != 0.0 || k[6] != 0.0 || k[7] != 0.0 || (k[8] - 1.0).abs() > 1e-9 {
            return Err("camera_matrix is not of the form [fx s cx; 0 fy cy; 0 0 1]".into());
        }
        if !(0.0..=f64::from(w)).contains(&k[2]) || !(0.0..=f64::from(h)).contains(&k[5]) {
            return Err(format!("principal point ({}, {}) lies outside the {w}×{h} image", k[2], k[5]));
        }
        if !DIST_COUNTS.contains(&self.dist_coeffs.len()) {
            return Err(format!(
                "distortion_coefficients has {} values; OpenCV's models have 4, 5, 8, 12 or 14",
                self.dist_coeffs.len()
            ));
        }
        if self.dist_coeffs.iter().any(|v| !v.is_finite()) {
            return Err("distortion_coefficients has a non-finite value".into());
        }
        if let Some(s) = &self.scale
            && !(s.mm_per_px.is_finite() && s.mm_per_px > 0.0)
        {
            return Err(format!("linesight.mm_per_px = {} must be a positive number", s.mm_per_px));
        }
        Ok(())
    }

    /// Read and check a calibration file.
    pub fn load(path: &Path) -> Result<Self, CalibrationError> {
        let fail = |reason: String| CalibrationError::File { path: path.display().to_string(), reason };
        if !path.is_file() {
            return Err(fail("no such file (relative paths start at the config file's folder)".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let cal = Self::from_yaml(&text).map_err(fail)?;
        cal.check().map_err(fail)?;
        Ok(cal)
    }

    /// Parse FileStorage text (YAML, or XML / JSON as OpenCV detects). Not yet [`check`]ed.
    ///
    /// [`check`]: Calibration::check
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if !text.trim_start().starts_with("%YAML") && !text.trim_start().starts_with('<') {
            return Err("not an OpenCV FileStorage file (it should start with %YAML:1.0)".into());
        }
        let flags = core::FileStorage_READ | core::FileStorage_MEMORY;
        let fs =
            FileStorage::new(text, flags, "").map_err(|e| format!("not a valid FileStorage file: {}", e.message))?;
        if !fs.is_opened().unwrap_or(false) {
            return Err("not a valid FileStorage file".into());
        }
        let r = Reader { fs: &fs };
        let image_width = r.int("image_width")?;
        let image_height = r.int("image_height")?;
        let camera_matrix = square3(r.matrix("camera_matrix")?.ok_or("missing camera_matrix")?, "camera_matrix")?;
        let dist = r.matrix("distortion_coefficients")?.ok_or("missing distortion_coefficients")?;
        if dist.0.min(dist.1) != 1 {
            return Err(format!("distortion_coefficients is {} × {}, not a row or a column", dist.0, dist.1));
        }
        let dist_coeffs = dist.2;
        let rms_px = r.real_opt("avg_reprojection_error")?;
        let per_view_px = r.matrix("per_view_reprojection_errors")?.map(|m| m.2).unwrap_or_default();
        let calibration_time = r.string_opt("calibration_time")?.unwrap_or_default();

        let ls = r.node("linesight")?;
        let mut cal = Calibration {
            image_width: to_u32(image_width, "image_width")?,
            image_height: to_u32(image_height, "image_height")?,
            camera_matrix,
            dist_coeffs,
            rms_px,
            per_view_px,
            target: None,
            views: Vec::new(),
            skipped: Vec::new(),
            calibration_time,
            scale: None,
        };
        if ls.is_none().unwrap_or(true) {
            return Ok(cal); // a plain OpenCV calibration: intrinsics only
        }
        let l = NodeReader { node: &ls, prefix: "linesight." };
        let version = l.int("format_version")?;
        if version > FORMAT_VERSION {
            return Err(format!(
                "linesight.format_version {version} is newer than this linesight reads ({FORMAT_VERSION}): upgrade linesight"
            ));
        }
        if let Some(t) = l.string_opt("target")? {
            let target: Target = t.parse().map_err(|e: CalibrationError| format!("linesight.target: {e}"))?;
            let board = Board {
                cols: to_u32(r.int("board_width")?, "board_width")?,
                rows: to_u32(r.int("board_height")?, "board_height")?,
            };
            let spacing = r.real_opt("square_size")?.ok_or("missing square_size")?;
            cal.target = Some(TargetSpec::new(target, board, spacing).map_err(|e| format!("square_size: {e}"))?);
        }
        cal.views = l.strings("views")?;
        cal.skipped = l.strings("skipped_views")?;
        if let Some(mm_per_px) = l.real_opt("mm_per_px")? {
            let source = match l.string_opt("mm_per_px_source")?.as_deref() {
                Some("homography") => ScaleSource::Homography,
                Some("manual") => ScaleSource::Manual,
                other => {
                    return Err(format!(
                        "linesight.mm_per_px_source = {other:?}: must be \"homography\" or \"manual\""
                    ));
                }
            };
            let homography = match l.matrix("plane_homography")? {
                None => None,
                Some(m) => Some(square3(m, "linesight.plane_homography")?),
            };
            let note = l.string_opt("mm_per_px_note")?.unwrap_or_default();
            cal.scale = Some(PlaneScale { mm_per_px, source, note, homography });
        }
        Ok(cal)
    }

    /// The FileStorage YAML text, with comments that say what each part is.
    pub fn to_yaml(&self) -> Result<String, CalibrationError> {
        let flags = core::FileStorage_WRITE | core::FileStorage_MEMORY | core::FileStorage_FORMAT_YAML;
        let mut fs = FileStorage::new(".yaml", flags, "")?;
        let c = |fs: &mut FileStorage, text: &str| fs.write_comment(text, false);
        c(&mut fs, "Camera calibration written by `linesight calibrate` (OpenCV FileStorage).")?;
        c(&mut fs, "OpenCV reads the standard fields (names of OpenCV's camera_calibration sample):")?;
        c(&mut fs, "  cv::FileStorage fs(path, cv::FileStorage::READ); fs[\"camera_matrix\"] >> K;")?;
        c(&mut fs, "linesight's own fields are in the `linesight` map at the end.")?;
        fs.write_str("calibration_time", &self.calibration_time)?;
        fs.write_i32("nr_of_frames", self.views.len() as i32)?;
        c(&mut fs, "Image size the intrinsics hold for, in pixels; frames of any other size are refused.")?;
        fs.write_i32("image_width", self.image_width as i32)?;
        fs.write_i32("image_height", self.image_height as i32)?;
        if let Some(t) = &self.target {
            c(&mut fs, "Target: points per row × rows, and spacing in mm (OpenCV's square_size).")?;
            fs.write_i32("board_width", t.board.cols as i32)?;
            fs.write_i32("board_height", t.board.rows as i32)?;
            fs.write_f64("square_size", t.spacing_mm)?;
            fs.write_str("calibration_pattern", t.target.opencv_name())?;
        }
        fs.write_i32("flags", 0)?;
        c(&mut fs, "[fx 0 cx; 0 fy cy; 0 0 1], pixels.")?;
        let (cm, dist) = self.opencv_matrices()?;
        fs.write_mat("camera_matrix", &cm)?;
        c(&mut fs, "k1 k2 p1 p2 k3 (OpenCV's distortion model).")?;
        fs.write_mat("distortion_coefficients", &dist.reshape(1, self.dist_coeffs.len() as i32)?.try_clone()?)?;
        if let Some(rms) = self.rms_px {
            c(&mut fs, "RMS reprojection error over all views, and per view (same order as linesight.views), pixels.")?;
            fs.write_f64("avg_reprojection_error", rms)?;
        }
        if !self.per_view_px.is_empty() {
            let col = Mat::from_slice(&self.per_view_px)?.reshape(1, self.per_view_px.len() as i32)?.try_clone()?;
            fs.write_mat("per_view_reprojection_errors", &col)?;
        }
        fs.start_write_struct("linesight", core::FileNode_MAP, "")?;
        fs.write_i32("format_version", FORMAT_VERSION)?;
        if let Some(t) = &self.target {
            fs.write_str("target", t.target.as_str())?;
        }
        fs.write_str_vec("views", &self.views.iter().map(String::as_str).collect::<Vector<String>>())?;
        fs.write_str_vec("skipped_views", &self.skipped.iter().map(String::as_str).collect::<Vector<String>>())?;
        if let Some(s) = &self.scale {
            c(
                &mut fs,
                "Millimetres per pixel on the inspected surface, in undistorted frames, and how it was obtained.",
            )?;
            fs.write_f64("mm_per_px", s.mm_per_px)?;
            fs.write_str("mm_per_px_source", s.source.as_str())?;
            fs.write_str("mm_per_px_note", &s.note)?;
            if let Some(h) = &s.homography {
                let m = Mat::from_slice_2d(&[[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], h[8]]])?;
                c(&mut fs, "Undistorted image pixels → plane millimetres.")?;
                fs.write_mat("plane_homography", &m)?;
            }
        }
        fs.end_write_struct()?;
        Ok(fs.release_and_get_string()?)
    }

    /// Write the file (through a temporary file and a rename, so a reader never sees half of it).
    pub fn save(&self, path: &Path) -> Result<(), CalibrationError> {
        let text = self.to_yaml()?;
        let tmp = path.with_extension("yaml.tmp");
        let io = |e: std::io::Error| CalibrationError::File { path: path.display().to_string(), reason: e.to_string() };
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// A matrix read from the file: rows, columns, values row-major.
type Matrix = (i32, i32, Vec<f64>);

fn square3((rows, cols, values): Matrix, key: &str) -> Result<[f64; 9], String> {
    if (rows, cols) != (3, 3) {
        return Err(format!("{key} is {rows} × {cols}, not 3 × 3"));
    }
    values.try_into().map_err(|_| format!("{key} does not hold 9 values"))
}

fn to_u32(v: i32, key: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{key} = {v} must not be negative"))
}

/// Typed access to the top level of a FileStorage, with errors that name the key.
struct Reader<'a> {
    fs: &'a FileStorage,
}

impl Reader<'_> {
    fn node(&self, key: &str) -> Result<FileNode, String> {
        self.fs.get(key).map_err(|e| format!("{key}: {}", e.message))
    }
    fn int(&self, key: &str) -> Result<i32, String> {
        NodeReader::int_of(&self.node(key)?, key)
    }
    fn real_opt(&self, key: &str) -> Result<Option<f64>, String> {
        NodeReader::real_of(&self.node(key)?, key)
    }
    fn string_opt(&self, key: &str) -> Result<Option<String>, String> {
        NodeReader::string_of(&self.node(key)?, key)
    }
    fn matrix(&self, key: &str) -> Result<Option<Matrix>, String> {
        NodeReader::matrix_of(&self.node(key)?, key)
    }
}

/// Typed access to one map node.
struct NodeReader<'a> {
    node: &'a FileNode,
    prefix: &'a str,
}

impl NodeReader<'_> {
    fn child(&self, key: &str) -> Result<(FileNode, String), String> {
        let name = format!("{}{key}", self.prefix);
        let node = self.node.get(key).map_err(|e| format!("{name}: {}", e.message))?;
        Ok((node, name))
    }
    fn int(&self, key: &str) -> Result<i32, String> {
        let (n, name) = self.child(key)?;
        Self::int_of(&n, &name)
    }
    fn real_opt(&self, key: &str) -> Result<Option<f64>, String> {
        let (n, name) = self.child(key)?;
        Self::real_of(&n, &name)
    }
    fn string_opt(&self, key: &str) -> Result<Option<String>, String> {
        let (n, name) = self.child(key)?;
        Self::string_of(&n, &name)
    }
    fn matrix(&self, key: &str) -> Result<Option<Matrix>, String> {
        let (n, name) = self.child(key)?;
        Self::matrix_of(&n, &name)
    }
    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        let (n, name) = self.child(key)?;
        if n.is_none().unwrap_or(true) {
            return Ok(Vec::new());
        }
        if !n.is_seq().unwrap_or(false) {
            return Err(format!("{name} must be a list of strings"));
        }
        (0..n.size().unwrap_or(0) as i32)
            .map(|i| {
                let item = n.at(i).map_err(|e| format!("{name}[{i}]: {}", e.message))?;
                Self::string_of(&item, &name)?.ok_or_else(|| format!("{name}[{i}] must be a string"))
            })
            .collect()
    }

    fn int_of(n: &FileNode, name: &str) -> Result<i32, String> {
        if n.is_none().unwrap_or(true) {
            return Err(format!("missing {name}"));
        }
        if !n.is_int().unwrap_or(false) {
            return Err(format!("{name} must be an integer"));
        }
        n.to_i32().map_err(|e| format!("{name}: {}", e.message))
    }
    fn real_of(n: &FileNode, name: &str) -> Result<Option<f64>, String> {
        if n.is_none().unwrap_or(true) {
            return Ok(None);
        }
        if !(n.is_real().unwrap_or(false) || n.is_int().unwrap_or(false)) {
            return Err(format!("{name} must be a number"));
        }
        n.to_f64().map(Some).map_err(|e| format!("{name}: {}", e.message))
    }
    fn string_of(n: &FileNode, name: &str) -> Result<Option<String>, String> {
        if n.is_none().unwrap_or(true) {
            return Ok(None);
        }
        if !n.is_string().unwrap_or(false) {
            return Err(format!("{name} must be a string"));
        }
        n.to_string().map(Some).map_err(|e| format!("{name}: {}", e.message))
    }
    fn matrix_of(n: &FileNode, name: &str) -> Result<Option<Matrix>, String> {
        if n.is_none().unwrap_or(true) {
            return Ok(None);
        }
        if !n.is_map().unwrap_or(false) {
            return Err(format!("{name} must be an OpenCV matrix (!!opencv-matrix)"));
        }
        let m = n.mat().map_err(|e| format!("{name} is not a readable matrix: {}", e.message))?;
        if m.empty() {
            return Err(format!("{name} is not a readable matrix"));
        }
        let mut f = Mat::default();
        m.convert_to(&mut f, core::CV_64F, 1.0, 0.0).map_err(|e| format!("{name}: {}", e.message))?;
        let values = super::solve::mat_values(&f).map_err(|e| format!("{name}: {e}"))?;
        Ok(Some((f.rows(), f.cols(), values)))
    }
}

/// Now as UTC ISO 8601 (`2025-01-31T12:00:00Z`), without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Calibration {
        Calibration {
            image_width: 640,
            image_height: 480,
            camera_matrix: [600.5, 0.0, 320.25, 0.0, 598.0, 240.125, 0.0, 0.0, 1.0],
            dist_coeffs: vec![-0.25, 0.1, 0.001, -0.002, 0.01],
            rms_px: Some(0.071),
            per_view_px: vec![0.06, 0.08],
            target: Some(TargetSpec::new(Target::Chessboard, Board { cols: 9, rows: 6 }, 25.0).unwrap()),
            views: vec!["a.png".into(), "b.png".into()],
            skipped: vec!["c.png: target not found".into()],
            calibration_time: "2025-01-31T12:00:00Z".into(),
            scale: Some(PlaneScale {
                mm_per_px: 0.0745,
                source: ScaleSource::Homography,
                note: "from plane.png".into(),
                homography: Some([0.07, 0.0, -10.0, 0.0, 0.07, -8.0, 0.0, 0.0, 1.0]),
            }),
        }
    }

    #[test]
    fn files_round_trip_exactly() {
        let cal = sample();
        let text = cal.to_yaml().unwrap();
        assert!(text.starts_with("%YAML:1.0"), "{text}");
        assert!(text.contains("camera_matrix: !!opencv-matrix") && text.contains("# k1 k2 p1 p2 k3"), "{text}");
        assert_eq!(Calibration::from_yaml(&text).unwrap(), cal);
        // A plain OpenCV file (no linesight map) is read as intrinsics only.
        let plain = text[..text.find("linesight:").unwrap()].to_string();
        let read = Calibration::from_yaml(&plain).unwrap();
        assert_eq!((read.camera_matrix, read.scale.is_none(), read.target), (cal.camera_matrix, true, None));
    }

    #[test]
    fn unusable_contents_are_refused_with_the_reason() {
        let good = sample().to_yaml().unwrap();
        let cases: Vec<(String, &str)> = vec![
            ("hello".into(), "not an OpenCV FileStorage file"),
            (good.replace("image_width: 640", "image_width: wide"), "image_width must be an integer"),
            (good.replace("format_version: 1", "format_version: 7"), "upgrade linesight"),
            (good.replace("mm_per_px_source: homography", "mm_per_px_source: guess"), "mm_per_px_source"),
            (good.replacen("rows: 3\n   cols: 3", "rows: 9\n   cols: 1", 1), "camera_matrix is 9 × 1, not 3 × 3"),
            (good.replacen("rows: 5\n   cols: 1", "rows: 1\n   cols: 4", 1), "distortion_coefficients"),
        ];
        for (text, reason) in cases {
            let err = match Calibration::from_yaml(&text) {
                Err(e) => e,
                Ok(c) => c.check().err().unwrap_or_else(|| panic!("accepted: {reason}")),
            };
            assert!(err.contains(reason), "{err} should mention {reason}");
        }
        let mut bad = sample();
        bad.dist_coeffs = vec![0.1, 0.2, 0.3];
        assert!(bad.check().unwrap_err().contains("4, 5, 8, 12 or 14"));
        bad = sample();
        bad.camera_matrix[2] = 900.0;
        assert!(bad.check().unwrap_err().contains("outside the 640×480 image"));
        bad = sample();
        bad.scale.as_mut().unwrap().mm_per_px = -1.0;
        assert!(bad.check().unwrap_err().contains("positive"));
        assert!(sample().check().is_ok());
    }

    #[test]
    fn utc_timestamps_are_iso_8601() {
        let t = utc_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
