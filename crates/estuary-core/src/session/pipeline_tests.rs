//! Pipelined group sends (`Context::group_send_pipelined`) through a
//! session: started in order, bounded by the window (the client is not read
//! while it is full), failures reported to the consumer, and the sends in
//! flight at disconnect completed and reported before `disconnect`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};

use super::*;
use crate::close::CloseFrame;
use crate::layer::{ChannelLayerError, GroupSendReport, SendError};
use crate::names::{ChannelName, GroupName};
use crate::{ConsumerError, InMemoryChannelLayer, Message, NoEvent, WsMessage};

/// Longest any awaited step may take (paused time: only reached when the
/// awaited event never comes).
const LIMIT: Duration = Duration::from_secs(30);

/// The in-memory layer, except that each group send records its number
/// when first polled, then waits for a permit before delivering; the send
/// numbered `fail` fails instead of delivering.
#[derive(Clone)]
struct Gated {
    inner: InMemoryChannelLayer,
    permits: Arc<Semaphore>,
    started: Arc<watch::Sender<Vec<u64>>>,
    fail: u64,
}

impl Gated {
    fn new(fail: u64) -> Self {
        Self {
            inner: InMemoryChannelLayer::default(),
            permits: Arc::new(Semaphore::new(0)),
            started: Arc::new(watch::channel(Vec::new()).0),
            fail,
        }
    }

    async fn wait_started(&self, count: usize) {
        let mut seen = self.started.subscribe();
        tokio::time::timeout(LIMIT, seen.wait_for(|s| s.len() >= count))
            .await
            .expect("the sends start")
            .expect("the layer lives");
    }
}

fn number(message: &Message) -> u64 {
    let value: serde_json::Value = rmp_serde::from_slice(message.as_bytes()).expect("msgpack");
    value["n"].as_u64().expect("numbered")
}

impl ChannelLayer for Gated {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        self.inner.new_channel().await
    }
    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), SendError> {
        self.inner.send(channel, message).await
    }
    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        self.inner.receive(channel).await
    }
    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        self.inner.group_add(group, channel).await
    }
    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        self.inner.group_discard(group, channel).await
    }
    async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        let n = number(&message);
        self.started.send_modify(|s| s.push(n));
        self.permits.acquire().await.expect("open").forget();
        if n == self.fail {
            return Err(ChannelLayerError::ChannelClosed(
                ChannelName::new("specific.x!gone").unwrap(),
            ));
        }
        self.inner.group_send(group, message).await
    }
    async fn flush(&self) -> Result<(), ChannelLayerError> {
        self.inner.flush().await
    }
    fn pipelines_group_sends(&self) -> bool {
        true
    }
}

/// Relays each client message (a number) to "room", pipelined; tells the
/// client of a failed send, and records every failure it hears of.
struct Relay {
    failures: Arc<Mutex<Vec<String>>>,
    disconnected: Arc<Mutex<Option<usize>>>,
}

fn room() -> GroupName {
    GroupName::new("room").unwrap()
}

impl Consumer for Relay {
    type Event = NoEvent;

    async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
        let n: u64 = msg.as_text().unwrap_or_default().parse().unwrap_or_default();
        ctx.group_send_pipelined(&room(), &serde_json::json!({"type": "say", "n": n}))
            .await
    }

    async fn group_send_failed(
        &mut self,
        ctx: &mut Context,
        group: GroupName,
        error: ConsumerError,
    ) -> Result<(), ConsumerError> {
        self.failures.lock().unwrap().push(format!("{group}: {error}"));
        let _ = ctx.send_text("not delivered").await;
        Ok(())
    }

    async fn disconnect(&mut self, _ctx: &mut Context, _code: CloseCode) {
        *self.disconnected.lock().unwrap() = Some(self.failures.lock().unwrap().len());
    }
}

/// Counts the client messages the session read; publishes what it writes.
struct Client {
    inbound: mpsc::UnboundedReceiver<Inbound>,
    read: Arc<AtomicUsize>,
    written: Arc<watch::Sender<Vec<String>>>,
}

impl Transport for Client {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        let inbound = self.inbound.recv().await;
        if matches!(inbound, Some(Inbound::Message(_))) {
            self.read.fetch_add(1, Ordering::SeqCst);
        }
        inbound.map(Ok)
    }
    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        let text = message.as_text().unwrap_or_default().to_owned();
        self.written.send_modify(|w| w.push(text));
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    async fn ping(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    async fn close(&mut self, _frame: Option<CloseFrame>) {}
}

struct Running {
    layer: Gated,
    member: ChannelName,
    to_session: mpsc::UnboundedSender<Inbound>,
    read: Arc<AtomicUsize>,
    written: Arc<watch::Sender<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    disconnected: Arc<Mutex<Option<usize>>>,
    task: tokio::task::JoinHandle<Outcome>,
}

