//! The consumer API through the in-process Communicator.

use estuary_core::{
    ChannelLayer, ChannelName, CloseCode, Connect, Consumer, ConsumerError, Context, GroupName, Message,
    WsMessage,
};
use estuary_server::Router;
use estuary_testing::{Communicator, CommunicatorError};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "chat.message")]
    ChatMessage { message: String },
    #[serde(rename = "whoami")]
    WhoAmI,
}

/// Joins `room`, echoes group messages, reports disconnects.
struct Room {
    disconnects: mpsc::UnboundedSender<CloseCode>,
}

impl Consumer for Room {
    type Event = Event;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let room: String = ctx.scope().param("room")?;
        if room == "forbidden" {
            return Ok(Connect::reject());
        }
        ctx.group_add(&GroupName::new(&format!("room_{room}"))?).await?;
        let reply = if ctx.scope().subprotocols().iter().any(|p| p == "chat.v2") {
            Connect::accept_subprotocol("chat.v2")
        } else {
            Connect::accept()
        };
        ctx.send_text("welcome").await?;
        Ok(reply)
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        match message.as_text() {
            Some("boom") => Err(ConsumerError::other(std::io::Error::other("handler failed"))),
            Some("close") => ctx.close(CloseCode::from(4001), "bye").await,
            Some("channel") => {
                let name = ctx.channel_name().to_string();
                ctx.send_text(name).await
            }
            Some(text) => {
                let room: String = ctx.scope().param("room")?;
                let group = GroupName::new(&format!("room_{room}"))?;
                ctx.group_send(
                    &group,
                    &Event::ChatMessage {
                        message: text.to_owned(),
                    },
                )
                .await?;
                Ok(())
            }
            None => ctx.send(message).await,
        }
    }

    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        match event {
            Event::ChatMessage { message } => ctx.send_json(&serde_json::json!({"message": message})).await,
            Event::WhoAmI => {
                let name = ctx.channel_name().to_string();
                ctx.send_text(format!("you are {name}")).await
            }
        }
    }

    async fn disconnect(&mut self, _ctx: &mut Context, code: CloseCode) {
        let _ = self.disconnects.send(code);
    }
}

fn app() -> (estuary_server::RouterService, mpsc::UnboundedReceiver<CloseCode>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new().websocket("ws/room/<slug:room>/", move || Room {
        disconnects: tx.clone(),
    });
    (router.into_service(), rx)
}

#[tokio::test]
async fn connect_send_receive_and_group_broadcast() {
    let (app, _rx) = app();
    let mut a = Communicator::new(app.clone(), "/ws/room/lobby/");
    let mut b = Communicator::new(app.clone(), "/ws/room/lobby");
    let mut other = Communicator::new(app, "/ws/room/kitchen/");
    for c in [&mut a, &mut b, &mut other] {
        c.connect().await.unwrap();
        assert_eq!(
            c.receive_text().await.unwrap(),
            "welcome",
            "sent during connect, delivered after"
        );
    }
    a.send_text("hi").await.unwrap();
    for c in [&mut a, &mut b] {
        let v: serde_json::Value = c.receive_json().await.unwrap();
        assert_eq!(v["message"], "hi");
    }
    other.assert_no_message().await;
    a.send_binary(vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(a.receive().await.unwrap(), WsMessage::binary(vec![1u8, 2, 3]));
}

#[tokio::test]
async fn handlers_run_in_order() {
    let (app, _rx) = app();
    let mut a = Communicator::new(app, "/ws/room/order/");
    a.connect().await.unwrap();
    a.receive_text().await.unwrap();
    for i in 0..50 {
        a.send_text(&format!("m{i}")).await.unwrap();
    }
    for i in 0..50 {
        let v: serde_json::Value = a.receive_json().await.unwrap();
        assert_eq!(v["message"], format!("m{i}"));
    }
}

#[tokio::test]
async fn subprotocol_selection() {
    let (app, _rx) = app();
    let mut c = Communicator::new(app, "/ws/room/p/")
        .subprotocol("chat.v1")
        .subprotocol("chat.v2");
    assert_eq!(c.connect().await.unwrap().as_deref(), Some("chat.v2"));
}

#[tokio::test]
async fn rejection_and_unknown_path() {
    let (app, _rx) = app();
    let mut c = Communicator::new(app.clone(), "/ws/room/forbidden/");
    match c.connect().await {
        Err(CommunicatorError::Rejected { status, .. }) => assert_eq!(status, StatusCode::FORBIDDEN),
        other => panic!("expected a rejection, got {other:?}"),
    }
    let mut c = Communicator::new(app.clone(), "/ws/nowhere/");
    match c.connect().await {
        Err(CommunicatorError::Rejected { status, .. }) => assert_eq!(status, StatusCode::NOT_FOUND),
        other => panic!("expected 404, got {other:?}"),
    }
    let mut c = Communicator::new(app, "/ws/room/not.a.slug/");
    assert!(matches!(
        c.connect().await,
        Err(CommunicatorError::Rejected {
            status: StatusCode::NOT_FOUND,
            ..
        })
    ));
}

#[tokio::test]
async fn handler_error_closes_only_that_connection() {
    let (app, mut disconnects) = app();
    let mut bad = Communicator::new(app.clone(), "/ws/room/err/");
    let mut good = Communicator::new(app, "/ws/room/err/");
    bad.connect().await.unwrap();
    good.connect().await.unwrap();
    bad.receive_text().await.unwrap();
    good.receive_text().await.unwrap();
    bad.send_text("boom").await.unwrap();
    assert_eq!(bad.receive_close().await.unwrap(), CloseCode::INTERNAL_ERROR);
    assert_eq!(disconnects.recv().await, Some(CloseCode::INTERNAL_ERROR));
    good.send_text("still here").await.unwrap();
    let v: serde_json::Value = good.receive_json().await.unwrap();
    assert_eq!(v["message"], "still here");
}

#[tokio::test]
async fn consumer_close_with_code_runs_disconnect() {
    let (app, mut disconnects) = app();
    let mut c = Communicator::new(app, "/ws/room/x/");
    c.connect().await.unwrap();
    c.receive_text().await.unwrap();
    c.send_text("close").await.unwrap();
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::from(4001));
    assert_eq!(disconnects.recv().await, Some(CloseCode::from(4001)));
}

