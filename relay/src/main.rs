//! The `hush-relay` binary: `hush-relay serve [--config FILE] [flags]`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hush_relay::config::{Config, LogFormat, Overrides};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "hush-relay",
    version,
    about = "Hush end-to-end-encrypted store-and-forward relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the defaults give a working relay with a self-signed certificate).
    Serve {
        /// TOML configuration file (see docs/OPERATING.md).
        #[arg(long, short, env = "HUSH_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Shrink the database file to what it holds (the relay must be stopped): after a large
    /// backlog drains, redb reuses the freed space but keeps the file's size.
    Compact {
        /// TOML configuration file.
        #[arg(long, short, env = "HUSH_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print the effective configuration as TOML and exit.
    Config {
        /// TOML configuration file.
        #[arg(long, short, env = "HUSH_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (file, overrides, action) = match cli.command {
        Command::Serve { config, overrides } => (config, overrides, Action::Serve),
        Command::Config { config, overrides } => (config, overrides, Action::Print),
        Command::Compact { config, overrides } => (config, overrides, Action::Compact),
    };
    let config = match Config::load(file.as_deref(), overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hush-relay: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match action {
        Action::Print => {
            match toml::to_string(&config) {
                Ok(t) => print!("{t}"),
                Err(e) => eprintln!("hush-relay: {e}"),
            }
            return std::process::ExitCode::SUCCESS;
        }
        Action::Compact => return compact(&config),
        Action::Serve => {}
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hush-relay: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(hush_relay::run(config, announce, shutdown_signal()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "relay failed to start");
            eprintln!("hush-relay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

enum Action {
    Serve,
    Print,
    Compact,
}

fn compact(config: &Config) -> std::process::ExitCode {
    let path = config.data_dir.join("relay.redb");
    let started = std::time::Instant::now();
    match hush_relay::store::Store::compact(&path) {
        Ok((before, after)) => {
            println!(
                "compacted {}: {} bytes -> {} bytes in {:.1} s",
                path.display(),
                before,
                after,
                started.elapsed().as_secs_f64()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hush-relay: cannot compact {} (is the relay running?): {e}", path.display());
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints one machine-readable ready line on stdout (tests and scripts wait for it instead of
/// sleeping), plus the pin for humans.
fn announce(ready: &hush_relay::Ready) {
    let pin = hex::encode(ready.pin);
    let cert = hex::encode(ready.cert_sha256);
    tracing::info!(quic = %ready.quic, ws = %ready.ws, http = %ready.http, pin = %pin, "relay ready");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "hush-relay ready quic={} ws={} http={} pin={} cert_sha256={}",
        ready.quic, ready.ws, ready.http, pin, cert
    );
    let _ = out.flush();
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
