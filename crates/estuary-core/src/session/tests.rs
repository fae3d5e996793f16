//! How the session writes: batches, flushes and their order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use super::*;
use crate::close::CloseFrame;
use crate::{ChannelLayer, ConsumerError, Message, WsMessage};

/// Records what the session writes, flush by flush; reads client frames
/// from a queue the test feeds.
pub(super) struct Recorder {
    inbound: mpsc::UnboundedReceiver<Inbound>,
    pub(super) fed: Vec<WsMessage>,
    pub(super) flushes: Flushes,
}

/// Everything written so far, flush by flush.
pub(super) type Flushes = Arc<Mutex<Vec<Vec<WsMessage>>>>;

impl Recorder {
    /// A recorder, the sender of its client frames, and its flushes.
    pub(super) fn new() -> (Self, mpsc::UnboundedSender<Inbound>, Flushes) {
        let (to_session, inbound) = mpsc::unbounded_channel();
        let flushes = Flushes::default();
        let recorder = Recorder {
            inbound,
            fed: Vec::new(),
            flushes: flushes.clone(),
        };
        (recorder, to_session, flushes)
    }

    /// No client frame waits to be read.
    pub(super) fn has_no_inbound(&self) -> bool {
        self.inbound.is_empty()
    }
}

impl Transport for Recorder {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        self.inbound.recv().await.map(Ok)
    }
    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        self.fed.push(message);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        if !self.fed.is_empty() {
            self.flushes.lock().unwrap().push(std::mem::take(&mut self.fed));
        }
        Ok(())
    }
    async fn ping(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    async fn close(&mut self, _frame: Option<CloseFrame>) {}
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "say")]
    Say { n: u32 },
}

/// Sends one frame per event.
struct Speaker;

impl Consumer for Speaker {
    type Event = Event;
    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Say { n } = event;
        ctx.send(WsMessage::text(n.to_string())).await
    }
}

pub(super) fn say(n: u32) -> Message {
    Message::from_json(&serde_json::json!({"type": "say", "n": n})).unwrap()
}

async fn run_with_backlog(backlog: u32, config: SessionConfig) -> Vec<Vec<WsMessage>> {
    run_backlog(Speaker, (0..backlog).map(say).collect(), config, |recorder| {
        recorder
    })
    .await
}

