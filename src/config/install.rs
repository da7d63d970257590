//! Where the running linesight's own files are (the models it ships), for the settings whose
//! default is one of them: a station config in `/etc/linesight/` still finds the backbones.

use std::path::PathBuf;

/// The folder holding `models/`: the working directory when it is the project, else the nearest
/// folder above the executable that holds the demo model (a build tree or an install prefix).
pub fn project_dir() -> PathBuf {
    let here = PathBuf::from(".");
    if here.join("models/demo/model.toml").is_file() {
        return here;
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("models/demo/model.toml").is_file() {
                return dir.to_path_buf();
            }
        }
    }
    here
}

/// The backbone teach uses when none is named, on the command line or in `[model.teach]`: the
/// stronger Lite2 when it is installed, else Lite0.
pub fn default_backbone() -> PathBuf {
    let models = project_dir().join("models");
    let lite2 = models.join("backbone-lite2");
    if lite2.join("backbone.toml").is_file() { lite2 } else { models.join("backbone-lite0") }
}