#[tokio::test]
async fn client_disconnect_reaches_the_consumer_and_leaves_groups() {
    let (app, mut disconnects) = app();
    let layer = app.router().channel_layer().clone();
    let c = {
        let mut c = Communicator::new(app, "/ws/room/leaving/");
        c.connect().await.unwrap();
        c.receive_text().await.unwrap();
        c
    };
    let outcome = c.disconnect_with(CloseCode::from(4000)).await.unwrap();
    assert!(outcome.client_closed);
    assert_eq!(disconnects.recv().await, Some(CloseCode::from(4000)));
    let m = Message::from_json(&serde_json::json!({"type": "chat.message", "message": "x"})).unwrap();
    let report = layer
        .group_send(&GroupName::new("room_leaving").unwrap(), m)
        .await
        .unwrap();
    assert_eq!(report.delivered, 0, "the group was left at disconnect");
}

#[tokio::test]
async fn send_to_a_channel_name_and_unknown_event_types() {
    let (app, _rx) = app();
    let layer = app.router().channel_layer().clone();
    let mut c = Communicator::new(app, "/ws/room/direct/");
    c.connect().await.unwrap();
    c.receive_text().await.unwrap();
    c.send_text("channel").await.unwrap();
    let name = ChannelName::new(&c.receive_text().await.unwrap()).unwrap();
    let unknown = Message::from_json(&serde_json::json!({"type": "no.such.handler"})).unwrap();
    layer.send(&name, unknown).await.unwrap();
    let whoami = Message::from_json(&serde_json::json!({"type": "whoami"})).unwrap();
    layer.send(&name, whoami).await.unwrap();
    assert_eq!(
        c.receive_text().await.unwrap(),
        format!("you are {name}"),
        "the unknown type was skipped, not fatal"
    );
}

#[tokio::test]
async fn shutdown_closes_with_going_away() {
    let (app, mut disconnects) = app();
    let mut c = Communicator::new(app, "/ws/room/bye/");
    c.connect().await.unwrap();
    c.receive_text().await.unwrap();
    c.shutdown_token().cancel();
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::GOING_AWAY);
    assert_eq!(disconnects.recv().await, Some(CloseCode::GOING_AWAY));
}

struct Burst;

impl Consumer for Burst {
    type Event = estuary_core::NoEvent;
    async fn receive(&mut self, ctx: &mut Context, _message: WsMessage) -> Result<(), ConsumerError> {
        // Sends without yielding: the queue (capacity 4) overflows at once.
        for i in 0..20 {
            ctx.send_text(format!("{i}")).await?;
        }
        ctx.send_text("done").await
    }
}

