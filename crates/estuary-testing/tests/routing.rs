//! JSON consumers, declared groups, nested routers and named channel
//! layers, through the in-process Communicator.

use std::sync::Arc;

use estuary_core::{
    ChannelLayer, ChannelLayerHandle, CloseCode, Connect, Consumer, ConsumerError, Context, GroupName,
    InMemoryChannelLayer, JsonConsumer, JsonEncoder, Message, NoEvent, OnMalformed, Scope,
};
use estuary_server::{Router, UnknownChannelLayer};
use estuary_testing::{Communicator, CommunicatorError};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Add { a: i64, b: i64 },
    Price { amount: f64 },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "room.say")]
    Say { text: String },
}

/// A calculator over JSON; `ERROR_FRAME` picks what a malformed frame gets.
struct Calc<const ERROR_FRAME: bool> {
    encoder: Option<Arc<dyn JsonEncoder>>,
}

impl<const ERROR_FRAME: bool> JsonConsumer for Calc<ERROR_FRAME> {
    type Incoming = Request;
    type Event = NoEvent;
    const ON_MALFORMED: OnMalformed = if ERROR_FRAME {
        OnMalformed::ErrorFrame
    } else {
        OnMalformed::Close
    };

    fn json_encoder(&self) -> Option<Arc<dyn JsonEncoder>> {
        self.encoder.clone()
    }

    async fn receive_json(&mut self, ctx: &mut Context, request: Request) -> Result<(), ConsumerError> {
        match request {
            Request::Add { a, b } => ctx.send_json(&json!({"sum": a + b, "zeta": 1, "alpha": 2})).await,
            Request::Price { amount } => ctx.send_json(&json!({"price": amount})).await,
        }
    }
}

/// Writes floats as strings with two decimals (as a Decimal encoder does).
struct Money;

impl JsonEncoder for Money {
    fn encode(&self, mut value: Value) -> Result<String, serde_json::Error> {
        fn fix(value: &mut Value) {
            match value {
                Value::Number(n) if n.is_f64() => {
                    *value = Value::String(format!("{:.2}", n.as_f64().unwrap_or_default()));
                }
                Value::Array(items) => items.iter_mut().for_each(fix),
                Value::Object(map) => map.values_mut().for_each(fix),
                _ => {}
            }
        }
        fix(&mut value);
        serde_json::to_string(&value)
    }
}

fn calc<const ERROR_FRAME: bool>(encoder: Option<Arc<dyn JsonEncoder>>) -> Communicator {
    let app = Router::new().websocket("ws/calc/", move || Calc::<ERROR_FRAME> {
        encoder: encoder.clone(),
    });
    Communicator::new(app, "/ws/calc/")
}

