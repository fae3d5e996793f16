//! `connect`: handshakes per second and handshake latency.
//!
//! `concurrency` workers each loop: open a TCP connection, complete the
//! WebSocket handshake (timed), then close politely (close frame, wait for the
//! server's) so that the server pays for a connection's whole life. Only
//! handshakes completed inside the window count.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Target;
use crate::proc::{Usage, Watch, loadgen_bound};
use crate::stats::{Latency, latency_histogram, record};

/// What a `connect` run does.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Connections in flight at once.
    pub concurrency: usize,
    /// Load before the window.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// The server's processes.
    pub pids: Vec<u32>,
    /// The room every connection joins.
    pub room: String,
}

/// What a `connect` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    /// Connections in flight.
    pub concurrency: usize,
    /// Handshakes completed inside the window.
    pub handshakes: u64,
    /// Failed connections or handshakes, whole run.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Handshakes per second inside the window.
    pub handshakes_per_second: f64,
    /// Server CPU per connection (handshake and close), microseconds.
    pub server_us_per_handshake: Option<f64>,
    /// Time from `connect()` to the server's 101, inside the window.
    pub latency: Latency,
    /// CPU and time of the window.
    pub window: Usage,
    /// True when the load generator, not the server, was the limit.
    pub loadgen_bound: bool,
}

struct State {
    measuring: Cell<bool>,
    stop: Cell<bool>,
    handshakes: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    hist: RefCell<Histogram<u64>>,
}

async fn worker(target: Target, state: Rc<State>, worker: usize, room: String) {
    let mut n = worker;
    while !state.stop.get() {
        let start = Instant::now();
        match target.connect(&room, n, None).await {
            Ok(mut ws) => {
                let took = start.elapsed();
                if state.measuring.get() {
                    state.handshakes.set(state.handshakes.get() + 1);
                    record(&mut state.hist.borrow_mut(), took.as_micros() as u64);
                }
                let _ = ws.send(Message::Close(None)).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            }
            Err(e) => {
                state.errors.set(state.errors.get() + 1);
                state
                    .first_error
                    .borrow_mut()
                    .get_or_insert_with(|| format!("{e:#}"));
                // A refused or failed connection returns at once: back off a
                // little so a dead server does not spin this loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        n += 1;
    }
}

/// Runs `connect` against `target`.
pub async fn run(target: &Target, opts: &ConnectOptions) -> anyhow::Result<ConnectReport> {
    let state = Rc::new(State {
        measuring: Cell::new(false),
        stop: Cell::new(false),
        handshakes: Cell::new(0),
        errors: Cell::new(0),
        first_error: RefCell::new(None),
        hist: RefCell::new(latency_histogram()),
    });
    let workers: Vec<_> = (0..opts.concurrency.max(1))
        .map(|w| tokio::task::spawn_local(worker(target.clone(), Rc::clone(&state), w, opts.room.clone())))
        .collect();
    tokio::time::sleep(opts.warmup).await;
    state.measuring.set(true);
    let watch = Watch::start(&opts.pids);
    tokio::time::sleep(opts.duration).await;
    let window = watch.stop();
    state.measuring.set(false);
    state.stop.set(true);
    for w in workers {
        let _ = w.await;
    }
    let handshakes = state.handshakes.get();
    if handshakes == 0 {
        anyhow::bail!(
            "no handshake completed: {}",
            state.first_error.borrow().as_deref().unwrap_or("no error either")
        );
    }
    Ok(ConnectReport {
        concurrency: opts.concurrency,
        handshakes,
        errors: state.errors.get(),
        first_error: state.first_error.borrow().clone(),
        handshakes_per_second: handshakes as f64 / window.seconds,
        server_us_per_handshake: window.server_cpu_seconds.map(|c| c * 1e6 / handshakes as f64),
        latency: Latency::of(&state.hist.borrow()),
        window,
        loadgen_bound: loadgen_bound(&window),
    })
}