#[tokio::test]
async fn drop_policy_drops_and_counts_instead_of_disconnecting() {
    let mut settings = estuary_server::WsSettings::default();
    settings.session.outbound_capacity = 4;
    settings.session.slow_client = estuary_core::SlowClientPolicy::Drop;
    let app = Router::new()
        .with_settings(settings)
        .websocket("ws/burst/", || Burst)
        .into_service();
    let mut c = Communicator::new(app, "/ws/burst/");
    c.connect().await.unwrap();
    c.send_text("go").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(c.receive_text().await.unwrap());
    }
    assert_eq!(got, ["0", "1", "2", "3"], "the first messages fill the queue");
    c.assert_no_message().await;
    let outcome = c.disconnect().await.unwrap();
    assert_eq!(
        outcome.dropped, 17,
        "16 numbers and the final 'done' were dropped and counted"
    );
}

#[tokio::test]
async fn disconnect_policy_waits_for_room_instead_of_dropping() {
    let mut settings = estuary_server::WsSettings::default();
    settings.session.outbound_capacity = 4;
    let app = Router::new()
        .with_settings(settings)
        .websocket("ws/burst/", || Burst)
        .into_service();
    let mut c = Communicator::new(app, "/ws/burst/");
    c.connect().await.unwrap();
    c.send_text("go").await.unwrap();
    for i in 0..20 {
        assert_eq!(c.receive_text().await.unwrap(), i.to_string());
    }
    assert_eq!(c.receive_text().await.unwrap(), "done");
}

/// Panics on "panic"; on "bye" sends a farewell then fails with a close code.
struct Fragile {
    disconnects: mpsc::UnboundedSender<CloseCode>,
}

impl Consumer for Fragile {
    type Event = estuary_core::NoEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let name: String = ctx.scope().param("name")?;
        ctx.send_text(name).await?;
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        match message.as_text() {
            Some("panic") => panic!("a bug in a handler"),
            _ => {
                ctx.send_text("farewell").await?;
                Err(ConsumerError::close(CloseCode::from(4001), "bye"))
            }
        }
    }

    async fn disconnect(&mut self, _ctx: &mut Context, code: CloseCode) {
        let _ = self.disconnects.send(code);
    }
}

fn fragile() -> (estuary_server::RouterService, mpsc::UnboundedReceiver<CloseCode>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .websocket("ws/<str:name>/", move || Fragile {
            disconnects: tx.clone(),
        })
        .into_service();
    (app, rx)
}

#[tokio::test]
async fn a_panicking_handler_closes_with_1011_and_still_disconnects() {
    let (app, mut disconnects) = fragile();
    let mut c = Communicator::new(app, "/ws/x/");
    c.connect().await.unwrap();
    c.receive_text().await.unwrap();
    c.send_text("panic").await.unwrap();
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::INTERNAL_ERROR);
    assert_eq!(disconnects.recv().await, Some(CloseCode::INTERNAL_ERROR));
}

#[tokio::test]
async fn messages_sent_before_a_close_error_are_delivered() {
    let (app, _rx) = fragile();
    let mut c = Communicator::new(app, "/ws/x/");
    c.connect().await.unwrap();
    c.receive_text().await.unwrap();
    c.send_text("bye").await.unwrap();
    assert_eq!(c.receive_text().await.unwrap(), "farewell");
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::from(4001));
}

#[tokio::test]
async fn route_parameters_are_percent_decoded() {
    let (app, _rx) = fragile();
    let mut c = Communicator::new(app, "/ws/caf%C3%A9%20au%20lait/");
    c.connect().await.unwrap();
    assert_eq!(c.receive_text().await.unwrap(), "café au lait");
}

#[tokio::test]
async fn a_rejected_handshake_leaves_its_groups_and_runs_disconnect() {
    let (app, mut disconnects) = app();
    let layer = app.router().channel_layer().clone();
    let mut c = Communicator::new(app, "/ws/room/forbidden/");
    assert!(c.connect().await.is_err());
    assert_eq!(
        disconnects.recv().await,
        Some(CloseCode::ABNORMAL),
        "as Channels: disconnect(1006)"
    );
    let m = Message::from_json(&serde_json::json!({"type": "chat.message", "message": "x"})).unwrap();
    let report = layer
        .group_send(&GroupName::new("room_forbidden").unwrap(), m)
        .await
        .unwrap();
    assert_eq!(report.delivered, 0);
}