/// Runs `consumer` with `backlog` already in its channel, over the
/// transport `wrap` makes of a recorder, until as many frames as messages
/// were written; then closes it and returns the flushes.
pub(super) async fn run_backlog<C: Consumer, T: Transport + 'static>(
    consumer: C,
    backlog: Vec<Message>,
    config: SessionConfig,
    wrap: impl FnOnce(Recorder) -> T,
) -> Vec<Vec<WsMessage>> {
    let layer = ChannelLayerHandle::default();
    let (session, _) = Session::open(consumer, Scope::builder("/ws/t").build(), layer.clone(), config)
        .await
        .expect("accepted");
    let channel = session.channel_name().clone();
    let expected = backlog.len();
    for message in backlog {
        layer.send(&channel, message).await.unwrap();
    }
    let (recorder, to_session, flushes) = Recorder::new();
    let task = tokio::spawn(session.run(wrap(recorder), CancellationToken::new()));
    // Wait (bounded) until every frame was written, then close.
    let written = {
        let flushes = flushes.clone();
        move || flushes.lock().unwrap().iter().map(Vec::len).sum::<usize>()
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while written() < expected {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every frame written");
    to_session.send(Inbound::Close(None)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    std::mem::take(&mut *flushes.lock().unwrap())
}

pub(super) fn texts(flushes: &[Vec<WsMessage>]) -> Vec<String> {
    flushes
        .iter()
        .flatten()
        .map(|m| m.as_text().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_backlog_of_layer_messages_leaves_in_one_flush_in_order() {
    let flushes = run_with_backlog(10, SessionConfig::default()).await;
    assert_eq!(flushes.len(), 1, "one write for the whole backlog: {:?}", flushes);
    assert_eq!(
        texts(&flushes),
        (0..10).map(|n| n.to_string()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn draining_stops_at_half_the_outbound_queue() {
    let config = SessionConfig {
        outbound_capacity: 8,
        ..SessionConfig::default()
    };
    let flushes = run_with_backlog(20, config).await;
    // Batches of at most half the queue (4) plus the message that started
    // each, never a full queue; nothing lost, nothing reordered.
    assert!(flushes.len() >= 4, "{flushes:?}");
    assert!(flushes.iter().all(|f| f.len() <= 5), "{flushes:?}");
    assert_eq!(
        texts(&flushes),
        (0..20).map(|n| n.to_string()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_lone_message_is_written_at_once() {
    let flushes = run_with_backlog(1, SessionConfig::default()).await;
    assert_eq!(texts(&flushes), ["0"]);
}

/// A running session of `consumer` in the group "room", over a recorder.
struct InRoom {
    layer: ChannelLayerHandle,
    room: crate::GroupName,
    to_session: mpsc::UnboundedSender<Inbound>,
    flushes: Flushes,
    task: tokio::task::JoinHandle<Outcome>,
}

impl InRoom {
    async fn start<C: Consumer>(consumer: C) -> Self {
        let layer = ChannelLayerHandle::default();
        let (session, _) = Session::open(
            consumer,
            Scope::builder("/ws/t").build(),
            layer.clone(),
            SessionConfig::default(),
        )
        .await
        .expect("accepted");
        let room = crate::GroupName::new("room").unwrap();
        layer.group_add(&room, session.channel_name()).await.unwrap();
        let (recorder, to_session, flushes) = Recorder::new();
        let task = tokio::spawn(session.run(recorder, CancellationToken::new()));
        Self {
            layer,
            room,
            to_session,
            flushes,
            task,
        }
    }

    /// Closes from the client side and waits for the session to end.
    async fn close(self) {
        self.to_session.send(Inbound::Close(None)).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_live_session_behind_on_a_burst_loses_nothing() {
    let in_room = InRoom::start(Speaker).await;
    let (layer, room, flushes) = (
        in_room.layer.clone(),
        in_room.room.clone(),
        in_room.flushes.clone(),
    );
    let written = || flushes.lock().unwrap().iter().map(Vec::len).sum::<usize>();
    let wait_for = |n: usize| {
        tokio::time::timeout(Duration::from_secs(10), async move {
            while written() < n {
                tokio::task::yield_now().await;
            }
        })
    };
    // The session runs (and so is live) once it wrote a first message.
    layer.group_send(&room, say(0)).await.unwrap();
    wait_for(1).await.expect("first frame");
    // A burst of 3 x the capacity (100) while the session cannot run: kept.
    for n in 1..=300 {
        let report = layer.group_send(&room, say(n)).await.unwrap();
        assert_eq!(report.dropped, 0, "message {n} dropped");
    }
    assert!(layer.backlogged(), "the layer asks sessions to stop reading");
    wait_for(301).await.expect("every frame written");
    assert!(!layer.backlogged());
    in_room.close().await;
    let flushes = std::mem::take(&mut *flushes.lock().unwrap());
    assert_eq!(
        texts(&flushes),
        (0..=300).map(|n| n.to_string()).collect::<Vec<_>>()
    );
}

/// Waits on `HOLD` in its first event, like a handler calling a slow service.
struct Waiter;

static HOLD: tokio::sync::Notify = tokio::sync::Notify::const_new();

impl Consumer for Waiter {
    type Event = Event;
    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Say { n } = event;
        if n == 0 {
            HOLD.notified().await;
        }
        ctx.send(WsMessage::text(n.to_string())).await
    }
}

#[tokio::test]
async fn a_handler_that_waits_does_not_hold_the_server_back() {
    let in_room = InRoom::start(Waiter).await;
    let (layer, room) = (in_room.layer.clone(), in_room.room.clone());
    layer.group_send(&room, say(0)).await.unwrap();
    // The handler is now waiting: its channel no longer counts as live, so a
    // burst past the capacity is dropped for it (counted) rather than making
    // every session stop reading its client.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::task::yield_now().await;
            let report = layer.group_send(&room, say(1)).await.unwrap();
            if report.dropped > 0 {
                break;
            }
        }
    })
    .await
    .expect("the waiting member's queue filled and dropped");
    assert!(!layer.backlogged());
    HOLD.notify_one();
    in_room.close().await;
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum KickEvent {
    #[serde(rename = "say")]
    Say { n: u32 },
    #[serde(rename = "kick")]
    Kick,
}

/// Renders what it says; closes with 4000 on a kick.
struct Kicker;

impl Consumer for Kicker {
    type Event = KickEvent;
    fn render(event: &KickEvent) -> Option<WsMessage> {
        match event {
            KickEvent::Say { n } => Some(WsMessage::text(n.to_string())),
            KickEvent::Kick => None,
        }
    }
    async fn event(&mut self, ctx: &mut Context, _kick: KickEvent) -> Result<(), ConsumerError> {
        ctx.close(CloseCode::from(4000), "kicked").await
    }
}

/// A rendered frame held behind a `ctx.close` is not sent, and the close
/// keeps its code (it did not turn into an abnormal 1006).
#[tokio::test]
async fn a_rendered_frame_after_a_close_is_not_sent() {
    let layer = ChannelLayerHandle::default();
    let (session, _) = Session::open(
        Kicker,
        Scope::builder("/ws/t").build(),
        layer.clone(),
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    let channel = session.channel_name().clone();
    layer.send(&channel, say(0)).await.unwrap();
    let kick = Message::from_json(&serde_json::json!({"type": "kick"})).unwrap();
    layer.send(&channel, kick).await.unwrap();
    layer.send(&channel, say(1)).await.unwrap();
    let (recorder, _to_session, flushes) = Recorder::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        session.run(recorder, CancellationToken::new()),
    )
    .await
    .expect("the session ends after its close");
    assert_eq!(outcome.code, CloseCode::from(4000));
    assert_eq!(texts(&flushes.lock().unwrap()), ["0"]);
}

/// Reads its own channel in `disconnect` (a consumer that waits there for
/// the answers to what it sent) and reports what it read.
struct ReadsAtTheEnd {
    read: Option<tokio::sync::oneshot::Sender<Message>>,
}

impl Consumer for ReadsAtTheEnd {
    type Event = Event;

    async fn disconnect(&mut self, ctx: &mut Context, _code: CloseCode) {
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            ctx.channel_layer().receive(ctx.channel_name()),
        );
        if let (Ok(Ok(message)), Some(tx)) = (read.await, self.read.take()) {
            let _ = tx.send(message);
        }
    }
}

#[tokio::test]
async fn disconnect_can_read_the_channel_the_session_read() {
    let layer = ChannelLayerHandle::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let consumer = ReadsAtTheEnd { read: Some(tx) };
    let (session, _) = Session::open(
        consumer,
        Scope::builder("/ws/t").build(),
        layer.clone(),
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    let channel = session.channel_name().clone();
    let (recorder, to_session, _flushes) = Recorder::new();
    let task = tokio::spawn(session.run(recorder, CancellationToken::new()));
    // The session waits on its channel (its waker is in the queue) when the
    // client leaves; the message comes while `disconnect` reads.
    tokio::task::yield_now().await;
    to_session.send(Inbound::Close(None)).unwrap();
    let sender = async {
        tokio::task::yield_now().await;
        layer.send(&channel, say(7)).await.unwrap();
    };
    let (read, ()) = tokio::join!(rx, sender);
    let read = read.expect("disconnect read the message");
    assert_eq!(read, say(7));
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

/// Reads a recorded group's history in `connect`, after joining it and
/// sending to it: the live copies of what it read are dropped.
struct Recovering;

impl Consumer for Recovering {
    type Event = Event;

    async fn connect(&mut self, ctx: &mut Context) -> Result<crate::Connect, ConsumerError> {
        let room = crate::GroupName::new("rec_room")?;
        ctx.group_add(&room).await?;
        for n in 0..3 {
            ctx.group_send(&room, &serde_json::json!({"type": "say", "n": n}))
                .await?;
        }
        let read = ctx.history_recent(&room, 10).await?;
        for message in &read.messages {
            ctx.send(WsMessage::text(format!("r{}", message.to_json()["n"])))
                .await?;
        }
        ctx.skip_recorded_through(read.position);
        Ok(crate::Connect::accept())
    }

    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Say { n } = event;
        ctx.send(WsMessage::text(n.to_string())).await
    }
}

#[tokio::test]
async fn recorded_messages_already_read_are_not_delivered_again() {
    let config = crate::ChannelLayerConfig::default()
        .with_history_glob("rec_*", crate::HistoryConfig::new(10, Duration::from_secs(60)))
        .unwrap();
    let layer = ChannelLayerHandle::new(crate::InMemoryChannelLayer::new(config));
    let (session, _) = Session::open(
        Recovering,
        Scope::builder("/ws/t").build(),
        layer.clone(),
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    let (recorder, to_session, flushes) = Recorder::new();
    let task = tokio::spawn(session.run(recorder, CancellationToken::new()));
    let room = crate::GroupName::new("rec_room").unwrap();
    layer.group_send(&room, say(3)).await.unwrap();
    let written = {
        let flushes = flushes.clone();
        move || flushes.lock().unwrap().iter().map(Vec::len).sum::<usize>()
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while written() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the recovered frames and the live one written");
    to_session.send(Inbound::Close(None)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(texts(&flushes.lock().unwrap()), ["r0", "r1", "r2", "3"]);
}

/// Queues frames in `connect` with `try_send` until it finds no room,
/// and reports how many it queued.
struct FillsInConnect {
    queued: Option<tokio::sync::oneshot::Sender<usize>>,
}

impl Consumer for FillsInConnect {
    type Event = crate::NoEvent;
    async fn connect(&mut self, ctx: &mut Context) -> Result<crate::Connect, ConsumerError> {
        let mut n = 0;
        while ctx.try_send(WsMessage::text(n.to_string()))? {
            n += 1;
        }
        if let Some(tell) = self.queued.take() {
            let _ = tell.send(n);
        }
        Ok(crate::Connect::accept())
    }
}

#[tokio::test]
async fn try_send_in_connect_fills_the_queue_without_waiting_then_all_of_it_is_written() {
    let (tell, told) = tokio::sync::oneshot::channel();
    let config = SessionConfig {
        outbound_capacity: 4,
        ..SessionConfig::default()
    };
    let (session, _) = Session::open(
        FillsInConnect { queued: Some(tell) },
        Scope::builder("/ws/t").build(),
        ChannelLayerHandle::default(),
        config,
    )
    .await
    .expect("accepted at once: try_send never waits for the grace");
    assert_eq!(told.await.unwrap(), 4);
    let (recorder, to_session, flushes) = Recorder::new();
    let task = tokio::spawn(session.run(recorder, CancellationToken::new()));
    tokio::time::timeout(Duration::from_secs(10), async {
        while flushes.lock().unwrap().iter().map(Vec::len).sum::<usize>() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the queued frames are written");
    assert_eq!(texts(&flushes.lock().unwrap()), ["0", "1", "2", "3"]);
    to_session.send(Inbound::Close(None)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

/// Hands each written message to the test as it is flushed.
struct Tap {
    inbound: mpsc::UnboundedReceiver<Inbound>,
    fed: Vec<WsMessage>,
    written: mpsc::UnboundedSender<WsMessage>,
}

impl Transport for Tap {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        self.inbound.recv().await.map(Ok)
    }
    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        self.fed.push(message);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        for message in self.fed.drain(..) {
            let _ = self.written.send(message);
        }
        Ok(())
    }
    async fn ping(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    async fn close(&mut self, _frame: Option<CloseFrame>) {}
}

/// Renders what it says, echoes its client, and hands out a client handle.
struct Resting {
    handle: Arc<Mutex<Option<crate::ClientHandle>>>,
}

impl Consumer for Resting {
    type Event = Event;
    fn render(event: &Event) -> Option<WsMessage> {
        let Event::Say { n } = event;
        Some(WsMessage::text(n.to_string()))
    }
    async fn connect(&mut self, ctx: &mut Context) -> Result<crate::Connect, ConsumerError> {
        *self.handle.lock().unwrap() = Some(ctx.client());
        Ok(crate::Connect::accept())
    }
    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        ctx.send(message).await
    }
}

/// After a delivery the session waits without polling every source again:
/// each source still wakes it (the client, another task's handle, the
/// layer, the shutdown).
#[tokio::test]
async fn after_a_delivery_every_source_still_wakes_the_session() {
    let layer = ChannelLayerHandle::default();
    let handle = Arc::new(Mutex::new(None));
    let (session, _) = Session::open(
        Resting {
            handle: handle.clone(),
        },
        Scope::builder("/ws/t").build(),
        layer.clone(),
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    let handle = handle.lock().unwrap().take().expect("a handle");
    let room = crate::GroupName::new("room").unwrap();
    layer.group_add(&room, session.channel_name()).await.unwrap();
    let (to_session, inbound) = mpsc::unbounded_channel();
    let (written, mut client) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let tap = Tap {
        inbound,
        fed: Vec::new(),
        written,
    };
    let task = tokio::spawn(session.run(tap, shutdown.clone()));
    let limit = Duration::from_secs(10);
    // Each step starts with a delivery, after which the session rests.
    layer.group_send(&room, say(1)).await.unwrap();
    assert_eq!(next(&mut client).await, "1");
    to_session.send(Inbound::Message(WsMessage::text("hi"))).unwrap();
    assert_eq!(next(&mut client).await, "hi", "the client wakes it");
    layer.group_send(&room, say(2)).await.unwrap();
    assert_eq!(next(&mut client).await, "2");
    handle.send(WsMessage::text("handle")).await.unwrap();
    assert_eq!(next(&mut client).await, "handle", "another task's send wakes it");
    layer.group_send(&room, say(3)).await.unwrap();
    assert_eq!(next(&mut client).await, "3");
    layer.group_send(&room, say(4)).await.unwrap();
    assert_eq!(next(&mut client).await, "4", "the layer wakes it");
    shutdown.cancel();
    let outcome = tokio::time::timeout(limit, task)
        .await
        .expect("ended in time")
        .unwrap();
    assert_eq!(outcome.code, CloseCode::GOING_AWAY, "the shutdown wakes it");
}

/// The next message the session writes, as text.
async fn next(client: &mut mpsc::UnboundedReceiver<WsMessage>) -> String {
    let message = tokio::time::timeout(Duration::from_secs(10), client.recv())
        .await
        .expect("written in time");
    message
        .expect("the session is running")
        .as_text()
        .unwrap_or_default()
        .to_owned()
}
