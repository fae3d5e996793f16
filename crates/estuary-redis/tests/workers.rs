//! Workers on named channels over the shared Redis: Django's
//! `channel_layer.send("thumbnails", ...)` (channels_redis, through the
//! interop probe) reaches a Rust worker, a Rust worker's send reaches
//! Python's `channel_layer.receive(...)`, and two Estuary processes (two
//! layers, each with its own process id) consuming one named channel share
//! its messages without duplicates, as channels_redis workers do.

use estuary_test_support::probe;
use estuary_test_support::redis as common;

use std::sync::Arc;
use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerHandle, ChannelName, ChannelNameRouter, Message, Worker, WorkerContext,
    WorkerError, WorkerStats, run_workers,
};
use estuary_redis::{RedisChannelLayer, RedisConfig};
use probe::Probe;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Barrier, mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(20);

fn layer(prefix: &str) -> RedisChannelLayer {
    RedisChannelLayer::new(RedisConfig::new([common::SHARED_REDIS]).with_prefix(prefix.to_owned()))
        .expect("layer")
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Job {
    #[serde(rename = "generate")]
    Generate { id: u64, name: String },
}

/// Channels' docs example: generates a thumbnail, then says so on
/// `thumbnails-done`.
struct Thumbnails(mpsc::UnboundedSender<(u64, String)>);

impl Worker for Thumbnails {
    type Event = Job;

    async fn handle(&mut self, ctx: &mut WorkerContext, job: Job) -> Result<(), WorkerError> {
        let Job::Generate { id, name } = job;
        let _ = self.0.send((id, name.clone()));
        let done = ChannelName::new("thumbnails-done")?;
        ctx.send(&done, &json!({"type": "thumbnail.done", "id": id, "name": name}))
            .await
    }
}

/// Runs `router` in the background; the sender stops it, the receiver says
/// it returned.
fn start(
    router: ChannelNameRouter,
    layer: RedisChannelLayer,
) -> (oneshot::Sender<()>, oneshot::Receiver<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let (done_tx, done) = oneshot::channel();
    tokio::spawn(async move {
        run_workers(router, ChannelLayerHandle::new(layer), async {
            let _ = stopped.await;
        })
        .await;
        let _ = done_tx.send(());
    });
    (stop, done)
}

async fn stop(stop: oneshot::Sender<()>, done: oneshot::Receiver<()>) {
    stop.send(()).expect("runner alive");
    tokio::time::timeout(WAIT, done)
        .await
        .expect("the runner drains")
        .expect("the runner returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn django_send_reaches_a_rust_worker_and_its_reply_reaches_python() {
    let prefix = common::unique_prefix();
    let probe = Probe::new(common::SHARED_REDIS, &prefix, None);
    let (tx, mut made) = mpsc::unbounded_channel();
    let router = ChannelNameRouter::new()
        .route("thumbnails", Thumbnails(tx))
        .unwrap();
    let stats = router.stats();
    let (stop_tx, done) = start(router, layer(&prefix));

    // Python waits on the reply channel, as a Django worker or view would.
    let replies = probe.start(
        "receive",
        &["--channel", "thumbnails-done", "--count", "1", "--timeout", "20"],
    );
    // What a Django view does: channel_layer.send("thumbnails", {...}).
    let python = probe.clone();
    tokio::task::spawn_blocking(move || {
        let (code, err) = python.send(
            "thumbnails",
            &json!({"type": "generate", "id": 123, "name": "héllo"}),
            1,
        );
        assert_eq!(code, 0, "python send failed: {err:?}");
    })
    .await
    .unwrap();

    let got = tokio::time::timeout(WAIT, made.recv())
        .await
        .expect("the worker got nothing")
        .unwrap();
    assert_eq!(got, (123, "héllo".to_owned()));
    let (code, lines) = tokio::task::spawn_blocking(move || replies.finish())
        .await
        .unwrap();
    assert_eq!(code, 0, "python receive failed");
    assert_eq!(
        lines,
        vec![json!({"type": "thumbnail.done", "id": 123, "name": "héllo"})]
    );
    stop(stop_tx, done).await;
    assert_eq!((stats.handled(), stats.failed(), stats.undecodable()), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn rust_send_to_a_named_channel_reaches_python_receive_unchanged() {
    let prefix = common::unique_prefix();
    let probe = Probe::new(common::SHARED_REDIS, &prefix, None);
    let layer = layer(&prefix);
    let receiving = probe.start(
        "receive",
        &["--channel", "thumbnails", "--count", "1", "--timeout", "20"],
    );
    let job =
        json!({"type": "generate", "id": 7, "name": "ünïcode", "sizes": [64, 128], "meta": {"k": null}});
    layer
        .send(
            &ChannelName::new("thumbnails").unwrap(),
            Message::from_json(&job).unwrap(),
        )
        .await
        .unwrap();
    let (code, lines) = tokio::task::spawn_blocking(move || receiving.finish())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(lines, vec![job]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn an_undecodable_message_from_python_is_counted_and_the_worker_goes_on() {
    let prefix = common::unique_prefix();
    let probe = Probe::new(common::SHARED_REDIS, &prefix, None);
    let (tx, mut made) = mpsc::unbounded_channel();
    let router = ChannelNameRouter::new()
        .route("thumbnails", Thumbnails(tx))
        .unwrap();
    let stats = router.stats();
    let (stop_tx, done) = start(router, layer(&prefix));
    let python = probe.clone();
    tokio::task::spawn_blocking(move || {
        for message in [
            json!({"type": "resize", "id": 1}),
            json!({"type": "generate", "id": "one", "name": "x"}),
            json!({"type": "generate", "id": 2, "name": "ok"}),
        ] {
            let (code, err) = python.send("thumbnails", &message, 1);
            assert_eq!(code, 0, "python send failed: {err:?}");
        }
    })
    .await
    .unwrap();
    let got = tokio::time::timeout(WAIT, made.recv())
        .await
        .expect("the worker got nothing")
        .unwrap();
    assert_eq!(got.0, 2);
    // One sender, one channel: the two bad ones came first.
    assert_eq!(stats.undecodable(), 2);
    stop(stop_tx, done).await;
}

/// Records which process handled which job; its first job waits until the
/// other process has one too (so each takes part, whatever Redis's timing).
struct Share {
    process: usize,
    both: Option<Arc<Barrier>>,
    seen: mpsc::UnboundedSender<(usize, u64)>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename = "job")]
struct Numbered {
    id: u64,
}

impl Worker for Share {
    type Event = Numbered;

    async fn handle(&mut self, _ctx: &mut WorkerContext, job: Numbered) -> Result<(), WorkerError> {
        if let Some(both) = self.both.take() {
            both.wait().await;
        }
        let _ = self.seen.send((self.process, job.id));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn two_processes_on_one_named_channel_share_its_messages_without_duplicates() {
    const JOBS: u64 = 40;
    let prefix = common::unique_prefix();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let both = Arc::new(Barrier::new(2));
    let mut runners = Vec::new();
    let mut stats: Vec<WorkerStats> = Vec::new();
    for process in 0..2 {
        let worker = Share {
            process,
            both: Some(both.clone()),
            seen: seen_tx.clone(),
        };
        let router = ChannelNameRouter::new().route("jobs", worker).unwrap();
        stats.push(router.stats());
        // Each layer has its own process id, as two `estuary serve` would.
        runners.push(start(router, layer(&prefix)));
    }
    let sender = layer(&prefix);
    let jobs = ChannelName::new("jobs").unwrap();
    for id in 0..JOBS {
        sender
            .send(
                &jobs,
                Message::from_json(&json!({"type": "job", "id": id})).unwrap(),
            )
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    let mut per_process = [0u64; 2];
    for _ in 0..JOBS {
        let (process, id) = tokio::time::timeout(WAIT, seen.recv())
            .await
            .expect("a job was not handled")
            .unwrap();
        per_process[process] += 1;
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..JOBS).collect::<Vec<_>>(), "every job exactly once");
    assert!(
        per_process.iter().all(|&n| n > 0),
        "both took part: {per_process:?}"
    );
    for (stop_tx, done) in runners {
        stop(stop_tx, done).await;
    }
    assert_eq!(stats.iter().map(WorkerStats::handled).sum::<u64>(), JOBS);
}
