//! The broadcast path over real sockets: a backlog leaves in few writes, and a
//! frame rendered once per group message is byte for byte what each member
//! would have sent on its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerHandle, Connect, Consumer, ConsumerError, Context, GroupName,
    InMemoryChannelLayer, Message, WsMessage,
};
use estuary_server::{Router, Server};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename = "note")]
struct Note {
    text: String,
    n: u32,
}

/// The frame every member sends for a note, however it is made.
fn note_frame(note: &Note) -> WsMessage {
    WsMessage::json(&serde_json::json!({"kind": "note", "text": note.text, "n": note.n})).expect("JSON")
}

/// Every test consumer's `connect`: join group `g`, say "ready".
async fn join_group(ctx: &mut Context) -> Result<Connect, ConsumerError> {
    ctx.group_add(&GroupName::new("g")?).await?;
    ctx.send_text("ready").await?;
    Ok(Connect::accept())
}

/// How many times `Rendered::render` ran (only the rendering test uses it).
static RENDERS: AtomicUsize = AtomicUsize::new(0);

/// Joins group `g` and renders notes once per group message.
struct Rendered;

impl Consumer for Rendered {
    type Event = Note;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        join_group(ctx).await
    }

    fn render(note: &Note) -> Option<WsMessage> {
        RENDERS.fetch_add(1, Ordering::Relaxed);
        Some(note_frame(note))
    }
}

/// Joins group `g` and sends each note from its own handler.
struct PerMember;

impl Consumer for PerMember {
    type Event = Note;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        join_group(ctx).await
    }

    async fn event(&mut self, ctx: &mut Context, note: Note) -> Result<(), ConsumerError> {
        ctx.send(note_frame(&note)).await
    }
}

/// Joins group `g`, renders notes once per group message, and echoes what
/// its client sends.
struct Echoing;

impl Consumer for Echoing {
    type Event = Note;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        join_group(ctx).await
    }

    fn render(note: &Note) -> Option<WsMessage> {
        Some(note_frame(note))
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        ctx.send(message).await
    }
}

struct Running {
    addr: SocketAddr,
    layer: ChannelLayerHandle,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Running {
    let layer = ChannelLayerHandle::new(InMemoryChannelLayer::default());
    let router = Router::new()
        .with_channel_layer(layer.clone())
        .websocket("ws/rendered/", || Rendered)
        .websocket("ws/per-member/", || PerMember)
        .websocket("ws/echoing/", || Echoing);
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(router.into_service(), async move { token.cancelled().await }));
    Running { addr, layer, stop }
}

type Client = WebSocketStream<TcpStream>;

/// Connects over a socket whose local port the test knows, and waits for "ready".
async fn join(addr: SocketAddr, path: &str) -> (Client, u16) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "ready");
    (ws, port)
}

async fn next_text(ws: &mut Client) -> String {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Frame::Text(text)))) => text.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// TCP segments with data that the client's socket (local port `port`) has
/// received, as the kernel counts them (`ss`, from iproute2). On loopback
/// with `TCP_NODELAY`, each server write under the MSS is one segment.
fn data_segments_in(port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args([
            "-tinH",
            "state",
            "established",
            "src",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("`ss` (iproute2) counts the client's TCP segments; install iproute2");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|field| field.strip_prefix("data_segs_in:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data_segs_in in `ss` output: {text}"))
}

fn note(n: u32) -> Message {
    Message::encode(&Note {
        text: format!("note {n}: \"quoted\", caf\u{e9}, \u{1f30a}"),
        n,
    })
    .unwrap()
}

/// Twenty group messages queued while the member's session is not running
/// (the test holds the only thread) leave in one or two writes, not twenty.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_to_one_member_leaves_in_fewer_writes_than_messages() {
    let server = start().await;
    let (mut client, port) = join(server.addr, "/ws/per-member/").await;
    let before = data_segments_in(port);
    const BURST: u32 = 20;
    let group = GroupName::new("g").unwrap();
    for n in 0..BURST {
        // Completes without yielding: the session sees all of them at once.
        let report = server.layer.group_send(&group, note(n)).await.unwrap();
        assert_eq!(report.delivered, 1);
    }
    for n in 0..BURST {
        let frame: serde_json::Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
        assert_eq!(frame["n"], n, "in order, none missing");
    }
    let writes = data_segments_in(port) - before;
    println!("{BURST} messages arrived in {writes} TCP segment(s)");
    assert!(
        writes * 4 <= u64::from(BURST),
        "{BURST} messages took {writes} writes: the backlog was not batched"
    );
}

/// Members of a consumer that renders once and of one that sends from its
/// own handler receive the same bytes; the rendering consumer renders once
/// per group message, not once per member.
#[tokio::test]
async fn a_rendered_frame_is_the_bytes_the_per_member_path_sends() {
    let server = start().await;
    let mut rendered = Vec::new();
    let mut per_member = Vec::new();
    for _ in 0..3 {
        rendered.push(join(server.addr, "/ws/rendered/").await.0);
        per_member.push(join(server.addr, "/ws/per-member/").await.0);
    }
    const MESSAGES: u32 = 10;
    let group = GroupName::new("g").unwrap();
    let renders_before = RENDERS.load(Ordering::Relaxed);
    for n in 0..MESSAGES {
        let report = server.layer.group_send(&group, note(n)).await.unwrap();
        assert_eq!(report.delivered, 6);
    }
    let mut received = Vec::new();
    for client in per_member.iter_mut().chain(rendered.iter_mut()) {
        let mut frames = Vec::new();
        for _ in 0..MESSAGES {
            frames.push(next_text(client).await);
        }
        received.push(frames);
    }
    let expected: Vec<String> = (0..MESSAGES)
        .map(|n| {
            let Note { text, n } = note(n).decode().unwrap();
            note_frame(&Note { text, n }).as_text().unwrap().to_owned()
        })
        .collect();
    for (i, frames) in received.iter().enumerate() {
        assert_eq!(frames, &expected, "client {i} (0-2 per member, 3-5 rendered)");
    }
    let renders = RENDERS.load(Ordering::Relaxed) - renders_before;
    assert_eq!(
        renders, MESSAGES as usize,
        "rendered once per group message, shared by the 3 members"
    );
}

