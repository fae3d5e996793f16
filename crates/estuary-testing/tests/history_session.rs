//! A consumer that recovers what its client missed: it greets with the
//! room's position, and a client that comes back with the last position it
//! saw gets every missed message (marked recovered), then live ones, none
//! twice; a position the history cannot serve is answered "cannot recover".

use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerConfig, ChannelLayerHandle, Connect, Consumer, ConsumerError, Context, Epoch,
    GroupName, HistoryConfig, InMemoryChannelLayer, Message, Recovery, StreamPosition,
};
use estuary_server::Router;
use estuary_testing::Communicator;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "note")]
    Note {
        n: u64,
        #[serde(rename = "__position__")]
        position: Option<StreamPosition>,
    },
}

#[derive(Deserialize)]
struct Since {
    epoch: Option<String>,
    offset: Option<u64>,
}

/// Follows `hist_room`; `?epoch=&offset=` asks for what was missed.
#[derive(Default)]
struct Follower {
    /// Live messages at or below this offset were recovered already.
    recovered_to: u64,
}

fn room() -> GroupName {
    GroupName::new("hist_room").expect("group")
}

impl Consumer for Follower {
    type Event = Event;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        // Join first: what is sent from now on arrives live.
        ctx.group_add(&room()).await?;
        let since: Since = ctx.scope().query()?;
        let asked = since
            .epoch
            .and_then(|e| e.parse::<Epoch>().ok())
            .zip(since.offset)
            .map(|(epoch, offset)| StreamPosition::new(offset, epoch));
        let Some(asked) = asked else {
            let position = ctx.history_position(&room()).await?;
            self.recovered_to = position.offset;
            ctx.send_json(&json!({"type": "hello", "position": position}))
                .await?;
            return Ok(Connect::accept());
        };
        match ctx.history_since(&room(), asked).await? {
            Recovery::Recovered(missed) => {
                for message in &missed.messages {
                    let mut frame = message.to_json();
                    frame["recovered"] = json!(true);
                    ctx.send_json(&frame).await?;
                }
                self.recovered_to = missed.position.offset;
                ctx.send_json(&json!({"type": "hello", "position": missed.position}))
                    .await?;
            }
            Recovery::Unrecoverable { reason, position } => {
                self.recovered_to = position.offset;
                ctx.send_json(
                    &json!({"type": "cannot_recover", "reason": reason.to_string(), "position": position}),
                )
                .await?;
            }
        }
        Ok(Connect::accept())
    }

    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Note { n, position } = event;
        if position.is_some_and(|p| p.offset <= self.recovered_to) {
            // Recovered already.
            return Ok(());
        }
        ctx.send_json(&json!({"type": "note", "n": n, "__position__": position}))
            .await
    }
}

fn app() -> (estuary_server::RouterService, ChannelLayerHandle) {
    let config = ChannelLayerConfig::default()
        .with_history_glob("hist_*", HistoryConfig::new(3, Duration::from_secs(60)))
        .expect("glob");
    let layer = ChannelLayerHandle::new(InMemoryChannelLayer::new(config));
    let app = Router::new()
        .with_channel_layer(layer.clone())
        .websocket("ws/follow/", Follower::default)
        .into_service();
    (app, layer)
}

async fn note(layer: &ChannelLayerHandle, n: u64) -> StreamPosition {
    let m = Message::from_json(&json!({"type": "note", "n": n})).expect("message");
    let report = layer.group_send(&room(), m).await.expect("group_send");
    report.position.expect("a recorded room")
}

fn path(position: &Value) -> String {
    format!(
        "/ws/follow/?epoch={}&offset={}",
        position["epoch"].as_str().expect("epoch"),
        position["offset"]
    )
}

#[tokio::test]
async fn a_client_coming_back_gets_what_it_missed_then_live_messages_once() {
    let (app, layer) = app();
    let mut first = Communicator::new(app.clone(), "/ws/follow/");
    first.connect().await.expect("accepted");
    let hello: Value = first.receive_json().await.expect("hello");
    let seen = hello["position"].clone();
    note(&layer, 1).await;
    let got: Value = first.receive_json().await.expect("live");
    assert_eq!(got["n"], 1);
    let seen_after_1 = got["__position__"].clone();
    first.disconnect().await;

    // Missed while away.
    note(&layer, 2).await;
    note(&layer, 3).await;
    let mut back = Communicator::new(app.clone(), &path(&seen_after_1));
    back.connect().await.expect("accepted");
    for n in [2, 3] {
        let got: Value = back.receive_json().await.expect("recovered");
        assert_eq!(
            (got["n"].as_u64(), got["recovered"].as_bool()),
            (Some(n), Some(true))
        );
    }
    let hello: Value = back.receive_json().await.expect("hello");
    assert_eq!(hello["position"]["offset"], 3);
    note(&layer, 4).await;
    let got: Value = back.receive_json().await.expect("live");
    assert_eq!((got["n"].as_u64(), got.get("recovered")), (Some(4), None));
    back.assert_no_message().await;

    // From the very first greeting: still within the size (3 kept: 2, 3, 4).
    let mut again = Communicator::new(app, &path(&seen));
    again.connect().await.expect("accepted");
    let got: Value = again.receive_json().await.expect("an answer");
    assert_eq!(
        got["type"], "cannot_recover",
        "message 1 is no longer kept: {got}"
    );
    assert_eq!(got["position"]["offset"], 4);
}
