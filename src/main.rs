//! `linesight` binary: parse, run, print the error chain on one line, exit non-zero on failure.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = linesight::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LINESIGHT_LOG").unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .init();
    match linesight::app::main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
