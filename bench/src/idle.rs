//! `idle`: resident memory per idle connection.
//!
//! Reads the server's memory, opens N connections spread over rooms and over
//! 127.0.0.x source addresses, waits until every member has provably joined
//! (one probe message per room reaches every member), reads the memory again
//! and divides the growth by N. The connections stay open, each read by a
//! parked task, until the report is made.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Target, wait_until};
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
    /// Connections held.
    pub connections: usize,
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
    let conns: Vec<anyhow::Result<(usize, crate::client::Ws)>> =
        futures_util::stream::iter(0..opts.connections)
            .map(|n| {
                let room = format!("{}{}", opts.room_prefix, n % rooms);
                async move { Ok((n % rooms, target.connect(&room, n, None).await?)) }
            })
            .buffer_unordered(opts.connect_concurrency.max(1))
            .collect()
            .await;
    let connect_seconds = started.elapsed().as_secs_f64();

    // Keep one connection per room for the probe; park readers on the rest.
    let seen = Rc::new(Cell::new(0usize));
    let mut probes: Vec<Option<crate::client::Ws>> = (0..rooms).map(|_| None).collect();
    let mut held = 0;
    for conn in conns {
        let (room, ws) = conn.context("opening the idle connections")?;
        held += 1;
        if probes[room].is_none() {
            probes[room] = Some(ws);
            continue;
        }
        let mut reader = ws;
        let seen = Rc::clone(&seen);
        tokio::task::spawn_local(async move {
            let mut counted = false;
            while let Some(Ok(frame)) = reader.next().await {
                if !counted && matches!(&frame, Message::Text(t) if t.as_str().contains("idle-probe")) {
                    counted = true;
                    seen.set(seen.get() + 1);
                }
            }
        });
    }
    for (room, probe) in probes.iter_mut().enumerate() {
        if let Some(ws) = probe {
            let text = format!(r#"{{"message":"idle-probe {room}","username":"probe"}}"#);
            ws.send(Message::text(text)).await.context("sending the probe")?;
        }
    }
    let others = held - probes.iter().filter(|p| p.is_some()).count();
    let all_seen = {
        let seen = Rc::clone(&seen);
        move || seen.get() >= others
    };
    if !wait_until(Duration::from_secs(60), all_seen).await {
        bail!(
            "only {} of {others} idle members saw their room's probe",
            seen.get()
        );
    }
    // Let the server finish what the probe started (queues drained, buffers
    // released) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = sum_rss(&opts.pids);
    let tcp = tcp_mem_pages();
    let per = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / held as f64),
        _ => None,
    };
    Ok(IdleReport {
        connections: held,
        rooms,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        kib_per_connection: per,
        tcp_mem_pages: tcp,
        connect_seconds,
    })
}
