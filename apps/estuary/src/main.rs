//! `estuary`: the chat application and push API on one port.

use std::io::Write as _;

use clap::{Args, Parser, Subcommand};
use estuary_cli::config::{Config, LogFormat, Secrets, ServeArgs};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "estuary",
    version,
    about = "Real-time WebSockets, the Django Channels way, in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the chat application and the push API.
    Serve(ServeArgs),
    /// Print the effective configuration as TOML that --config reads back
    /// (secrets redacted unless --show-secrets), and exit.
    CheckConfig(CheckConfigArgs),
}

#[derive(Args)]
struct CheckConfigArgs {
    /// Print the secrets instead of "<redacted>" (a redacted file refuses to load).
    #[arg(long)]
    show_secrets: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = Config::load(&args)?;
            init_logs(config.log.format()?);
            estuary_cli::serve::serve(config).await
        }
        Command::CheckConfig(args) => {
            let secrets = if args.show_secrets {
                Secrets::Show
            } else {
                Secrets::Redact
            };
            let text = Config::load(&args.serve)?.to_toml(secrets)?;
            print(&text)
        }
    }
}

/// Logs to standard output as text or JSON lines, filtered by `RUST_LOG`
/// (default `info`).
fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// Writes `text` to standard output; a reader that went away
/// (`estuary check-config | head -1`) is no error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}
