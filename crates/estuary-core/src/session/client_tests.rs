//! A [`ClientHandle`](crate::ClientHandle) used from other tasks while the
//! session runs: its frames go out in order, its close ends the connection
//! like a handler's (disconnect, groups left), and it fails once the
//! connection is over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::close::CloseFrame;
use crate::{ClientHandle, ConsumerError, GroupName, NoEvent, WsMessage};

/// What the session wrote: text frames, and the close frame last.
#[derive(Default)]
struct Written {
    texts: Vec<String>,
    close: Option<Option<CloseFrame>>,
}

struct Wire {
    inbound: mpsc::UnboundedReceiver<Inbound>,
    written: Arc<Mutex<Written>>,
    /// Told at every flush.
    flushed: mpsc::UnboundedSender<()>,
}

/// A wire's other ends: the client's frames to the session, a signal at
/// every flush, and what was written.
struct Ends {
    to_session: mpsc::UnboundedSender<Inbound>,
    flushes: mpsc::UnboundedReceiver<()>,
    written: Arc<Mutex<Written>>,
}

impl Wire {
    fn new() -> (Self, Ends) {
        let (to_session, inbound) = mpsc::unbounded_channel();
        let (flushed, flushes) = mpsc::unbounded_channel();
        let written = Arc::new(Mutex::new(Written::default()));
        let wire = Wire {
            inbound,
            written: written.clone(),
            flushed,
        };
        (
            wire,
            Ends {
                to_session,
                flushes,
                written,
            },
        )
    }
}

impl Transport for Wire {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        self.inbound.recv().await.map(Ok)
    }
    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        let text = message.as_text().unwrap_or_default().to_owned();
        self.written.lock().unwrap().texts.push(text);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        let _ = self.flushed.send(());
        Ok(())
    }
    async fn ping(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    async fn close(&mut self, frame: Option<CloseFrame>) {
        self.written.lock().unwrap().close = Some(frame);
    }
}

/// Hands its client handle out at connect, joins a group, and reports
/// the code `disconnect` got.
struct Handed {
    handle: Option<oneshot::Sender<ClientHandle>>,
    disconnected: Option<oneshot::Sender<CloseCode>>,
}

impl Consumer for Handed {
    type Event = NoEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        ctx.group_add(&GroupName::new("room").unwrap()).await?;
        if let Some(tx) = self.handle.take() {
            let _ = tx.send(ctx.client());
        }
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        ctx.send(message).await
    }

    async fn disconnect(&mut self, _ctx: &mut Context, code: CloseCode) {
        if let Some(tx) = self.disconnected.take() {
            let _ = tx.send(code);
        }
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_handle_sends_in_order_and_its_close_ends_the_connection_cleanly() {
    let layer = crate::InMemoryChannelLayer::default();
    let (handle_tx, handle_rx) = oneshot::channel();
    let (disc_tx, disc_rx) = oneshot::channel();
    let consumer = Handed {
        handle: Some(handle_tx),
        disconnected: Some(disc_tx),
    };
    let (session, _) = Session::open(
        consumer,
        Scope::builder("/ws/t").build(),
        ChannelLayerHandle::new(layer.clone()),
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    let client = handle_rx.await.unwrap();
    let (
        wire,
        Ends {
            to_session,
            mut flushes,
            written,
        },
    ) = Wire::new();
    let task = tokio::spawn(session.run(wire, CancellationToken::new()));

    // From another task, while the session waits on its client.
    let sender = client.clone();
    tokio::spawn(async move { sender.send(WsMessage::text("from a task")).await })
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, flushes.recv()).await.unwrap();
    to_session
        .send(Inbound::Message(WsMessage::text("echo")))
        .unwrap();
    tokio::time::timeout(WAIT, flushes.recv()).await.unwrap();

    client.close(CloseCode::from(4000), "done").await.unwrap();
    let outcome = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(outcome.code, CloseCode::from(4000));
    assert!(!outcome.client_closed);
    assert_eq!(
        tokio::time::timeout(WAIT, disc_rx).await.unwrap().unwrap(),
        CloseCode::from(4000)
    );
    let (texts, close) = {
        let written = written.lock().unwrap();
        (written.texts.clone(), written.close.clone())
    };
    assert_eq!(texts, ["from a task", "echo"]);
    let frame = close.flatten().expect("a close frame");
    assert_eq!((frame.code(), frame.reason()), (CloseCode::from(4000), "done"));
    assert_eq!(
        layer.group_size(&GroupName::new("room").unwrap()),
        0,
        "the group was left"
    );
    assert!(client.is_closed());
    assert!(matches!(
        client.send(WsMessage::text("late")).await,
        Err(ConsumerError::ConnectionClosed)
    ));
}

#[tokio::test]
async fn a_handle_fails_once_the_client_closed() {
    let (handle_tx, handle_rx) = oneshot::channel();
    let consumer = Handed {
        handle: Some(handle_tx),
        disconnected: None,
    };
    let (session, _) = Session::open(
        consumer,
        Scope::builder("/ws/t").build(),
        ChannelLayerHandle::default(),
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    let client = handle_rx.await.unwrap();
    let (wire, Ends { to_session, .. }) = Wire::new();
    let task = tokio::spawn(session.run(wire, CancellationToken::new()));
    to_session.send(Inbound::Close(None)).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(client.is_closed());
    assert!(matches!(
        client.send(WsMessage::text("late")).await,
        Err(ConsumerError::ConnectionClosed)
    ));
    assert!(matches!(
        client.close(CloseCode::NORMAL, "").await,
        Err(ConsumerError::ConnectionClosed)
    ));
}

/// Hands a client handle out when the client asks, mid-session.
struct HandsLater {
    handles: mpsc::UnboundedSender<ClientHandle>,
}

impl Consumer for HandsLater {
    type Event = NoEvent;

    async fn receive(&mut self, ctx: &mut Context, _message: WsMessage) -> Result<(), ConsumerError> {
        let _ = self.handles.send(ctx.client());
        Ok(())
    }
}

/// A handle made mid-session (not at connect) is heard from while the
/// session waits for its client.
#[tokio::test]
async fn a_handle_made_mid_session_wakes_it() {
    let (handles_tx, mut handles) = mpsc::unbounded_channel();
    let (session, _) = Session::open(
        HandsLater { handles: handles_tx },
        Scope::builder("/ws/t").build(),
        ChannelLayerHandle::default(),
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    let (
        wire,
        Ends {
            to_session,
            mut flushes,
            written,
        },
    ) = Wire::new();
    let task = tokio::spawn(session.run(wire, CancellationToken::new()));
    to_session
        .send(Inbound::Message(WsMessage::text("hand me one")))
        .unwrap();
    let client = tokio::time::timeout(WAIT, handles.recv()).await.unwrap().unwrap();
    // Sent while the session waits for its client, from another task.
    tokio::spawn(async move { client.send(WsMessage::text("from a handle")).await })
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, flushes.recv()).await.unwrap();
    assert_eq!(written.lock().unwrap().texts, ["from a handle"]);
    to_session.send(Inbound::Close(None)).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
