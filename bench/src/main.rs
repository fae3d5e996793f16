//! `estuary-loadgen`: the chat-protocol load generator. See the library docs
//! and `docs/BENCHMARKS.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use estuary_bench::client::Target;
use estuary_bench::fanout::{FanoutOptions, FanoutReport, Load};
use estuary_bench::stats::us;
use estuary_bench::{connect, fanout, idle};

#[derive(Parser)]
#[command(name = "estuary-loadgen", about = "Load generator for the chat protocol")]
struct Cli {
    /// The server: ws://HOST:PORT.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8000")]
    target: String,
    /// Path of a room's socket; `{room}` is replaced by the room's name.
    #[arg(long, global = true, default_value = "/ws/chat/{room}/")]
    path: String,
    /// A process whose CPU and memory count as the server's (repeat for a
    /// server and its Redis).
    #[arg(long = "server-pid", global = true)]
    server_pids: Vec<u32>,
    /// Spread connections over this many source addresses 127.0.0.1..N.
    #[arg(long, global = true, default_value_t = 1)]
    sources: u8,
    /// Also print the report as one JSON object on standard output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// R rooms x M members, S senders per room; delivery, latency, server CPU.
    Fanout(FanoutArgs),
    /// A share of the members stop reading in a busy room; the healthy
    /// members' latency and the server's memory.
    Slow(SlowArgs),
    /// N idle connections; server memory per connection.
    Idle(IdleArgs),
    /// Handshakes per second and handshake latency.
    Connect(ConnectArgs),
}

