//! `fanout` and `slow`: rooms of members, some of which send, every member
//! checking what it receives.
//!
//! Every message carries its room, its sender, a sequence number and its send
//! time (`{room}.{sender}.{seq}.{ns}.` padded with `x` to the message size).
//! Each member keeps a bitset per sender of its room, so the run counts
//! exactly which deliveries arrived, which were lost and which came twice.
//! Latency is the receive time minus the send time, both read from this
//! process's monotonic clock. Only deliveries inside the measurement window
//! count towards the rates and the histogram; loss counts the whole run.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::{SinkExt, Stream};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{Target, Ws, now_ns, ns_at, wait_until};
use crate::proc::{Usage, Watch, loadgen_bound, sum_rss};
use crate::stats::{Latency, latency_histogram, record};

/// How senders pace their messages.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Closed loop: each sender keeps `window` messages in flight, sending the
    /// next when its own copy of an earlier one comes back.
    Closed {
        /// Messages in flight per sender.
        window: usize,
    },
    /// Open loop: each sender sends `rate` messages per second, whatever the
    /// server does.
    Open {
        /// Messages per second per sender.
        rate: f64,
    },
}

/// What a `fanout` or `slow` run does.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// Rooms.
    pub rooms: usize,
    /// Members per room, senders and slow members included.
    pub clients: usize,
    /// Senders per room (members that also send).
    pub senders: usize,
    /// Pacing.
    pub load: Load,
    /// Length of the `message` field, in bytes.
    pub size: usize,
    /// Load before the measurement window starts.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// How long to wait, after the senders stop, for the last deliveries.
    pub drain: Duration,
    /// Share of the non-sending members that stop reading once the load starts.
    pub slow_share: f64,
    /// Kernel receive buffer of a slow member, in bytes.
    pub slow_recv_buffer: u32,
    /// Handshakes in flight while the members connect.
    pub connect_concurrency: usize,
    /// Processes whose CPU and memory are the server's (server, Redis).
    pub pids: Vec<u32>,
    /// Prefix of the room names; unique per run so that runs never share a
    /// group (a Redis layer keeps groups between server restarts).
    pub room_prefix: String,
}

/// What a `fanout` or `slow` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Rooms.
    pub rooms: usize,
    /// Members per room.
    pub clients: usize,
    /// Senders per room.
    pub senders: usize,
    /// Members that stopped reading, in all rooms.
    pub slow_clients: usize,
    /// Pacing.
    pub load: Load,
    /// Message size, bytes.
    pub size: usize,
    /// Messages sent, whole run.
    pub sent: u64,
    /// Deliveries owed to reading members for the messages sent.
    pub expected: u64,
    /// Distinct deliveries that arrived.
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Deliveries that arrived more than once.
    pub duplicated: u64,
    /// Frames with a well-formed id for another room or an unknown sender.
    pub foreign: u64,
    /// Reading members whose connection ended during the run.
    pub closed_by_server: u64,
    /// Slow members the server had closed by the end, by close code (0: the
    /// connection ended without a close frame).
    pub slow_closed: BTreeMap<u16, u64>,
    /// Closed-loop senders that waited 10 s for their own message and gave
    /// up on the ones in flight.
    pub stalls: u64,
    /// CPU and time of the measurement window.
    pub window: Usage,
    /// Deliveries inside the window.
    pub window_deliveries: u64,
    /// Deliveries per second inside the window.
    pub deliveries_per_second: f64,
    /// Server CPU per delivery, microseconds.
    pub server_us_per_delivery: Option<f64>,
    /// Delivery latency inside the window.
    pub latency: Latency,
    /// Server memory when the members had joined, KiB.
    pub server_rss_start_kib: Option<u64>,
    /// Highest server memory seen during the load, KiB.
    pub server_rss_peak_kib: Option<u64>,
    /// Server memory after the drain, KiB.
    pub server_rss_end_kib: Option<u64>,
    /// True when the load generator used most of its core while the server
    /// had room to spare: the rates are then the load generator's limit.
    pub loadgen_bound: bool,
}

