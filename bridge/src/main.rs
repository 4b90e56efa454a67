//! `ferry`: reads the command line, sets up logging and the runtime, and runs the node.
//! Everything with behaviour lives in the libraries or in `node`.
#![forbid(unsafe_code)]

mod admin;
mod admin_auth;
mod allow;
mod ca;
mod cli;
mod config_file;
mod ctl;
mod dashboard;
mod data_dir;
mod history;
mod identity;
mod metrics;
mod node;
mod shared;
mod shutdown;
mod sidecar;
mod store;
mod store_report;
mod sync;
mod traffic;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let loaded = match config_file::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("ferry: {error:#}");
            return ExitCode::from(2);
        }
    };
    let cli = cli::Cli::parse_from(loaded.arguments);
    if let Some(cli::Command::Ctl(command)) = &cli.command {
        return ctl::run(command);
    }
    if let Some(cli::Command::Ca(command)) = &cli.command {
        return ca::run(command);
    }
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        cli::LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        cli::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    // One worker thread means one event loop, as nginx's and HAProxy's single workers: the
    // current-thread scheduler skips the cross-thread machinery a pool of one never uses.
    let mut runtime = match cli.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    let outcome = runtime
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(node::run(cli, loaded.services)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("ferry: {error:#}");
            ExitCode::FAILURE
        }
    }
}