/// Joins group `g`, reports how its connection ended.
struct Member {
    ended: tokio::sync::mpsc::UnboundedSender<estuary_core::CloseCode>,
}

impl Consumer for Member {
    type Event = Note;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        join_group(ctx).await
    }

    fn render(note: &Note) -> Option<WsMessage> {
        Some(note_frame(note))
    }

    async fn disconnect(&mut self, _ctx: &mut Context, code: estuary_core::CloseCode) {
        let _ = self.ended.send(code);
    }
}

/// A member that stops reading in a busy room is closed by the slow-client
/// policy (1013), and never holds the room up: the producer respects the
/// layer's flow control (it waits while a live member is backlogged), the
/// healthy members get every message in order, and only the slow one's
/// messages are dropped, counted by the layer.
#[tokio::test]
async fn a_slow_reader_is_closed_while_its_room_keeps_flowing() {
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let layer = InMemoryChannelLayer::default();
    let handle = ChannelLayerHandle::new(layer.clone());
    let mut settings = estuary_server::WsSettings::default();
    // Short deadlines: the test waits for them, so they set its length.
    settings.session.write_timeout = Duration::from_millis(300);
    settings.session.slow_client = estuary_core::SlowClientPolicy::Disconnect {
        grace: Duration::from_millis(300),
    };
    let router = Router::new()
        .with_settings(settings)
        .with_channel_layer(handle.clone())
        .websocket("ws/member/", move || Member {
            ended: ended_tx.clone(),
        });
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(router.into_service(), async move { token.cancelled().await }));

    // The slow reader: a 4 KiB receive buffer, and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws/member/"), tcp)
        .await
        .unwrap();
    assert_eq!(next_text(&mut slow).await, "ready");

    // 13 MB for each member: more than the kernel buffers (the server's send
    // buffer grows to 4 MiB here), so the slow reader's writes block.
    const MESSAGES: u32 = 800;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (mut client, _) = join(addr, "/ws/member/").await;
        readers.push(tokio::spawn(async move {
            for n in 0..MESSAGES {
                let frame: serde_json::Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
                assert_eq!(frame["n"], n, "a healthy member lost or reordered a message");
            }
            // Kept open: the first connection to end must be the slow one.
            client
        }));
    }
    let group = GroupName::new("g").unwrap();
    let text = "x".repeat(16_000);
    for n in 0..MESSAGES {
        // A producer in a session would stop reading its client here.
        while handle.backlogged() {
            tokio::time::timeout(WAIT, handle.relieved())
                .await
                .expect("the backlog clears: the slow reader must not hold the room");
        }
        let message = Message::encode(&Note {
            text: text.clone(),
            n,
        })
        .unwrap();
        handle.group_send(&group, message).await.unwrap();
    }
    let mut healthy = Vec::new();
    for reader in readers {
        healthy.push(
            tokio::time::timeout(WAIT, reader)
                .await
                .expect("healthy members got every message in time")
                .unwrap(),
        );
    }
    let code = tokio::time::timeout(WAIT, ended.recv())
        .await
        .expect("the slow reader was closed")
        .unwrap();
    assert_eq!(code, estuary_core::CloseCode::TRY_AGAIN_LATER);
    println!(
        "slow reader closed with {code}; the layer dropped {} of its messages",
        layer.dropped()
    );
    assert!(ended.try_recv().is_err(), "only the slow reader was closed");
    drop((healthy, slow));
    stop.cancel();
}

/// A member woken by one delivery after another (which it takes without
/// polling its other sources, while they show nothing) still hears its
/// client, and the shutdown, while the deliveries keep coming.
#[tokio::test]
async fn a_member_taking_delivery_after_delivery_still_hears_its_client_and_the_shutdown() {
    use futures_util::SinkExt;
    let server = start().await;
    let (mut client, _) = join(server.addr, "/ws/echoing/").await;
    let layer = server.layer.clone();
    let feeding = tokio::spawn(async move {
        let group = GroupName::new("g").unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for n in 0.. {
            // Paces the load; nothing is checked against the clock.
            tick.tick().await;
            if layer.group_send(&group, note(n)).await.is_err() {
                return;
            }
        }
    });
    let first: serde_json::Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
    assert_eq!(first["kind"], "note", "deliveries are flowing");
    // Among the deliveries, the echo of what the client sends.
    for round in 0..3 {
        let said = format!("said {round}");
        client.send(Frame::text(said.clone())).await.unwrap();
        while next_text(&mut client).await != said {}
    }
    // The shutdown closes it with 1001 while they still flow.
    server.stop.cancel();
    let code = loop {
        match tokio::time::timeout(WAIT, client.next()).await {
            Ok(Some(Ok(Frame::Text(_)))) => continue,
            Ok(Some(Ok(Frame::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            other => panic!("expected deliveries, then a close frame; got {other:?}"),
        }
    };
    assert_eq!(code, Some(1001));
    feeding.abort();
}
