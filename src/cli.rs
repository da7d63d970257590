//! The command line: the contract users and scripts rely on (see README).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "linesight", version, about = "Open-source visual inspection station")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a station (no --config: the built-in demo station).
    Run(RunArgs),
    /// Validate a config, load and check its model, open its cameras, and exit.
    Check(CheckArgs),
    /// Write synthetic parts (images + ground-truth masks + labels.jsonl).
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Station config file (TOML). Without it, the demo station runs.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop each camera after N frames, then drain and exit.
    #[arg(long, value_name = "N")]
    pub max_frames: Option<u64>,
    /// Write one JSON line per inspection to PATH (`-` = stdout); overrides [outputs].results.
    #[arg(long, value_name = "PATH|-")]
    pub results: Option<String>,
    /// Print a final JSON summary of the frame accounting to PATH (`-` = stdout).
    #[arg(long, value_name = "PATH|-")]
    pub summary: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of parts.
    #[arg(long)]
    pub count: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// brushed_metal or ceramic_tile.
    #[arg(long, default_value = "brushed_metal")]
    pub surface: String,
    #[arg(long, default_value_t = 480)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Probability that a part has defects, 0..=1.
    #[arg(long, default_value_t = 0.3)]
    pub defect_probability: f64,
}
