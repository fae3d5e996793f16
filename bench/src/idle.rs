//! `idle`: resident memory per idle connection.
//!
//! Reads the server's memory, opens N connections spread over rooms and over
//! 127.0.0.x source addresses, waits until every member has provably joined
//! (a probe message in each room reaches every member), reads the memory
//! again and divides the growth by the connections still open. The
//! connections stay open, each read by a parked task, until the report is
//! made; any the server ends are counted and reported.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Target, Ws, wait_until};
use crate::proc::{sum_rss, tcp_mem_pages};

/// What an `idle` run does.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// Connections to open.
    pub connections: usize,
    /// Rooms they are spread over.
    pub rooms: usize,
    /// Handshakes in flight.
    pub connect_concurrency: usize,
    /// The server's processes.
    pub pids: Vec<u32>,
    /// Prefix of the room names.
    pub room_prefix: String,
}

/// What an `idle` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Connections open when the memory was read.
    pub connections: usize,
    /// Connections the server ended before the memory was read (excluded
    /// from the figure).
    pub closed_by_server: usize,
    /// Rooms.
    pub rooms: usize,
    /// Server memory before the first connection, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server memory with every connection joined, KiB.
    pub rss_after_kib: Option<u64>,
    /// The growth divided by the connections, KiB.
    pub kib_per_connection: Option<f64>,
    /// Kernel TCP memory (both ends, machine-wide) with every connection
    /// open, in 4 KiB pages: not part of the RSS figure.
    pub tcp_mem_pages: Option<u64>,
    /// Seconds it took to open every connection.
    pub connect_seconds: f64,
}

/// Runs `idle` against `target`.
pub async fn run(target: &Target, opts: &IdleOptions) -> anyhow::Result<IdleReport> {
    let rss_before = sum_rss(&opts.pids);
    let started = std::time::Instant::now();
    let rooms = opts.rooms.max(1);
    let room_name = |r: usize| format!("{}{r}", opts.room_prefix);
    // Every member reads from the moment it is open (so that it answers the
    // server's keepalive pings however long opening the others takes); it
    // counts once when it sees its room's probe, and once if the server ends
    // its connection.
    let seen = Rc::new(Cell::new(0usize));
    let closed = Rc::new(Cell::new(0usize));
    let opened: Vec<anyhow::Result<usize>> = futures_util::stream::iter(0..opts.connections)
        .map(|n| {
            let room = room_name(n % rooms);
            let (seen, closed) = (Rc::clone(&seen), Rc::clone(&closed));
            async move {
                let mut ws = target.connect(&room, n, None).await?;
                tokio::task::spawn_local(async move {
                    let mut counted = false;
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(t))) if !counted && t.as_str().contains("idle-probe") => {
                                counted = true;
                                seen.set(seen.get() + 1);
                            }
                            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                            Some(Ok(_)) => {}
                        }
                    }
                    closed.set(closed.get() + 1);
                });
                Ok(n % rooms)
            }
        })
        .buffer_unordered(opts.connect_concurrency.max(1))
        .collect()
        .await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let mut held = 0;
    for conn in opened {
        conn.context("opening the idle connections")?;
        held += 1;
    }

    // Barrier: a prober per room (extra connections, closed before the
    // reading) repeats a probe until every member has seen one or is gone.
    // Repeating matters: a server may join a member to its room only after
    // the handshake (naive axum code subscribes in `on_upgrade`).
    let mut probers: Vec<Option<Ws>> = (0..rooms).map(|_| None).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut n = 0u64;
    while seen.get() + closed.get() < held {
        if std::time::Instant::now() > deadline {
            bail!(
                "only {} of {held} idle members saw their room's probe ({} closed by the server)",
                seen.get(),
                closed.get()
            );
        }
        for (room, prober) in probers.iter_mut().enumerate() {
            if prober.is_none() {
                let ws = target
                    .connect(&room_name(room), opts.connections + room, None)
                    .await?;
                *prober = Some(ws);
            }
            let Some(ws) = prober else { continue };
            let text = format!(r#"{{"message":"idle-probe {room} {n}","username":"probe"}}"#);
            let sent = tokio::time::timeout(Duration::from_secs(10), ws.send(Message::text(text))).await;
            if !matches!(sent, Ok(Ok(()))) {
                *prober = None; // the server dropped it: open another next round
            }
        }
        n += 1;
        let done = {
            let (seen, closed) = (Rc::clone(&seen), Rc::clone(&closed));
            move || seen.get() + closed.get() >= held
        };
        wait_until(Duration::from_millis(200), done).await;
    }
    drop(probers);
    // Let the server finish what the probes started (queues drained, the
    // probers' connections released) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = sum_rss(&opts.pids);
    let tcp = tcp_mem_pages();
    let open = held - closed.get();
    let per = match (rss_before, rss_after) {
        (Some(b), Some(a)) if open > 0 => Some((a as f64 - b as f64) / open as f64),
        _ => None,
    };
    Ok(IdleReport {
        connections: open,
        closed_by_server: closed.get(),
        rooms,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        kib_per_connection: per,
        tcp_mem_pages: tcp,
        connect_seconds,
    })
}
