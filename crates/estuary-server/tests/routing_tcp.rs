//! Over real sockets: a JSON consumer with declared groups, on a named
//! channel layer, in a router included under a prefix with a parameter.

use std::time::Duration;

use axum::extract::Path;
use estuary_core::{
    ChannelLayer, ChannelLayerHandle, ConsumerError, Context, GroupName, InMemoryChannelLayer, JsonConsumer,
    Message as LayerMessage, Scope,
};
use estuary_server::{Router, Server};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WireCloseCode;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    Say { text: String },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "room.said")]
    Said { text: String },
}

/// A chat room member on the "rooms" layer, in `room.<room>`.
struct Member;

fn room_group(scope: &Scope) -> Result<GroupName, ConsumerError> {
    let room: String = scope.param("room")?;
    Ok(GroupName::new(&format!("room.{room}"))?)
}

impl JsonConsumer for Member {
    type Incoming = Incoming;
    type Event = Event;
    const CHANNEL_LAYER_ALIAS: &'static str = "rooms";

    fn groups(&self, scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        Ok(vec![room_group(scope)?])
    }

    async fn receive_json(&mut self, ctx: &mut Context, incoming: Incoming) -> Result<(), ConsumerError> {
        let Incoming::Say { text } = incoming;
        let group = room_group(ctx.scope())?;
        ctx.group_send(&group, &Event::Said { text }).await?;
        Ok(())
    }

    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Said { text } = event;
        let room: String = ctx.scope().param("room")?;
        ctx.send_json(&json!({"room": room, "text": text})).await
    }
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Client) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a valid frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .expect("a response in time")
        .unwrap();
    response
}

#[tokio::test]
async fn a_json_consumer_in_an_included_router_on_a_named_layer() {
    let default_layer = InMemoryChannelLayer::default();
    let rooms = InMemoryChannelLayer::default();
    let chat = Router::new().websocket("ws/", || Member).route(
        "/info",
        axum::routing::get(|Path(room): Path<String>| async move { format!("room {room}") }),
    );
    let router = Router::new()
        .with_channel_layer(ChannelLayerHandle::new(default_layer.clone()))
        .with_named_channel_layer("rooms", ChannelLayerHandle::new(rooms.clone()))
        .include("chat/<slug:room>/", chat);
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let serving = tokio::spawn(server.serve(router.into_service(), async move { token.cancelled().await }));

    let url = format!("ws://{addr}/chat/lobby/ws/");
    let (mut ann, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut bob, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let lobby = GroupName::new("room.lobby").unwrap();
    // Both joined on accept, on their own layer only.
    assert_eq!(rooms.group_size(&lobby), 2);
    assert_eq!(default_layer.group_size(&lobby), 0);

    ann.send(Message::text(r#"{"type": "say", "text": "hello"}"#))
        .await
        .unwrap();
    for ws in [&mut ann, &mut bob] {
        assert_eq!(next_json(ws).await, json!({"room": "lobby", "text": "hello"}));
    }

    // A send on the default layer reaches no one; on "rooms" it does.
    let said = |text: &str| LayerMessage::encode(&Event::Said { text: text.into() }).unwrap();
    let report = default_layer.group_send(&lobby, said("lost")).await.unwrap();
    assert_eq!(report.delivered, 0);
    rooms.group_send(&lobby, said("from a view")).await.unwrap();
    assert_eq!(next_json(&mut bob).await["text"], "from a view");

    // A frame that is not JSON closes with 1007.
    ann.send(Message::text("hello?")).await.unwrap();
    let close = loop {
        match tokio::time::timeout(WAIT, ann.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, WireCloseCode::from(1007));
    assert_eq!(close.reason.as_str(), "invalid_json");

    // The included router's HTTP route, nested under the prefix.
    let response = http_get(addr, "/chat/lobby/info").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("room lobby"), "{response}");

    bob.close(None).await.unwrap();
    stop.cancel();
    tokio::time::timeout(WAIT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