#[derive(Args)]
struct Common {
    /// Length of each message's text, bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds of load before the window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds without progress after which the drain gives up.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Handshakes in flight while members connect.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(Args)]
struct FanoutArgs {
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Members per room (senders included).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Senders per room.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 8, conflicts_with = "rate")]
    window: usize,
    /// Open loop: messages per second per sender.
    #[arg(long)]
    rate: Option<f64>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct SlowArgs {
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Senders per room.
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Messages per second per sender (open loop).
    #[arg(long, default_value_t = 250.0)]
    rate: f64,
    /// Share of the non-sending members that stop reading.
    #[arg(long, default_value_t = 0.1)]
    slow_share: f64,
    /// Kernel receive buffer of a slow member, bytes.
    #[arg(long, default_value_t = 4096)]
    slow_recv_buffer: u32,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct IdleArgs {
    /// Connections.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Rooms they join.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Handshakes in flight.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(Args)]
struct ConnectArgs {
    /// Connections in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load before the window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds of the window.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

fn room_prefix() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("b{:x}{:x}r", t.as_millis() % 0xffff_ffff, std::process::id())
}

/// Seconds from the command line: finite and not negative.
fn secs(v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| anyhow::anyhow!("{v} is not a number of seconds"))
}

fn fanout_options(c: &Common, pids: &[u32]) -> anyhow::Result<FanoutOptions> {
    Ok(FanoutOptions {
        rooms: 0,
        clients: 0,
        senders: 0,
        load: Load::Closed { window: 1 },
        size: c.size,
        warmup: secs(c.warmup)?,
        duration: secs(c.duration)?,
        drain: secs(c.drain)?,
        slow_share: 0.0,
        slow_recv_buffer: 4096,
        connect_concurrency: c.connect_concurrency,
        pids: pids.to_vec(),
        room_prefix: room_prefix(),
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target::new(&cli.target, &cli.path, cli.sources)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let local = tokio::task::LocalSet::new();
    let pids = cli.server_pids.clone();
    let (mode, report) = local.block_on(&runtime, async {
        anyhow::Ok(match &cli.mode {
            Mode::Fanout(a) => {
                let opts = FanoutOptions {
                    rooms: a.rooms,
                    clients: a.clients,
                    senders: a.senders,
                    load: match a.rate {
                        Some(rate) => Load::Open { rate },
                        None => Load::Closed { window: a.window },
                    },
                    ..fanout_options(&a.common, &pids)?
                };
                let r = fanout::run(&target, &opts).await?;
                print_fanout(&r);
                ("fanout", serde_json::to_value(&r)?)
            }
            Mode::Slow(a) => {
                let opts = FanoutOptions {
                    rooms: a.rooms,
                    clients: a.clients,
                    senders: a.senders,
                    load: Load::Open { rate: a.rate },
                    slow_share: a.slow_share,
                    slow_recv_buffer: a.slow_recv_buffer,
                    ..fanout_options(&a.common, &pids)?
                };
                let r = fanout::run(&target, &opts).await?;
                print_fanout(&r);
                ("slow", serde_json::to_value(&r)?)
            }
            Mode::Idle(a) => {
                let opts = idle::IdleOptions {
                    connections: a.connections,
                    rooms: a.rooms,
                    connect_concurrency: a.connect_concurrency,
                    pids: pids.clone(),
                    room_prefix: room_prefix(),
                };
                let r = idle::run(&target, &opts).await?;
                eprintln!(
                    "idle: {} connections in {} rooms (opened in {:.1} s), {} closed by the server\nserver: {} per connection (RSS {} -> {} KiB); kernel TCP memory {} pages",
                    r.connections,
                    r.rooms,
                    r.connect_seconds,
                    r.closed_by_server,
                    r.kib_per_connection.map_or("n/a".into(), |k| format!("{k:.2} KiB")),
                    opt(r.rss_before_kib),
                    opt(r.rss_after_kib),
                    opt(r.tcp_mem_pages),
                );
                ("idle", serde_json::to_value(&r)?)
            }
            Mode::Connect(a) => {
                let opts = connect::ConnectOptions {
                    concurrency: a.concurrency,
                    warmup: secs(a.warmup)?,
                    duration: secs(a.duration)?,
                    pids: pids.clone(),
                    room: format!("{}0", room_prefix()),
                };
                let r = connect::run(&target, &opts).await?;
                eprintln!(
                    "connect: {} in flight, {} handshakes in {:.1} s = {:.0}/s, {} errors{}\nlatency: {}\nserver: {}\nloadgen: {}",
                    r.concurrency,
                    r.handshakes,
                    r.window.seconds,
                    r.handshakes_per_second,
                    r.errors,
                    r.first_error.as_deref().map_or(String::new(), |e| format!(" (first: {e})")),
                    r.latency.line(),
                    r.server_us_per_handshake
                        .map_or("CPU not watched (no --server-pid)".into(), |u| format!("{u:.1} us CPU per connection")),
                    cores(r.window.loadgen_cores(), r.loadgen_bound),
                );
                ("connect", serde_json::to_value(&r)?)
            }
        })
    })?;
    if cli.json {
        let out = serde_json::json!({"mode": mode, "target": cli.target, "report": report});
        println!("{out}");
    }
    Ok(())
}

fn opt(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |v| v.to_string())
}

fn cores(c: Option<f64>, bound: bool) -> String {
    let c = c.map_or("n/a".into(), |c| format!("{c:.2} cores"));
    if bound {
        format!("{c}: THE LOAD GENERATOR WAS THE LIMIT; rates are a floor of the server's")
    } else {
        c
    }
}

fn print_fanout(r: &FanoutReport) {
    let load = match r.load {
        Load::Closed { window } => format!("closed loop, window {window}"),
        Load::Open { rate } => format!("open loop, {rate} msg/s per sender"),
    };
    eprintln!(
        "fanout: {} rooms x {} members, {} senders per room, {}, {} B, {} slow",
        r.rooms, r.clients, r.senders, load, r.size, r.slow_clients
    );
    eprintln!(
        "deliveries: expected {} received {} lost {} duplicated {} (messages sent {}, foreign frames {}, members closed {}, stalls {})",
        r.expected, r.received, r.lost, r.duplicated, r.sent, r.foreign, r.closed_by_server, r.stalls
    );
    if r.slow_clients > 0 {
        eprintln!(
            "slow members closed by the server (code: count, 0 = no close frame): {:?}",
            r.slow_closed
        );
    }
    eprintln!(
        "window {:.1} s: {:.0} deliveries/s\nlatency: {}",
        r.window.seconds,
        r.deliveries_per_second,
        r.latency.line()
    );
    eprintln!(
        "server: {} ({}), RSS {} / peak {} / end {} KiB",
        r.server_us_per_delivery
            .map_or("CPU not watched (no --server-pid)".into(), |u| format!(
                "{u:.2} us CPU per delivery"
            )),
        cores(r.window.server_cores(), false),
        opt(r.server_rss_start_kib),
        opt(r.server_rss_peak_kib),
        opt(r.server_rss_end_kib),
    );
    eprintln!("loadgen: {}", cores(r.window.loadgen_cores(), r.loadgen_bound));
    if let Some(segments) = r.window.tcp_segments.filter(|_| r.window_deliveries > 0) {
        eprintln!(
            "tcp: {:.2} segments sent per delivery (both ends, acks included)",
            segments as f64 / r.window_deliveries as f64
        );
    }
    if r.latency.count > 0 && r.latency.p99_us > 1_000_000 {
        eprintln!(
            "note: p99 {} means messages queued for seconds",
            us(r.latency.p99_us)
        );
    }
}