/// Counters shared by every connection task of a run (one thread: `Cell`s).
struct Run {
    measuring: Cell<bool>,
    /// Set once the senders have stopped and the drain is over: connections
    /// ending after this are expected.
    ended: Cell<bool>,
    hist: RefCell<Histogram<u64>>,
    window_deliveries: Cell<u64>,
    received: Cell<u64>,
    duplicated: Cell<u64>,
    foreign: Cell<u64>,
    expected: Cell<u64>,
    sent: Cell<u64>,
    closed: Cell<u64>,
    stalls: Cell<u64>,
    /// Members per room that have seen a probe.
    ready: Vec<Cell<usize>>,
    /// Reading members per room: what each message owes.
    readers: Vec<u64>,
    /// Per sender (room * senders + s): highest own sequence seen + 1.
    acked: Vec<Cell<u64>>,
    ack: Vec<Notify>,
    rooms: Vec<String>,
}

/// One member's view: which messages of each sender of its room it has seen.
struct Member {
    room: usize,
    seen: Vec<Vec<u64>>,
    ready: bool,
}

/// The chat protocol's longest message.
pub const MAX_SIZE: usize = 1000;

/// A decoded message id.
struct Id {
    room: usize,
    sender: usize,
    seq: u64,
    sent_ns: u64,
}

fn parse_id(message: &str) -> Option<Id> {
    let mut parts = message.splitn(5, '.');
    Some(Id {
        room: parts.next()?.parse().ok()?,
        sender: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
        sent_ns: parts.next()?.parse().ok()?,
    })
}

/// The text a sender sends: its id, stamped with `sent_ns` (the time the
/// message was due, so that a sender held up by the server counts the wait).
fn message_text(room: usize, sender: usize, seq: u64, sent_ns: u64, size: usize) -> String {
    let mut m = format!("{room}.{sender}.{seq}.{sent_ns}.");
    while m.len() < size {
        m.push('x');
    }
    // serde_json escapes nothing here: digits, dots and x.
    format!(r#"{{"message":"{m}","username":"s{room}-{sender}"}}"#)
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow, default)]
    message: Option<&'a str>,
}

impl Run {
    /// Accounts one text frame received by `member`; returns the sequence
    /// number when it is the member's own message (`own` = its sender index).
    fn on_text(&self, member: &mut Member, text: &str, own: Option<usize>) -> Option<u64> {
        let Ok(Frame {
            message: Some(message),
        }) = serde_json::from_str::<Frame<'_>>(text)
        else {
            return None; // greetings, joins, errors: not part of the count
        };
        if let Some(probe_room) = message.strip_prefix("probe.") {
            if !member.ready && probe_room.split('.').next() == Some(&member.room.to_string()) {
                member.ready = true;
                let r = &self.ready[member.room];
                r.set(r.get() + 1);
            }
            return None;
        }
        let Some(id) = parse_id(message) else {
            return None; // a greeting or a join announcement with a message
        };
        if id.room != member.room || id.sender >= member.seen.len() {
            self.foreign.set(self.foreign.get() + 1);
            return None;
        }
        let bits = &mut member.seen[id.sender];
        let (word, bit) = ((id.seq / 64) as usize, 1u64 << (id.seq % 64));
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & bit != 0 {
            self.duplicated.set(self.duplicated.get() + 1);
            return None;
        }
        bits[word] |= bit;
        self.received.set(self.received.get() + 1);
        if self.measuring.get() {
            self.window_deliveries.set(self.window_deliveries.get() + 1);
            let latency_us = now_ns().saturating_sub(id.sent_ns) / 1000;
            record(&mut self.hist.borrow_mut(), latency_us);
        }
        (own == Some(id.sender)).then_some(id.seq)
    }

    fn sender_index(&self, room: usize, s: usize) -> usize {
        room * (self.acked.len() / self.rooms.len()) + s
    }
}

/// Reads a member's frames until the connection ends. `own` is the member's
/// sender index in its room, when it sends.
async fn read_member<S>(run: Rc<Run>, mut member: Member, mut stream: S, own: Option<usize>)
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                if let Some(seq) = run.on_text(&mut member, text.as_str(), own) {
                    let i = run.sender_index(member.room, own.unwrap_or(0));
                    if seq + 1 > run.acked[i].get() {
                        run.acked[i].set(seq + 1);
                        run.ack[i].notify_one();
                    }
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if !run.ended.get() {
        run.closed.set(run.closed.get() + 1);
    }
}

