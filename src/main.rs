//! The `iarnet` binary: parse flags, load the configuration, run a node until
//! SIGTERM or SIGINT, then shut down gracefully. With a subcommand it is a
//! client of a running node instead (`iarnet peers`, `iarnet deploy`, ...).

use std::process::ExitCode;

use clap::Parser;
use iarnet::cli::{summary, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(command) = cli.command.take() {
        return client(command);
    }
    init_tracing(cli.log_format);
    // Every configuration problem is reported before any port is bound.
    let config = match cli.load(std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iarnet: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        print!("configuration is valid\n{}", summary(&config));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iarnet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iarnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client(command: iarnet::cli::client::Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iarnet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(iarnet::cli::client::run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iarnet: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: iarnet::config::Config) -> anyhow::Result<()> {
    let node = iarnet::node::start(config).await?;
    iarnet::signal::shutdown().await;
    tracing::info!("shutdown requested; leaving the mesh");
    let bound = iarnet::node::shutdown_bound(node.config());
    if tokio::time::timeout(bound, node.shutdown()).await.is_err() {
        tracing::warn!("graceful shutdown exceeded its bound; exiting anyway");
    }
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: `docker logs` and log shippers get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
