//! `ferry`: reads the command line, sets up logging and the runtime, and runs the node.
//! Everything with behaviour lives in the libraries or in `node`.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod ctl;
mod data_dir;
mod metrics;
mod node;
mod shutdown;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Some(cli::Command::Ctl(command)) = &cli.command {
        return ctl::run(command);
    }
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        cli::LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        cli::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.worker_threads {
        runtime.worker_threads(threads.max(1));
    }
    let outcome = runtime
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(node::run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("ferry: {error:#}");
            ExitCode::FAILURE
        }
    }
}