/// A slow member: reads until it has seen the probe, then stops reading until
/// the run ends, then reports how the server treated it (close code, 0 for
/// an abrupt end, `None` when still open).
async fn slow_member(
    run: Rc<Run>,
    mut member: Member,
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
) -> Option<u16> {
    while !member.ready {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                run.on_text(&mut member, text.as_str(), None);
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return Some(0),
        }
    }
    let _ = stop.wait_for(|s| *s).await;
    // The run is over: read what the server left, up to its close frame. A
    // second of silence means the server kept the member open.
    loop {
        match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return Some(frame.map_or(1005, |f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            Ok(None | Some(Err(_))) => return Some(0),
            Err(_) => return None,
        }
    }
}

struct Sender {
    run: Rc<Run>,
    room: usize,
    s: usize,
    load: Load,
    size: usize,
    sink: SplitSink<Ws, Message>,
    stop: watch::Receiver<bool>,
}

/// How long a sender's write may block before the run fails: a server
/// that stops reading a sender must not hang the load generator.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closed-loop sender waits for its own copy before it counts a
/// stall and gives up on what is in flight (all of it lost, or hopeless).
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Sender {
    async fn send(&mut self, seq: u64, sent_ns: u64) -> anyhow::Result<()> {
        self.account();
        let text = message_text(self.room, self.s, seq, sent_ns, self.size);
        tokio::time::timeout(WRITE_TIMEOUT, self.sink.feed(Message::text(text)))
            .await
            .context("the server did not read a sender's message for 10 s")??;
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        tokio::time::timeout(WRITE_TIMEOUT, self.sink.flush())
            .await
            .context("the server did not read a sender's messages for 10 s")??;
        Ok(())
    }

    fn account(&self) {
        self.run.sent.set(self.run.sent.get() + 1);
        self.run
            .expected
            .set(self.run.expected.get() + self.run.readers[self.room]);
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let i = self.run.sender_index(self.room, self.s);
        let mut seq = 0u64;
        match self.load {
            Load::Closed { window } => loop {
                if *self.stop.borrow() {
                    break;
                }
                let in_flight = seq - self.run.acked[i].get().min(seq);
                if in_flight < window as u64 {
                    for _ in in_flight..window as u64 {
                        self.send(seq, now_ns()).await?;
                        seq += 1;
                    }
                    self.flush().await?;
                    continue;
                }
                let run = Rc::clone(&self.run);
                tokio::select! {
                    _ = run.ack[i].notified() => {}
                    _ = self.stop.changed() => break,
                    _ = tokio::time::sleep(STALL_TIMEOUT) => {
                        // Our own copies stopped coming: count a stall and
                        // give up on what is in flight so the run goes on.
                        // (Lost messages alone never stall a sender: a later
                        // own copy acknowledges every earlier one.)
                        self.run.stalls.set(self.run.stalls.get() + 1);
                        self.run.acked[i].set(seq);
                    }
                }
            },
            Load::Open { rate } => {
                // Each sender's ticks are offset by its share of the period,
                // so that the senders' messages are spread over it rather
                // than all falling due at the same instant (a burst of every
                // room's deliveries at once, then silence).
                let period = Duration::from_secs_f64(1.0 / rate);
                let senders = self.run.acked.len().max(1);
                let phase = period.mul_f64(i as f64 / senders as f64);
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
                loop {
                    tokio::select! {
                        due = tick.tick() => {
                            self.send(seq, ns_at(due.into_std())).await?;
                            self.flush().await?;
                            seq += 1;
                        }
                        _ = self.stop.changed() => break,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs `fanout` (or `slow`, with a slow share) against `target`.
pub async fn run(target: &Target, opts: &FanoutOptions) -> anyhow::Result<FanoutReport> {
    if opts.senders == 0 || opts.senders > opts.clients {
        bail!("senders must be between 1 and the clients per room");
    }
    if !(0.0..=1.0).contains(&opts.slow_share) {
        bail!("the slow share must be between 0 and 1");
    }
    if matches!(opts.load, Load::Open { rate } if !(rate > 0.0 && rate <= 1e6)) {
        bail!("the rate must be above 0 and at most 1,000,000 messages per second per sender");
    }
    if opts.size > MAX_SIZE {
        bail!("the chat protocol allows messages of at most {MAX_SIZE} characters");
    }
    let slow_per_room = ((opts.clients - opts.senders) as f64 * opts.slow_share).round() as usize;
    let rooms: Vec<String> = (0..opts.rooms)
        .map(|r| format!("{}{r}", opts.room_prefix))
        .collect();
    let run = Rc::new(Run {
        measuring: Cell::new(false),
        ended: Cell::new(false),
        hist: RefCell::new(latency_histogram()),
        window_deliveries: Cell::new(0),
        received: Cell::new(0),
        duplicated: Cell::new(0),
        foreign: Cell::new(0),
        expected: Cell::new(0),
        sent: Cell::new(0),
        closed: Cell::new(0),
        stalls: Cell::new(0),
        ready: (0..opts.rooms).map(|_| Cell::new(0)).collect(),
        readers: vec![(opts.clients - slow_per_room) as u64; opts.rooms],
        acked: (0..opts.rooms * opts.senders).map(|_| Cell::new(0)).collect(),
        ack: (0..opts.rooms * opts.senders).map(|_| Notify::new()).collect(),
        rooms: rooms.clone(),
    });

    // Connect every member, a bounded number of handshakes at a time.
    let plan: Vec<(usize, usize)> = (0..opts.rooms)
        .flat_map(|r| (0..opts.clients).map(move |i| (r, i)))
        .collect();
    let connected: Vec<anyhow::Result<(usize, usize, Ws)>> = futures_util::stream::iter(plan)
        .map(|(r, i)| {
            let room = rooms[r].clone();
            let slow = i >= opts.clients - slow_per_room;
            let buffer = slow.then_some(opts.slow_recv_buffer);
            async move {
                let ws = target.connect(&room, r * opts.clients + i, buffer).await?;
                Ok((r, i, ws))
            }
        })
        .buffer_unordered(opts.connect_concurrency.max(1))
        .collect()
        .await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut senders = Vec::new();
    let mut probes = Vec::new();
    let mut slow_tasks = Vec::new();
    for conn in connected {
        let (r, i, ws) = conn?;
        let member = Member {
            room: r,
            seen: vec![Vec::new(); opts.senders],
            ready: false,
        };
        if i < opts.senders {
            let (sink, stream) = ws.split();
            tokio::task::spawn_local(read_member(Rc::clone(&run), member, stream, Some(i)));
            let sender = Sender {
                run: Rc::clone(&run),
                room: r,
                s: i,
                load: opts.load,
                size: opts.size,
                sink,
                stop: stop_rx.clone(),
            };
            if i == 0 {
                probes.push(sender);
            } else {
                senders.push(sender);
            }
        } else if i >= opts.clients - slow_per_room {
            slow_tasks.push(tokio::task::spawn_local(slow_member(
                Rc::clone(&run),
                member,
                ws,
                stop_rx.clone(),
            )));
        } else {
            tokio::task::spawn_local(read_member(Rc::clone(&run), member, ws, None));
        }
    }

    // Barrier: every member has joined its room when it has seen a probe
    // sent after it connected. Probes repeat until the whole room answers.
    let everyone = opts.clients;
    let mut n = 0u64;
    let barrier = tokio::time::Instant::now() + Duration::from_secs(120);
    while run.ready.iter().any(|r| r.get() < everyone) {
        if tokio::time::Instant::now() > barrier {
            let short: Vec<String> = run
                .ready
                .iter()
                .enumerate()
                .filter(|(_, r)| r.get() < everyone)
                .map(|(i, r)| format!("{} ({}/{everyone})", run.rooms[i], r.get()))
                .collect();
            bail!("members never saw the probe in: {}", short.join(", "));
        }
        for p in probes.iter_mut() {
            if run.ready[p.room].get() < everyone {
                let text = format!(r#"{{"message":"probe.{}.{n}","username":"probe"}}"#, p.room);
                p.sink
                    .send(Message::text(text))
                    .await
                    .context("sending a probe")?;
            }
        }
        n += 1;
        let settled = {
            let run = Rc::clone(&run);
            move || run.ready.iter().all(|r| r.get() >= everyone)
        };
        wait_until(Duration::from_millis(200), settled).await;
    }
    if run.closed.get() > 0 {
        bail!(
            "{} members were closed by the server before the load started",
            run.closed.get()
        );
    }

    // Load: warm-up, then the measured window, then the drain.
    let rss_start = sum_rss(&opts.pids);
    let peak = Rc::new(Cell::new(rss_start.unwrap_or(0)));
    let sampler = {
        let (pids, peak, run) = (opts.pids.clone(), Rc::clone(&peak), Rc::clone(&run));
        tokio::task::spawn_local(async move {
            while !run.ended.get() {
                if let Some(rss) = sum_rss(&pids) {
                    peak.set(peak.get().max(rss));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut sender_tasks = Vec::new();
    for s in probes.into_iter().chain(senders) {
        sender_tasks.push(tokio::task::spawn_local(s.run()));
    }
    tokio::time::sleep(opts.warmup).await;
    run.measuring.set(true);
    let watch = Watch::start(&opts.pids);
    tokio::time::sleep(opts.duration).await;
    let window = watch.stop();
    run.measuring.set(false);
    let _ = stop_tx.send(true);
    for t in sender_tasks {
        match tokio::time::timeout(WRITE_TIMEOUT + Duration::from_secs(1), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("a sender failed: {e:#}"),
            Ok(Err(e)) => eprintln!("a sender task failed: {e}"),
            Err(_) => eprintln!("a sender did not stop"),
        }
    }
    let mut last = run.received.get();
    loop {
        let done = {
            let run = Rc::clone(&run);
            move || run.received.get() >= run.expected.get()
        };
        if wait_until(opts.drain, done).await || run.received.get() == last {
            break;
        }
        last = run.received.get();
    }
    run.ended.set(true);
    let _ = sampler.await;
    let rss_end = sum_rss(&opts.pids);
    let mut slow_closed = BTreeMap::new();
    let slow_clients = slow_tasks.len();
    for t in slow_tasks {
        if let Ok(Some(code)) = t.await {
            *slow_closed.entry(code).or_insert(0) += 1;
        }
    }

    let window_deliveries = run.window_deliveries.get();
    let loadgen_bound = loadgen_bound(&window);
    Ok(FanoutReport {
        rooms: opts.rooms,
        clients: opts.clients,
        senders: opts.senders,
        slow_clients,
        load: opts.load,
        size: opts.size,
        sent: run.sent.get(),
        expected: run.expected.get(),
        received: run.received.get(),
        lost: run.expected.get().saturating_sub(run.received.get()),
        duplicated: run.duplicated.get(),
        foreign: run.foreign.get(),
        closed_by_server: run.closed.get(),
        slow_closed,
        stalls: run.stalls.get(),
        window,
        window_deliveries,
        deliveries_per_second: window_deliveries as f64 / window.seconds,
        server_us_per_delivery: window
            .server_cpu_seconds
            .filter(|_| window_deliveries > 0)
            .map(|c| c * 1e6 / window_deliveries as f64),
        latency: Latency::of(&run.hist.borrow()),
        server_rss_start_kib: rss_start,
        server_rss_peak_kib: rss_start.map(|_| peak.get()),
        server_rss_end_kib: rss_end,
        loadgen_bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip_at_the_requested_size() {
        let text = message_text(3, 1, 42, 7, 100);
        let frame: Frame<'_> = serde_json::from_str(&text).unwrap();
        let message = frame.message.unwrap();
        assert_eq!(message.len(), 100);
        let id = parse_id(message).unwrap();
        assert_eq!((id.room, id.sender, id.seq, id.sent_ns), (3, 1, 42, 7));
    }

    #[test]
    fn django_spacing_parses() {
        let frame: Frame<'_> = serde_json::from_str(r#"{"message": "1.0.7.5.xx", "username": "a"}"#).unwrap();
        assert_eq!(parse_id(frame.message.unwrap()).unwrap().seq, 7);
    }
}