impl Running {
    async fn start(fail: u64, window: usize) -> Self {
        let layer = Gated::new(fail);
        let member = layer.inner.new_channel().await.unwrap();
        layer.inner.group_add(&room(), &member).await.unwrap();
        let failures = Arc::new(Mutex::new(Vec::new()));
        let disconnected = Arc::new(Mutex::new(None));
        let relay = Relay {
            failures: failures.clone(),
            disconnected: disconnected.clone(),
        };
        let config = SessionConfig {
            group_send_window: window,
            ..SessionConfig::default()
        };
        let (session, _) = Session::open(
            relay,
            Scope::builder("/ws/t").build(),
            ChannelLayerHandle::new(layer.clone()),
            config,
        )
        .await
        .expect("accepted");
        let (to_session, inbound) = mpsc::unbounded_channel();
        let read = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(watch::channel(Vec::new()).0);
        let client = Client {
            inbound,
            read: read.clone(),
            written: written.clone(),
        };
        let task = tokio::spawn(session.run(client, CancellationToken::new()));
        Self {
            layer,
            member,
            to_session,
            read,
            written,
            failures,
            disconnected,
            task,
        }
    }

    fn say(&self, n: u64) {
        self.to_session
            .send(Inbound::Message(WsMessage::text(n.to_string())))
            .unwrap();
    }

    /// The numbers the member received, `count` of them.
    async fn member_got(&self, count: usize) -> Vec<u64> {
        let mut got = Vec::new();
        for _ in 0..count {
            let message = tokio::time::timeout(LIMIT, self.layer.inner.receive(&self.member))
                .await
                .expect("delivered")
                .expect("open");
            got.push(number(&message));
        }
        got
    }
}

/// Lets every task run until none has anything to do (paused time: the
/// clock moves only once the runtime is idle).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_full_window_stops_reading_the_client_and_order_is_kept() {
    let running = Running::start(0, 2).await;
    for n in 1..=5 {
        running.say(n);
    }
    running.layer.wait_started(2).await;
    settle().await;
    assert_eq!(
        running.read.load(Ordering::SeqCst),
        2,
        "nothing read while the window is full"
    );
    assert_eq!(*running.layer.started.borrow(), [1, 2]);

    // The oldest completes: one more client message is read and sent.
    running.layer.permits.add_permits(1);
    running.layer.wait_started(3).await;
    settle().await;
    assert_eq!(running.read.load(Ordering::SeqCst), 3);

    running.layer.permits.add_permits(4);
    running.layer.wait_started(5).await;
    assert_eq!(
        *running.layer.started.borrow(),
        [1, 2, 3, 4, 5],
        "started in the order issued"
    );
    assert_eq!(running.member_got(5).await, [1, 2, 3, 4, 5], "delivered in order");
    assert!(running.failures.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_send_reaches_the_consumer_and_the_connection_stays() {
    let running = Running::start(2, 8).await;
    running.layer.permits.add_permits(100);
    for n in 1..=3 {
        running.say(n);
    }
    let mut written = running.written.subscribe();
    tokio::time::timeout(
        LIMIT,
        written.wait_for(|w| w.iter().any(|t| t == "not delivered")),
    )
    .await
    .expect("the sender is told")
    .unwrap();
    assert_eq!(running.member_got(2).await, [1, 3]);
    assert_eq!(running.failures.lock().unwrap().len(), 1);
    // Still open: another message goes through.
    running.say(4);
    assert_eq!(running.member_got(1).await, [4]);
    assert!(!running.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn sends_in_flight_at_disconnect_complete_and_are_reported_before_disconnect() {
    let mut running = Running::start(2, 8).await;
    for n in 1..=3 {
        running.say(n);
    }
    running.layer.wait_started(3).await;
    running.to_session.send(Inbound::Close(None)).unwrap();
    settle().await;
    assert!(!running.task.is_finished(), "the session waits for its sends");
    running.layer.permits.add_permits(3);
    tokio::time::timeout(LIMIT, &mut running.task)
        .await
        .expect("the session ends once its sends complete")
        .expect("no panic");
    assert_eq!(
        running.member_got(2).await,
        [1, 3],
        "the sends in flight were delivered"
    );
    assert_eq!(
        *running.disconnected.lock().unwrap(),
        Some(1),
        "the failure was reported before disconnect"
    );
}

#[tokio::test]
async fn in_memory_pipelined_sends_complete_at_once() {
    let layer = InMemoryChannelLayer::default();
    let member = layer.new_channel().await.unwrap();
    layer.group_add(&room(), &member).await.unwrap();
    let (mut session, _) = Session::open(
        Relay {
            failures: Arc::default(),
            disconnected: Arc::default(),
        },
        Scope::builder("/ws/t").build(),
        ChannelLayerHandle::new(layer.clone()),
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    for n in 0..100u64 {
        session
            .ctx
            .group_send_pipelined(&room(), &serde_json::json!({"type": "say", "n": n}))
            .await
            .unwrap();
        // Nothing stays in flight.
        assert!(!session.ctx.has_pipelined());
    }
    for n in 0..100u64 {
        let got = tokio::time::timeout(LIMIT, layer.receive(&member))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(number(&got), n);
    }
}