#[tokio::test]
async fn json_consumer_decodes_frames_and_answers_in_json() {
    let mut c = calc::<false>(None);
    c.connect().await.unwrap();
    c.send_json(&json!({"type": "add", "a": 2, "b": 40}))
        .await
        .unwrap();
    let answer: Value = c.receive_json().await.unwrap();
    assert_eq!(answer["sum"], 42);
    c.send_json(&json!({"type": "price", "amount": 2.5}))
        .await
        .unwrap();
    assert_eq!(c.receive_text().await.unwrap(), r#"{"price":2.5}"#);
    c.assert_no_message().await;
    c.disconnect().await;
}

#[tokio::test]
async fn a_plugged_encoder_writes_every_send_json() {
    let mut c = calc::<false>(Some(Arc::new(Money)));
    c.connect().await.unwrap();
    c.send_json(&json!({"type": "price", "amount": 2.5}))
        .await
        .unwrap();
    assert_eq!(c.receive_text().await.unwrap(), r#"{"price":"2.50"}"#);
    c.disconnect().await;
}

#[tokio::test]
async fn malformed_frames_close_with_1007_or_1003_by_default() {
    for (frame, code) in [
        (
            estuary_core::WsMessage::text("not json"),
            CloseCode::INVALID_PAYLOAD,
        ),
        (
            estuary_core::WsMessage::text(r#"{"type": "add", "a": 1}"#),
            CloseCode::INVALID_PAYLOAD,
        ),
        (
            estuary_core::WsMessage::text(r#"{"type": "divide"}"#),
            CloseCode::INVALID_PAYLOAD,
        ),
        (
            estuary_core::WsMessage::binary(vec![1, 2, 3]),
            CloseCode::UNSUPPORTED_DATA,
        ),
    ] {
        let mut c = calc::<false>(None);
        c.connect().await.unwrap();
        c.send(frame.clone()).await.unwrap();
        assert_eq!(c.receive_close().await.unwrap(), code, "{frame:?}");
    }
}

#[tokio::test]
async fn malformed_frames_get_an_error_frame_when_the_consumer_chooses_it() {
    let mut c = calc::<true>(None);
    c.connect().await.unwrap();
    c.send_text("{oops").await.unwrap();
    let error: Value = c.receive_json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"], "invalid_json");
    assert!(
        error["detail"].as_str().is_some_and(|d| d.contains("line 1")),
        "{error}"
    );
    c.send_json(&json!({"type": "add", "a": "two", "b": 1}))
        .await
        .unwrap();
    let error: Value = c.receive_json().await.unwrap();
    assert_eq!(error["error"], "invalid_message");
    c.send_binary(vec![0]).await.unwrap();
    let error: Value = c.receive_json().await.unwrap();
    assert_eq!(error["error"], "binary_frame");
    // Still open: a good frame gets its answer.
    c.send_json(&json!({"type": "add", "a": 1, "b": 1}))
        .await
        .unwrap();
    let answer: Value = c.receive_json().await.unwrap();
    assert_eq!(answer["sum"], 2);
    c.disconnect().await;
}

/// Declares `everyone` and `room.<room>`; reports how many members its
/// room had when `connect` ran; rejects `?reject`.
struct Member {
    layer: InMemoryChannelLayer,
    seen: mpsc::UnboundedSender<usize>,
}

impl Consumer for Member {
    type Event = Event;

    fn groups(&self, scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        let room: String = scope.param("room")?;
        Ok(vec![
            GroupName::new("everyone")?,
            GroupName::new(&format!("room.{room}"))?,
        ])
    }

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let room: String = ctx.scope().param("room")?;
        let _ = self
            .seen
            .send(self.layer.group_size(&GroupName::new(&format!("room.{room}"))?));
        if ctx.scope().query_param("reject").is_some() {
            return Ok(Connect::reject());
        }
        Ok(Connect::accept())
    }

    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Say { text } = event;
        ctx.send_text(text).await
    }
}

fn members(layer: &InMemoryChannelLayer) -> (Router, mpsc::UnboundedReceiver<usize>) {
    let (seen, rx) = mpsc::unbounded_channel();
    let consumer_layer = layer.clone();
    let router = Router::new()
        .with_channel_layer(ChannelLayerHandle::new(layer.clone()))
        .websocket("ws/rooms/<str:room>/", move || Member {
            layer: consumer_layer.clone(),
            seen: seen.clone(),
        });
    (router, rx)
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

#[tokio::test]
async fn declared_groups_are_joined_before_connect_and_left_on_disconnect() {
    let layer = InMemoryChannelLayer::default();
    let (router, mut seen) = members(&layer);
    let app = router.into_service();
    let mut c = Communicator::new(app.clone(), "/ws/rooms/lobby/");
    c.connect().await.unwrap();
    assert_eq!(seen.recv().await, Some(1), "joined before connect ran");
    assert_eq!(layer.group_size(&group("room.lobby")), 1);
    assert_eq!(layer.group_size(&group("everyone")), 1);
    layer
        .group_send(
            &group("room.lobby"),
            Message::encode(&Event::Say { text: "hi".into() }).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(c.receive_text().await.unwrap(), "hi");
    c.disconnect().await.expect("the session ended");
    assert_eq!(layer.group_size(&group("room.lobby")), 0);
    assert_eq!(layer.group_size(&group("everyone")), 0);

    // A rejected handshake leaves them too.
    let mut c = Communicator::new(app.clone(), "/ws/rooms/lobby/?reject=1");
    assert!(matches!(
        c.connect().await,
        Err(CommunicatorError::Rejected {
            status: StatusCode::FORBIDDEN,
            ..
        })
    ));
    assert_eq!(seen.recv().await, Some(1));
    assert_eq!(layer.group_size(&group("room.lobby")), 0);
    assert_eq!(layer.group_size(&group("everyone")), 0);

    // A server-side close (here: a shutdown) leaves them.
    let mut c = Communicator::new(app, "/ws/rooms/lobby/");
    c.connect().await.unwrap();
    c.shutdown_token().cancel();
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::GOING_AWAY);
    c.disconnect().await;
    assert_eq!(layer.group_size(&group("room.lobby")), 0);
}

#[tokio::test]
async fn a_declared_group_that_is_no_valid_name_rejects_the_handshake() {
    let layer = InMemoryChannelLayer::default();
    let (router, mut seen) = members(&layer);
    // A space is no valid group name character.
    let mut c = Communicator::new(router, "/ws/rooms/two%20words/");
    match c.connect().await {
        Err(CommunicatorError::Rejected { status, .. }) => assert_eq!(status, StatusCode::BAD_REQUEST),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(seen.try_recv().is_err(), "connect never ran");
    assert_eq!(
        layer.group_size(&group("everyone")),
        0,
        "nothing joined is left behind"
    );
}

/// Reports its route parameters on connect.
struct Params;

impl Consumer for Params {
    type Event = NoEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let params: Vec<String> = ctx.scope().params().map(|(k, v)| format!("{k}={v}")).collect();
        ctx.send_text(params.join("&")).await?;
        Ok(Connect::accept())
    }
}

#[tokio::test]
async fn included_routers_see_the_prefix_parameters() {
    let inner = Router::new()
        .websocket("ws/", || Params)
        .websocket("items/<int:id>/", || Params);
    let app = Router::new()
        .include(
            "tenants/<slug:tenant>/",
            Router::new().include("chat/<str:room>/", inner),
        )
        .into_service();
    let mut c = Communicator::new(app.clone(), "/tenants/acme/chat/lobby/items/7/");
    c.connect().await.unwrap();
    assert_eq!(c.receive_text().await.unwrap(), "tenant=acme&room=lobby&id=7");
    c.disconnect().await;

    let mut c = Communicator::new(app, "/tenants/acme/chat/lobby/nothing/");
    assert!(matches!(
        c.connect().await,
        Err(CommunicatorError::Rejected {
            status: StatusCode::NOT_FOUND,
            ..
        })
    ));
}

/// On the "side" layer; joins `news`.
struct Side;

impl Consumer for Side {
    type Event = Event;
    const CHANNEL_LAYER_ALIAS: &'static str = "side";

    fn groups(&self, _scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        Ok(vec![GroupName::new("news")?])
    }

    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Say { text } = event;
        ctx.send_text(format!("side:{text}")).await
    }
}

/// On the default layer; joins `news` too.
struct Main;

impl Consumer for Main {
    type Event = Event;

    fn groups(&self, _scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        Ok(vec![GroupName::new("news")?])
    }

    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Say { text } = event;
        ctx.send_text(format!("main:{text}")).await
    }
}

fn say(text: &str) -> Message {
    Message::encode(&Event::Say { text: text.into() }).unwrap()
}

#[tokio::test]
async fn consumers_live_on_the_layer_they_name() {
    let main = InMemoryChannelLayer::default();
    let side = InMemoryChannelLayer::default();
    let app = Router::new()
        .with_channel_layer(ChannelLayerHandle::new(main.clone()))
        .with_named_channel_layer("side", ChannelLayerHandle::new(side.clone()))
        .websocket("ws/main/", || Main)
        .include("x/", Router::new().websocket("ws/side/", || Side))
        .into_service();
    let mut m = Communicator::new(app.clone(), "/ws/main/");
    m.connect().await.unwrap();
    let mut s = Communicator::new(app, "/x/ws/side/");
    s.connect().await.unwrap();
    assert_eq!(main.group_size(&group("news")), 1);
    assert_eq!(side.group_size(&group("news")), 1);

    // The same group name on two layers: each send reaches its own layer's member only.
    side.group_send(&group("news"), say("one")).await.unwrap();
    main.group_send(&group("news"), say("two")).await.unwrap();
    assert_eq!(s.receive_text().await.unwrap(), "side:one");
    assert_eq!(m.receive_text().await.unwrap(), "main:two");
    m.assert_no_message().await;
    s.assert_no_message().await;

    m.disconnect().await;
    s.disconnect().await;
    assert_eq!(side.group_size(&group("news")), 0);
}

#[tokio::test]
async fn an_unknown_alias_is_an_error_when_the_router_is_built() {
    let error = Router::new()
        .include("x/", Router::new().websocket("ws/side/", || Side))
        .try_into_service()
        .unwrap_err();
    assert_eq!(error.alias, "side");
    assert!(error.consumer.ends_with("Side"), "{error}");
    let _: &UnknownChannelLayer = &error;
    // Given the layer, the same router builds.
    let built = Router::new()
        .include("x/", Router::new().websocket("ws/side/", || Side))
        .with_named_channel_layer("side", ChannelLayerHandle::default())
        .try_into_service();
    assert!(built.is_ok());
}
