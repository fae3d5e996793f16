//! The push API's routes driven in process by the HttpClient (no socket):
//! what a group, a channel and a room get, and what a caller without the
//! token, with the wrong body type or to a full channel is answered.

use estuary::testing::HttpClient;
use estuary::{
    ChannelLayer, ChannelLayerConfig, ChannelLayerHandle, ChannelName, GroupName, InMemoryChannelLayer,
    Message, PresenceKey, PresenceMeta,
};
use estuary_cli::online::{DIRECTORY, Online};
use estuary_cli::push::{PushAccess, PushState, routes};
use estuary_cli::rooms::Rooms;
use http::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret";

fn client(layer: &InMemoryChannelLayer, rooms: Rooms) -> HttpClient {
    let layer = ChannelLayerHandle::new(layer.clone());
    let state = PushState {
        online: Online::new(layer.clone(), std::time::Duration::ZERO),
        layer,
        rooms,
        access: PushAccess::Token(TOKEN.into()),
        max_body: 64 * 1024,
    };
    HttpClient::new(routes(state))
}

#[tokio::test]
async fn a_group_send_reaches_the_groups_members() {
    let layer = InMemoryChannelLayer::default();
    let member = layer.new_channel().await.unwrap();
    layer
        .group_add(&GroupName::new("news").unwrap(), &member)
        .await
        .unwrap();

    let response = client(&layer, Rooms::default())
        .post("/api/groups/news/send")
        .bearer(TOKEN)
        .json(&json!({"type": "news.flash", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"delivered": 1, "dropped": 0})
    );
    let got = layer.receive(&member).await.unwrap();
    assert_eq!(got.to_json(), json!({"type": "news.flash", "text": "hi"}));
}

#[tokio::test]
async fn callers_without_the_token_or_json_are_refused() {
    let layer = InMemoryChannelLayer::default();
    let client = client(&layer, Rooms::default());
    let body = json!({"type": "x"});

    let response = client
        .post("/api/groups/news/send")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));

    let response = client
        .post("/api/groups/news/send")
        .bearer("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = client
        .post("/api/groups/news/send")
        .bearer(TOKEN)
        .header("content-type", "text/plain")
        .body(r#"{"type": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "send the body as application/json"
    );
}

#[tokio::test]
async fn a_full_channel_gets_429_and_health_and_rooms_answer() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(1));
    // A connection in the lobby, as the chat counts it (across processes).
    let member = layer.new_channel().await.unwrap();
    layer
        .presence()
        .unwrap()
        .presence_join(
            &GroupName::new(DIRECTORY).unwrap(),
            &member,
            &PresenceKey::new("lobby").unwrap(),
            &PresenceMeta::default(),
        )
        .await
        .unwrap();
    let client = client(&layer, Rooms::default());
    let worker = ChannelName::new("thumbnails").unwrap();
    layer
        .send(&worker, Message::from_json(&json!({"type": "job"})).unwrap())
        .await
        .unwrap();

    let response = client
        .post("/api/channels/thumbnails/send")
        .bearer(TOKEN)
        .json(&json!({"type": "job"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    let response = client.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let rooms = client
        .get("/api/rooms")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(rooms, json!({"rooms": [{"room": "lobby", "members": 1}]}));
}
