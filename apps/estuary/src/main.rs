//! `estuary`: the chat application and push API on one port.

use clap::{Parser, Subcommand};
use estuary_app::config::{Config, ServeArgs};
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
    /// Print the effective configuration (secrets redacted) and exit.
    CheckConfig(ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => estuary_app::app::serve(Config::load(&args)?).await,
        Command::CheckConfig(args) => {
            println!("{:#?}", Config::load(&args)?.redacted());
            Ok(())
        }
    }
}