#[tokio::test]
async fn an_admission_puts_the_connection_in_its_groups_and_leaves_them_at_the_end() {
    let (app, mut disconnects) = app();
    let layer = app.router().channel_layer().clone();
    let admission = estuary_server::Admission::from(estuary_core::User::new("42", "alice"))
        .join(GroupName::new("user.42").unwrap())
        .with_data("plan", "pro");
    let mut c = Communicator::new(app, "/ws/room/lobby/").admission(admission);
    c.connect().await.unwrap();
    assert_eq!(c.receive_text().await.unwrap(), "welcome");
    let push =
        || Message::from_json(&serde_json::json!({"type": "chat.message", "message": "for alice"})).unwrap();
    let user42 = GroupName::new("user.42").unwrap();
    assert_eq!(layer.group_send(&user42, push()).await.unwrap().delivered, 1);
    assert_eq!(
        c.receive_json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"message": "for alice"})
    );
    c.disconnect().await;
    assert_eq!(disconnects.recv().await, Some(CloseCode::NORMAL));
    assert_eq!(layer.group_send(&user42, push()).await.unwrap().delivered, 0);
}

#[tokio::test]
async fn an_admission_with_more_groups_than_allowed_is_refused_before_connect() {
    let (tx, mut disconnects) = mpsc::unbounded_channel();
    let mut settings = estuary_server::WsSettings::default();
    settings.session.max_groups = 2;
    let app = Router::new()
        .with_settings(settings)
        .websocket("ws/room/<slug:room>/", move || Room {
            disconnects: tx.clone(),
        })
        .into_service();
    let layer = app.router().channel_layer().clone();
    let admission = ["a", "b", "c"]
        .into_iter()
        .fold(estuary_server::Admission::anonymous(), |a, g| {
            a.join(GroupName::new(g).unwrap())
        });
    let mut c = Communicator::new(app, "/ws/room/lobby/").admission(admission);
    match c.connect().await {
        Err(error @ CommunicatorError::Rejected { .. }) => {
            assert_eq!(
                error.to_string(),
                "handshake rejected with 403 Forbidden: too many groups"
            );
            let CommunicatorError::Rejected { status, body } = error else {
                unreachable!()
            };
            assert_eq!(
                (status, &body[..]),
                (StatusCode::FORBIDDEN, &b"too many groups\n"[..])
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // connect never ran, so neither does disconnect; the groups joined are left.
    assert!(disconnects.try_recv().is_err());
    let m = Message::from_json(&serde_json::json!({"type": "chat.message", "message": "x"})).unwrap();
    let report = layer.group_send(&GroupName::new("a").unwrap(), m).await.unwrap();
    assert_eq!(report.delivered, 0);
}

#[tokio::test(start_paused = true)]
async fn an_admissions_recheck_runs_and_closes_with_4401_when_the_user_is_signed_out() {
    let (app, _disconnects) = app();
    let recheck = estuary_core::Recheck::new(std::time::Duration::from_secs(5), || async { Ok(false) });
    let admission =
        estuary_server::Admission::from(estuary_core::User::new("42", "alice")).with_recheck(recheck);
    let mut c = Communicator::new(app, "/ws/room/lobby/")
        .admission(admission)
        .timeout(std::time::Duration::from_secs(60));
    c.connect().await.unwrap();
    assert_eq!(c.receive_text().await.unwrap(), "welcome");
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::CREDENTIALS_EXPIRED);
}

#[tokio::test]
async fn unexpected_messages_are_typed_errors() {
    let (app, _rx) = app();
    let mut a = Communicator::new(app, "/ws/room/typed/");
    a.connect().await.unwrap();
    // "welcome" is text, but not JSON: the message comes back with the error.
    match a.receive_json::<serde_json::Value>().await {
        Err(CommunicatorError::NotJson { message, source }) => {
            assert_eq!(message, WsMessage::text("welcome"));
            assert!(source.is_syntax());
        }
        other => panic!("expected NotJson, got {other:?}"),
    }
    a.send_binary(vec![1u8, 2, 3]).await.unwrap();
    assert!(matches!(
        a.receive_text().await,
        Err(CommunicatorError::NotText { len: 3 })
    ));
}
