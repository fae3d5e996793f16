//! A connection's presence follows its session: it joins in `connect` and
//! leaves on every way out (client close, handler error, handler panic,
//! close by the consumer, a rejected handshake, a dropped client), and two
//! tabs of one user are one presence.

use estuary_core::{
    ChannelLayer, ChannelLayerHandle, ChannelName, CloseCode, Connect, Consumer, ConsumerError, Context,
    GroupName, NoEvent, PresenceKey, PresenceMeta, WsMessage,
};
use estuary_server::Router;
use estuary_testing::Communicator;
use estuary_testing::conformance::presence::next_diff;

/// Joins `room`'s presence as `?user=` (anonymous: its channel); rejects
/// after joining when `?reject=1`.
struct Present;

fn room() -> GroupName {
    GroupName::new("presence_room").expect("group")
}

impl Consumer for Present {
    type Event = NoEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        ctx.group_add(&room()).await?;
        let key = match ctx.scope().query_param("user") {
            Some(user) => PresenceKey::new(user)?,
            None => PresenceKey::for_channel(ctx.channel_name()),
        };
        let meta = PresenceMeta::new(serde_json::json!({"name": key.as_str()}))?;
        ctx.presence_join(&room(), &key, &meta).await?;
        if ctx.scope().query_param("reject").is_some() {
            return Ok(Connect::reject());
        }
        ctx.send_text("in").await?;
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        match message.as_text() {
            Some("boom") => Err(ConsumerError::other(std::io::Error::other("handler failed"))),
            Some("panic") => panic!("a bug in a handler"),
            Some("close") => ctx.close(CloseCode::from(4000), "bye").await,
            Some("leave") => {
                ctx.presence_leave(&room()).await?;
                ctx.send_text("left").await
            }
            _ => Ok(()),
        }
    }
}

struct Harness {
    app: estuary_server::RouterService,
    layer: ChannelLayerHandle,
    watcher: ChannelName,
}

async fn harness() -> Harness {
    let app = Router::new().websocket("ws/present/", || Present).into_service();
    let layer = app.router().channel_layer().clone();
    let watcher = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room(), &watcher).await.expect("group_add");
    Harness { app, layer, watcher }
}

impl Harness {
    async fn connect(&self, user: &str) -> Communicator {
        let mut c = Communicator::new(self.app.clone(), &format!("/ws/present/?user={user}"));
        c.connect().await.expect("accepted");
        assert_eq!(c.receive_text().await.expect("greeting"), "in");
        c
    }

    /// Waits for a diff mentioning `user`; (joined, left).
    async fn next_change(&self, user: &str) -> (bool, bool) {
        let key = PresenceKey::new(user).expect("key");
        loop {
            let diff = next_diff(&self.layer, &self.watcher).await;
            let change = (diff.joins.contains_key(&key), diff.leaves.contains_key(&key));
            if change != (false, false) {
                return change;
            }
        }
    }

    async fn present(&self) -> Vec<String> {
        let presence = self.layer.presence().expect("presence");
        let list = presence.presence_list(&room()).await.expect("list");
        list.entries.into_iter().map(|e| e.key.to_string()).collect()
    }
}

#[tokio::test]
async fn a_client_closing_leaves() {
    let h = harness().await;
    let c = h.connect("ann").await;
    assert_eq!(h.next_change("ann").await, (true, false));
    c.disconnect().await;
    assert_eq!(h.next_change("ann").await, (false, true));
    assert!(h.present().await.is_empty());
}

#[tokio::test]
async fn a_failing_handler_leaves() {
    let h = harness().await;
    let mut c = h.connect("bob").await;
    assert_eq!(h.next_change("bob").await, (true, false));
    c.send_text("boom").await.expect("send");
    assert_eq!(c.receive_close().await.expect("close"), CloseCode::INTERNAL_ERROR);
    assert_eq!(h.next_change("bob").await, (false, true));
}

