//! The session's limits: control frames, the per-address rate, the size of
//! layer messages, groups per connection.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::close::CloseFrame;
use crate::names::ChannelName;
use crate::{ChannelLayer, ConsumerError, GroupName, Message, WsMessage};

/// A transport fed by the test; what the session writes goes to `written`.
struct Fed {
    inbound: mpsc::UnboundedReceiver<Inbound>,
    written: mpsc::UnboundedSender<WsMessage>,
}

impl Transport for Fed {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        self.inbound.recv().await.map(Ok)
    }
    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        let _ = self.written.send(message);
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

/// Echoes client messages; forwards `{"type": "say", "text": ...}` events.
struct Echo {
    join: usize,
}

#[derive(serde::Deserialize)]
#[serde(tag = "type")]
enum Say {
    #[serde(rename = "say")]
    Say { text: String },
}

impl Consumer for Echo {
    type Event = Say;
    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        for n in 0..self.join {
            ctx.group_add(&GroupName::new(&format!("g{n}"))?).await?;
        }
        Ok(Connect::accept())
    }
    async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
        ctx.send(msg).await
    }
    async fn event(&mut self, ctx: &mut Context, Say::Say { text }: Say) -> Result<(), ConsumerError> {
        ctx.send(WsMessage::text(text)).await
    }
}

struct Running {
    to_session: mpsc::UnboundedSender<Inbound>,
    written: mpsc::UnboundedReceiver<WsMessage>,
    channel: ChannelName,
    task: tokio::task::JoinHandle<Outcome>,
}

impl Running {
    async fn next_written(&mut self) -> WsMessage {
        tokio::time::timeout(Duration::from_secs(10), self.written.recv())
            .await
            .expect("a frame in time")
            .expect("a frame")
    }

    async fn outcome(self) -> Outcome {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the session ends in time")
            .unwrap()
    }
}

async fn start(layer: &ChannelLayerHandle, config: SessionConfig, client: &str) -> Running {
    let scope = Scope::builder("/ws/t").client(client.parse().unwrap()).build();
    let (session, _) = Session::open(Echo { join: 0 }, scope, layer.clone(), config)
        .await
        .expect("accepted");
    let channel = session.channel_name().clone();
    let (to_session, inbound) = mpsc::unbounded_channel();
    let (tx, written) = mpsc::unbounded_channel();
    let task = tokio::spawn(session.run(Fed { inbound, written: tx }, CancellationToken::new()));
    Running {
        to_session,
        written,
        channel,
        task,
    }
}

#[tokio::test]
async fn a_ping_flood_closes_with_1008() {
    let layer = ChannelLayerHandle::default();
    let running = start(&layer, SessionConfig::default(), "192.0.2.1:1000").await;
    // tungstenite answers each ping; the session sees every one.
    for _ in 0..1000 {
        if running.to_session.send(Inbound::Pong).is_err() {
            break;
        }
    }
    assert_eq!(running.outcome().await.code, CloseCode::POLICY_VIOLATION);
}

#[tokio::test]
async fn keepalive_pongs_are_within_the_control_limit() {
    let layer = ChannelLayerHandle::default();
    let mut running = start(&layer, SessionConfig::default(), "192.0.2.1:1000").await;
    for _ in 0..20 {
        running.to_session.send(Inbound::Pong).unwrap();
    }
    running
        .to_session
        .send(Inbound::Message(WsMessage::text("still here")))
        .unwrap();
    assert_eq!(running.next_written().await, WsMessage::text("still here"));
    running.to_session.send(Inbound::Close(None)).unwrap();
    assert_eq!(running.outcome().await.code, CloseCode::NO_STATUS);
}

