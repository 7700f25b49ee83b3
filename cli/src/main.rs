//! `cohort`: privacy-preserving federated learning from one binary.
//!
//! Exit codes: 0 success, 1 a failure (the message says what to do), 2 a usage error (from clap), 130 a
//! coordinator interrupted by Ctrl-C or SIGTERM.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod audit;
mod demo;
mod models;
mod privacy;
mod progress;
mod report;
mod run;
mod secagg_bench;
mod serve;
mod simulate;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<run::Interrupted>().is_some() => {
            eprintln!("{err}");
            std::process::ExitCode::from(run::Interrupted::EXIT_CODE)
        }
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour_on_stderr())
        .init();
}

/// Colour only for a person at a terminal: never when stderr is redirected (a log file, a pipe, journald), nor when
/// `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