#[tokio::test]
async fn a_panicking_handler_leaves() {
    let h = harness().await;
    let mut c = h.connect("carol").await;
    assert_eq!(h.next_change("carol").await, (true, false));
    c.send_text("panic").await.expect("send");
    assert_eq!(c.receive_close().await.expect("close"), CloseCode::INTERNAL_ERROR);
    assert_eq!(h.next_change("carol").await, (false, true));
}

#[tokio::test]
async fn a_consumer_closing_leaves() {
    let h = harness().await;
    let mut c = h.connect("dave").await;
    assert_eq!(h.next_change("dave").await, (true, false));
    c.send_text("close").await.expect("send");
    assert_eq!(c.receive_close().await.expect("close"), CloseCode::from(4000));
    assert_eq!(h.next_change("dave").await, (false, true));
}

#[tokio::test]
async fn a_rejected_handshake_leaves() {
    let h = harness().await;
    let mut c = Communicator::new(h.app.clone(), "/ws/present/?user=eve&reject=1");
    assert!(c.connect().await.is_err(), "rejected");
    // Joined in `connect`, left when the rejection released the channel,
    // before the handshake was answered.
    let presence = h.layer.presence().expect("presence");
    assert_eq!(presence.presence_count(&room()).await.expect("count").keys, 0);
    // Usually both inside one interval, so nothing is announced; if the
    // join went out, its leave follows, before a later arrival's join.
    let _sentinel = h.connect("sentinel").await;
    let eve = PresenceKey::new("eve").expect("key");
    let mut eve_present = false;
    loop {
        let diff = next_diff(&h.layer, &h.watcher).await;
        eve_present = (eve_present || diff.joins.contains_key(&eve)) && !diff.leaves.contains_key(&eve);
        if diff
            .joins
            .contains_key(&PresenceKey::new("sentinel").expect("key"))
        {
            break;
        }
    }
    assert!(
        !eve_present,
        "a rejected connection is not left announced as present"
    );
}

#[tokio::test]
async fn a_dropped_client_leaves() {
    let h = harness().await;
    let c = h.connect("frank").await;
    assert_eq!(h.next_change("frank").await, (true, false));
    drop(c);
    assert_eq!(h.next_change("frank").await, (false, true));
}

#[tokio::test]
async fn an_explicit_leave_then_close_leaves_once() {
    let h = harness().await;
    let mut c = h.connect("gina").await;
    assert_eq!(h.next_change("gina").await, (true, false));
    c.send_text("leave").await.expect("send");
    assert_eq!(c.receive_text().await.expect("reply"), "left");
    assert_eq!(h.next_change("gina").await, (false, true));
    c.disconnect().await;
    let sentinel = h.connect("sentinel").await;
    // The next change is the sentinel's join, not a second leave.
    let key = PresenceKey::new("gina").expect("key");
    loop {
        let diff = next_diff(&h.layer, &h.watcher).await;
        assert!(!diff.leaves.contains_key(&key), "left twice: {diff:?}");
        if diff
            .joins
            .contains_key(&PresenceKey::new("sentinel").expect("key"))
        {
            break;
        }
    }
    drop(sentinel);
}

#[tokio::test]
async fn two_tabs_of_one_user_are_one_presence() {
    let h = harness().await;
    let tab1 = h.connect("hal").await;
    assert_eq!(h.next_change("hal").await, (true, false));
    let tab2 = h.connect("hal").await;
    let presence = h.layer.presence().expect("presence");
    let list = presence.presence_list(&room()).await.expect("list");
    assert_eq!((list.keys(), list.connections()), (1, 2));
    tab1.disconnect().await;
    let list = presence.presence_list(&room()).await.expect("list");
    assert_eq!(
        (list.keys(), list.connections()),
        (1, 1),
        "one tab left, the user stays"
    );
    tab2.disconnect().await;
    // The first change after the join is the leave: no second join, and
    // no leave when only the first tab went.
    assert_eq!(h.next_change("hal").await, (false, true));
    assert!(h.present().await.is_empty());
}
