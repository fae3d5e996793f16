//! `raw-fanout`: the machine's floor for fan-out. One thread writes pre-built
//! WebSocket frames to N loopback sockets, one frame per `write` and then
//! several per `write`; a reader process on another core drains them. The
//! writer's CPU per frame is what any server must at least pay to deliver a
//! frame of that size on this machine: every server figure has this floor.
//!
//! ```sh
//! taskset -c 0 target/release/raw-fanout --sockets 1000 --reader-cpu 1
//! ```

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use estuary_bench::proc::cpu_seconds;
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "raw-fanout",
    about = "Writer CPU per pre-built WebSocket frame on loopback"
)]
struct Cli {
    /// Sockets written round-robin.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Frame size on the wire, bytes (header included).
    #[arg(long, default_value_t = 112)]
    frame: usize,
    /// Frames per write, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    batches: Vec<usize>,
    /// Seconds per batch size.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Leave Nagle's algorithm on (no `TCP_NODELAY`), as axum's and hyper's
    /// servers do by default: the kernel then coalesces small writes into
    /// fewer segments while earlier ones are unacknowledged.
    #[arg(long)]
    nagle: bool,
    /// Pin the reader process to this CPU (with `taskset`).
    #[arg(long)]
    reader_cpu: Option<usize>,
    /// Print the results as one JSON object on standard output.
    #[arg(long)]
    json: bool,
    /// Internal: run as the reader, connecting to this address.
    #[arg(long, hide = true)]
    reader: Option<SocketAddr>,
}

/// One batch size's figures.
#[derive(Serialize)]
struct Row {
    frames_per_write: usize,
    frames: u64,
    frames_per_second: f64,
    writer_us_per_frame: f64,
    reader_us_per_frame: Option<f64>,
}

/// A server-to-client text frame of `size` bytes on the wire: the chat
/// message shape, padded.
fn frame(size: usize) -> Vec<u8> {
    let payload_len = size.saturating_sub(2).min(125);
    let mut payload = br#"{"type":"chat_message","message":""#.to_vec();
    while payload.len() < payload_len.saturating_sub(2) {
        payload.push(b'x');
    }
    payload.extend_from_slice(br#""}"#);
    payload.truncate(payload_len);
    let mut f = vec![0x81, payload.len() as u8];
    f.extend_from_slice(&payload);
    f
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(addr) = cli.reader {
        return read_all(addr, cli.sockets);
    }
    if cli.frame > 127 {
        bail!("frames up to 127 bytes (a one-byte length)");
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut reader = spawn_reader(addr, &cli)?;
    let mut sockets = accept_all(&listener, &mut reader, cli.sockets, !cli.nagle)?;
    let one = frame(cli.frame);
    let mut rows = Vec::new();
    for &batch in &cli.batches {
        let buf: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * batch.max(1))
            .collect();
        // An untimed warm-up, so that the window neither starts cold nor
        // charges the reader for the previous batch size's backlog.
        let warm = Instant::now() + Duration::from_millis(200);
        while Instant::now() < warm {
            for s in sockets.iter_mut() {
                s.write_all(&buf)?;
            }
        }
        let (writer0, reader0) = (cpu_seconds(std::process::id()), cpu_seconds(reader.id()));
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(cli.seconds);
        let mut writes = 0u64;
        while Instant::now() < deadline {
            for s in sockets.iter_mut() {
                s.write_all(&buf)?;
            }
            writes += sockets.len() as u64;
        }
        let wall = start.elapsed().as_secs_f64();
        let frames = writes * batch.max(1) as u64;
        let writer = cpu_seconds(std::process::id()).zip(writer0).map(|(b, a)| b - a);
        let reader_cpu = cpu_seconds(reader.id()).zip(reader0).map(|(b, a)| b - a);
        rows.push(Row {
            frames_per_write: batch,
            frames,
            frames_per_second: frames as f64 / wall,
            writer_us_per_frame: writer.map_or(f64::NAN, |c| c * 1e6 / frames as f64),
            reader_us_per_frame: reader_cpu.map(|c| c * 1e6 / frames as f64),
        });
    }
    drop(sockets);
    let _ = reader.wait();
    eprintln!(
        "raw fan-out: {} loopback sockets, {}-byte frames, one writer thread, {}",
        cli.sockets,
        one.len(),
        if cli.nagle { "Nagle on" } else { "TCP_NODELAY" }
    );
    eprintln!("frames/write  frames/s      writer us/frame  reader us/frame");
    for r in &rows {
        eprintln!(
            "{:>12}  {:>12.0}  {:>15.3}  {:>15}",
            r.frames_per_write,
            r.frames_per_second,
            r.writer_us_per_frame,
            r.reader_us_per_frame.map_or("n/a".into(), |u| format!("{u:.3}"))
        );
    }
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"mode": "raw", "report": {"sockets": cli.sockets, "frame": one.len(), "nagle": cli.nagle, "rows": rows}})
        );
    }
    Ok(())
}

/// Accepts the reader's `n` connections, failing (not hanging) if the reader
/// dies or does not connect within 30 s.
fn accept_all(
    listener: &TcpListener,
    reader: &mut Child,
    n: usize,
    nodelay: bool,
) -> anyhow::Result<Vec<TcpStream>> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sockets = Vec::with_capacity(n);
    while sockets.len() < n {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(nodelay)?;
                sockets.push(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = reader.try_wait()? {
                    bail!(
                        "the reader process exited ({status}) after {} connections",
                        sockets.len()
                    );
                }
                if Instant::now() > deadline {
                    bail!("the reader connected {} of {n} sockets in 30 s", sockets.len());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).context("accepting the reader's sockets"),
        }
    }
    Ok(sockets)
}

fn spawn_reader(addr: SocketAddr, cli: &Cli) -> anyhow::Result<Child> {
    let me = std::env::current_exe()?;
    let mut cmd = match cli.reader_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(me);
            c
        }
        None => Command::new(me),
    };
    cmd.arg("--reader")
        .arg(addr.to_string())
        .arg("--sockets")
        .arg(cli.sockets.to_string())
        .stdout(Stdio::null());
    cmd.spawn().context("starting the reader process")
}

/// The reader: connects `n` sockets and drains them until the writer closes
/// them. One thread, readiness-driven, discarding what it reads.
fn read_all(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let stream = TcpStream::connect(addr)?;
            stream.set_nonblocking(true)?;
            let mut stream = tokio::net::TcpStream::from_std(stream)?;
            tasks.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt as _;
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
