//! Workers beside the WebSocket tier (`Server::with_workers`): a consumer
//! hands a job to a named channel, the worker answers the consumer's group,
//! and graceful shutdown lets the worker finish the message in hand.

use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerHandle, ChannelName, ChannelNameRouter, Connect, Consumer, ConsumerError,
    Context, GroupName, InMemoryChannelLayer, Message, Worker, WorkerContext, WorkerError, WsMessage,
};
use estuary_server::{Router, Server, ServerConfig};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(tag = "type", rename = "thumbnail.done")]
struct Done {
    id: u64,
}

/// Joins `uploads`; each text frame is a job for the `thumbnails` worker;
/// the worker's answers go back to the client.
struct Uploader;

impl Consumer for Uploader {
    type Event = Done;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        ctx.group_add(&GroupName::new("uploads")?).await?;
        ctx.send_text("ready").await?;
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
        let id: u64 = msg
            .as_text()
            .unwrap_or_default()
            .parse()
            .map_err(ConsumerError::other)?;
        let thumbnails = ChannelName::new("thumbnails")?;
        ctx.send_to(&thumbnails, &json!({"type": "generate", "id": id}))
            .await
    }

    async fn event(&mut self, ctx: &mut Context, done: Done) -> Result<(), ConsumerError> {
        ctx.send_text(format!("done {}", done.id)).await
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename = "generate")]
struct Generate {
    id: u64,
}

struct Thumbnails;

impl Worker for Thumbnails {
    type Event = Generate;

    async fn handle(&mut self, ctx: &mut WorkerContext, job: Generate) -> Result<(), WorkerError> {
        let uploads = GroupName::new("uploads")?;
        ctx.group_send(&uploads, &json!({"type": "thumbnail.done", "id": job.id}))
            .await?;
        Ok(())
    }
}

async fn next_text<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Frame, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Frame::Text(text)))) => text.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_consumer_hands_a_job_to_a_worker_which_answers_its_group() {
    let layer = ChannelLayerHandle::new(InMemoryChannelLayer::default());
    let router = Router::new()
        .with_channel_layer(layer.clone())
        .websocket("ws/uploads/", || Uploader);
    let workers = ChannelNameRouter::new().route("thumbnails", Thumbnails).unwrap();
    let stats = workers.stats();
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_workers(workers, layer);
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let serving = tokio::spawn(server.serve(router.into_service(), async move { token.cancelled().await }));

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/uploads/"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "ready");
    ws.send(Frame::text("123")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "done 123");

    stop.cancel();
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert_eq!(stats.handled(), 1);
}

/// Says when it starts a job, then waits for the gate (forever without one).
struct Gated {
    started: mpsc::UnboundedSender<u64>,
    gate: Option<oneshot::Receiver<()>>,
}

impl Worker for Gated {
    type Event = Generate;

    async fn handle(&mut self, _ctx: &mut WorkerContext, job: Generate) -> Result<(), WorkerError> {
        let _ = self.started.send(job.id);
        match self.gate.take() {
            Some(gate) => {
                let _ = gate.await;
            }
            None => std::future::pending().await,
        }
        Ok(())
    }
}

async fn serve_gated(
    gate: Option<oneshot::Receiver<()>>,
    config: ServerConfig,
) -> (
    ChannelLayerHandle,
    mpsc::UnboundedReceiver<u64>,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
    estuary_core::WorkerStats,
) {
    let layer = ChannelLayerHandle::new(InMemoryChannelLayer::default());
    let (started_tx, started) = mpsc::unbounded_channel();
    let workers = ChannelNameRouter::new()
        .route(
            "thumbnails",
            Gated {
                started: started_tx,
                gate,
            },
        )
        .unwrap();
    let stats = workers.stats();
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_config(config)
        .with_workers(workers, layer.clone());
    let stop = CancellationToken::new();
    let token = stop.clone();
    let router = Router::new().with_channel_layer(layer.clone());
    let serving = tokio::spawn(server.serve(router.into_service(), async move { token.cancelled().await }));
    (layer, started, stop, serving, stats)
}

fn job(id: u64) -> Message {
    Message::from_json(&json!({"type": "generate", "id": id})).unwrap()
}

#[tokio::test]
async fn graceful_shutdown_lets_the_worker_finish_the_message_in_hand() {
    let (release, gate) = oneshot::channel();
    let (layer, mut started, stop, mut serving, stats) =
        serve_gated(Some(gate), ServerConfig::default()).await;
    let thumbnails = ChannelName::new("thumbnails").unwrap();
    layer.send(&thumbnails, job(1)).await.unwrap();
    layer.send(&thumbnails, job(2)).await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, started.recv()).await.unwrap(), Some(1));

    stop.cancel();
    // Serve waits for the handler in hand: it has not returned while the
    // handler waits (checked once the accept loop had every chance to stop).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !serving.is_finished(),
        "serve returned before the worker's handler did"
    );
    release.send(()).unwrap();
    tokio::time::timeout(WAIT, &mut serving)
        .await
        .expect("serve returns once the handler has")
        .unwrap()
        .unwrap();
    assert_eq!(stats.handled(), 1);
    assert!(started.try_recv().is_err(), "no job is taken after shutdown");
    let left = tokio::time::timeout(WAIT, layer.receive(&thumbnails))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        left.to_json()["id"],
        2,
        "the second job waits for the next worker"
    );
}

#[tokio::test]
async fn a_worker_stuck_past_the_shutdown_timeout_is_cut_short() {
    let config = ServerConfig {
        shutdown_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let (layer, mut started, stop, serving, stats) = serve_gated(None, config).await;
    layer
        .send(&ChannelName::new("thumbnails").unwrap(), job(1))
        .await
        .unwrap();
    assert_eq!(tokio::time::timeout(WAIT, started.recv()).await.unwrap(), Some(1));
    stop.cancel();
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("serve returns at the shutdown deadline")
        .unwrap()
        .unwrap();
    assert_eq!(stats.handled(), 0);
}