/// Two connections from one address share its allowance; another address
/// has its own.
#[tokio::test]
async fn the_address_rate_is_shared_by_its_connections() {
    let layer = ChannelLayerHandle::default();
    let config = SessionConfig {
        address_rate_limit: Some(AddressRateLimiter::new(RateLimit {
            per_second: 0.001,
            burst: 3,
        })),
        ..SessionConfig::default()
    };
    let mut a = start(&layer, config.clone(), "192.0.2.1:1000").await;
    let mut b = start(&layer, config.clone(), "192.0.2.1:1001").await;
    let mut other = start(&layer, config, "192.0.2.2:1000").await;
    for running in [&mut a, &mut b] {
        running
            .to_session
            .send(Inbound::Message(WsMessage::text("x")))
            .unwrap();
        assert_eq!(running.next_written().await, WsMessage::text("x"));
    }
    a.to_session.send(Inbound::Message(WsMessage::text("x"))).unwrap();
    assert_eq!(a.next_written().await, WsMessage::text("x"));
    // The fourth message from 192.0.2.1 is one too many, whichever socket.
    b.to_session.send(Inbound::Message(WsMessage::text("x"))).unwrap();
    assert_eq!(b.outcome().await.code, CloseCode::POLICY_VIOLATION);
    other
        .to_session
        .send(Inbound::Message(WsMessage::text("y")))
        .unwrap();
    assert_eq!(other.next_written().await, WsMessage::text("y"));
    for running in [a, other] {
        running.to_session.send(Inbound::Close(None)).unwrap();
        assert_eq!(running.outcome().await.code, CloseCode::NO_STATUS);
    }
}

#[tokio::test]
async fn an_oversized_layer_message_is_dropped_and_counted() {
    let layer = ChannelLayerHandle::default();
    let config = SessionConfig {
        max_event_size: 100,
        ..SessionConfig::default()
    };
    let mut running = start(&layer, config, "192.0.2.1:1000").await;
    let say = |text: String| Message::from_json(&serde_json::json!({"type": "say", "text": text})).unwrap();
    layer.send(&running.channel, say("x".repeat(200))).await.unwrap();
    layer.send(&running.channel, say("small".into())).await.unwrap();
    assert_eq!(running.next_written().await, WsMessage::text("small"));
    running.to_session.send(Inbound::Close(None)).unwrap();
    assert_eq!(running.outcome().await.oversized, 1);
}

#[tokio::test]
async fn groups_per_connection_are_bounded() {
    let layer = ChannelLayerHandle::default();
    let config = SessionConfig {
        max_groups: 2,
        ..SessionConfig::default()
    };
    let scope = || Scope::builder("/ws/t").build();
    assert!(
        Session::open(Echo { join: 2 }, scope(), layer.clone(), config.clone())
            .await
            .is_ok()
    );
    let Err(reject) = Session::open(Echo { join: 3 }, scope(), layer.clone(), config).await else {
        panic!("the third group is refused");
    };
    assert_eq!(reject.status, http::StatusCode::FORBIDDEN);
    assert_eq!(reject.reason, "too many groups");
    // What was joined before the refusal is left again.
    let report = layer
        .group_send(
            &GroupName::new("g0").unwrap(),
            Message::from_json(&serde_json::json!({"type": "say", "text": "x"})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(report.delivered, 1, "only the accepted connection is in g0");
}

/// A user whose credential expires while connected is closed with 4401.
#[tokio::test(start_paused = true)]
async fn an_expired_credential_closes_with_4401() {
    let layer = ChannelLayerHandle::default();
    let user =
        crate::User::new("1", "alice").with_expiry(std::time::SystemTime::now() + Duration::from_secs(60));
    let scope = Scope::builder("/ws/t").user(Some(user)).build();
    // No keepalive: this transport never answers pings.
    let config = SessionConfig {
        ping_interval: None,
        ..SessionConfig::default()
    };
    let (session, _) = Session::open(Echo { join: 0 }, scope, layer, config)
        .await
        .expect("accepted");
    let (_to_session, inbound) = mpsc::unbounded_channel();
    let (tx, _written) = mpsc::unbounded_channel();
    let started = tokio::time::Instant::now();
    let outcome = session
        .run(Fed { inbound, written: tx }, CancellationToken::new())
        .await;
    assert_eq!(outcome.code, CloseCode::CREDENTIALS_EXPIRED);
    assert!(
        started.elapsed() >= Duration::from_secs(59),
        "not before it expired"
    );
}

/// A slow sign-in check runs beside the connection: while it waits, client
/// messages are still answered; when it finds the user signed out, the
/// connection closes with 4401. Checks come about one interval apart.
#[tokio::test(start_paused = true)]
async fn a_slow_recheck_does_not_hold_the_connection_up() {
    let layer = ChannelLayerHandle::default();
    let (asked, mut checks) = mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<bool>>();
    let recheck = crate::Recheck::new(Duration::from_secs(60), move || {
        let asked = asked.clone();
        async move {
            let (answer, verdict) = tokio::sync::oneshot::channel();
            let _ = asked.send(answer);
            Ok(verdict.await.unwrap_or(true))
        }
    });
    let mut extensions = http::Extensions::new();
    extensions.insert(recheck);
    let scope = Scope::builder("/ws/t")
        .user(Some(crate::User::new("1", "alice")))
        .extensions(extensions)
        .build();
    let config = SessionConfig {
        ping_interval: None,
        ..SessionConfig::default()
    };
    let (session, _) = Session::open(Echo { join: 0 }, scope, layer, config)
        .await
        .expect("accepted");
    let (to_session, inbound) = mpsc::unbounded_channel();
    let (tx, mut written) = mpsc::unbounded_channel();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(session.run(Fed { inbound, written: tx }, CancellationToken::new()));

    // The first check, about an interval in: still signed in.
    let first = checks.recv().await.expect("a first check");
    let at = started.elapsed();
    assert!(
        (Duration::from_secs(54)..=Duration::from_secs(66)).contains(&at),
        "{at:?}"
    );
    first.send(true).unwrap();

    // The second check is left waiting; the connection goes on meanwhile.
    let second = checks.recv().await.expect("a second check");
    let gap = started.elapsed() - at;
    assert!(
        (Duration::from_secs(54)..=Duration::from_secs(66)).contains(&gap),
        "{gap:?}"
    );
    to_session
        .send(Inbound::Message(WsMessage::text("still here?")))
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), written.recv()).await;
    assert_eq!(
        echoed.expect("answered while the check waits"),
        Some(WsMessage::text("still here?"))
    );

    // Then it answers: signed out.
    second.send(false).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(outcome.code, CloseCode::CREDENTIALS_EXPIRED);
}

/// `max_lifetime` (daphne's `websocket_timeout`): a connection that lived
/// it is closed with 1001 after what was queued for it, however busy.
#[tokio::test(start_paused = true)]
async fn max_lifetime_closes_with_1001() {
    let layer = ChannelLayerHandle::default();
    let config = SessionConfig {
        max_lifetime: Some(Duration::from_secs(3600)),
        ping_interval: None,
        ..SessionConfig::default()
    };
    let started = tokio::time::Instant::now();
    let mut running = start(&layer, config, "192.0.2.1:1000").await;
    running
        .to_session
        .send(Inbound::Message(WsMessage::text("before")))
        .unwrap();
    assert_eq!(running.next_written().await, WsMessage::text("before"));
    let outcome = tokio::time::timeout(Duration::from_secs(7200), running.task)
        .await
        .expect("closed at its lifetime")
        .unwrap();
    assert_eq!(outcome.code, CloseCode::GOING_AWAY);
    assert!(!outcome.client_closed);
    assert!(started.elapsed() >= Duration::from_secs(3600), "not before");
}

/// The credential's expiry and `max_lifetime` share one timer: the earlier
/// decides the code.
#[tokio::test(start_paused = true)]
async fn the_earlier_of_expiry_and_lifetime_closes() {
    for (expires_in, lifetime, code) in [
        (60, 30, CloseCode::GOING_AWAY),
        (30, 60, CloseCode::CREDENTIALS_EXPIRED),
    ] {
        let user = crate::User::new("1", "alice")
            .with_expiry(std::time::SystemTime::now() + Duration::from_secs(expires_in));
        let scope = Scope::builder("/ws/t").user(Some(user)).build();
        let config = SessionConfig {
            ping_interval: None,
            max_lifetime: Some(Duration::from_secs(lifetime)),
            ..SessionConfig::default()
        };
        let (session, _) = Session::open(Echo { join: 0 }, scope, ChannelLayerHandle::default(), config)
            .await
            .expect("accepted");
        let (_to_session, inbound) = mpsc::unbounded_channel();
        let (tx, _written) = mpsc::unbounded_channel();
        let outcome = session
            .run(Fed { inbound, written: tx }, CancellationToken::new())
            .await;
        assert_eq!(
            outcome.code, code,
            "expiry in {expires_in} s, lifetime {lifetime} s"
        );
    }
}
