use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::{ChannelLayer, ChannelLayerHandle, InMemoryChannelLayer};

const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Job {
    #[serde(rename = "job")]
    Run { id: u64 },
    #[serde(rename = "fail")]
    Fail { id: u64 },
    #[serde(rename = "panic")]
    Panic { id: u64 },
}

/// Reports every id it handles; fails or panics when asked to.
struct Recorder(mpsc::UnboundedSender<u64>);

impl Worker for Recorder {
    type Event = Job;

    async fn handle(&mut self, _ctx: &mut WorkerContext, job: Job) -> Result<(), WorkerError> {
        match job {
            Job::Run { id } => {
                let _ = self.0.send(id);
                Ok(())
            }
            Job::Fail { id } => {
                let _ = self.0.send(id);
                Err(WorkerError::other(std::io::Error::other("asked to fail")))
            }
            Job::Panic { id } => {
                let _ = self.0.send(id);
                panic!("asked to panic");
            }
        }
    }
}

fn message(value: serde_json::Value) -> Message {
    Message::from_json(&value).unwrap()
}

async fn next(rx: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the worker handled nothing")
        .expect("the worker is gone")
}

/// Runs `router` on `layer` in the background; the sender stops it, the
/// receiver says it returned.
fn start(
    router: ChannelNameRouter,
    layer: &InMemoryChannelLayer,
) -> (oneshot::Sender<()>, oneshot::Receiver<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let (done_tx, done) = oneshot::channel();
    let handle = ChannelLayerHandle::new(layer.clone());
    tokio::spawn(async move {
        run_workers(router, handle, async {
            let _ = stopped.await;
        })
        .await;
        let _ = done_tx.send(());
    });
    (stop, done)
}

#[tokio::test]
async fn messages_are_handled_one_channel_in_order() {
    let layer = InMemoryChannelLayer::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = ChannelNameRouter::new().route("jobs", Recorder(tx)).unwrap();
    let stats = router.stats();
    let (stop, done) = start(router, &layer);
    let jobs = ChannelName::new("jobs").unwrap();
    for id in 0..50 {
        layer
            .send(&jobs, message(json!({"type": "job", "id": id})))
            .await
            .unwrap();
    }
    for id in 0..50 {
        assert_eq!(next(&mut rx).await, id);
    }
    assert_eq!(stats.handled(), 50);
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
}

#[tokio::test]
async fn errors_and_panics_are_counted_and_the_worker_goes_on() {
    let layer = InMemoryChannelLayer::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = ChannelNameRouter::new().route("jobs", Recorder(tx)).unwrap();
    let stats = router.stats();
    let (stop, done) = start(router, &layer);
    let jobs = ChannelName::new("jobs").unwrap();
    for (kind, id) in [("fail", 1), ("panic", 2), ("job", 3), ("fail", 4), ("job", 5)] {
        layer
            .send(&jobs, message(json!({"type": kind, "id": id})))
            .await
            .unwrap();
    }
    for id in 1..=5 {
        assert_eq!(next(&mut rx).await, id);
    }
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
    // The last handler has returned once the runner has.
    assert_eq!((stats.handled(), stats.failed(), stats.panicked()), (2, 2, 1));
}

#[tokio::test]
async fn undecodable_messages_are_counted_not_fatal() {
    let layer = InMemoryChannelLayer::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = ChannelNameRouter::new().route("jobs", Recorder(tx)).unwrap();
    let stats = router.stats();
    let (stop, done) = start(router, &layer);
    let jobs = ChannelName::new("jobs").unwrap();
    layer
        .send(&jobs, message(json!({"type": "unknown.kind"})))
        .await
        .unwrap();
    layer
        .send(&jobs, message(json!({"type": "job", "id": "not a number"})))
        .await
        .unwrap();
    layer
        .send(&jobs, message(json!({"type": "job", "id": 7})))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, 7);
    // In order: both bad ones were handled before the good one.
    assert_eq!(stats.undecodable(), 2);
    assert_eq!((stats.handled(), stats.failed()), (1, 0));
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
}

/// Waits for a gate on its first message, then reports it done.
struct Slow {
    started: mpsc::UnboundedSender<u64>,
    gate: Option<oneshot::Receiver<()>>,
    finished: mpsc::UnboundedSender<u64>,
}

impl Worker for Slow {
    type Event = Job;

    async fn handle(&mut self, _ctx: &mut WorkerContext, job: Job) -> Result<(), WorkerError> {
        let (Job::Run { id } | Job::Fail { id } | Job::Panic { id }) = job;
        let _ = self.started.send(id);
        if let Some(gate) = self.gate.take() {
            let _ = gate.await;
        }
        let _ = self.finished.send(id);
        Ok(())
    }
}

#[tokio::test]
async fn shutdown_finishes_the_message_in_hand_and_takes_no_other() {
    let layer = InMemoryChannelLayer::default();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (finished_tx, mut finished) = mpsc::unbounded_channel();
    let (release, gate) = oneshot::channel();
    let worker = Slow {
        started: started_tx,
        gate: Some(gate),
        finished: finished_tx,
    };
    let router = ChannelNameRouter::new().route("jobs", worker).unwrap();
    let (stop, mut done) = start(router, &layer);
    let jobs = ChannelName::new("jobs").unwrap();
    layer
        .send(&jobs, message(json!({"type": "job", "id": 1})))
        .await
        .unwrap();
    layer
        .send(&jobs, message(json!({"type": "job", "id": 2})))
        .await
        .unwrap();
    assert_eq!(next(&mut started).await, 1);

    stop.send(()).unwrap();
    // The runner waits for the handler in hand.
    tokio::select! {
        _ = &mut done => panic!("the runner returned before its worker's handler did"),
        _ = tokio::task::yield_now() => {}
    }
    release.send(()).unwrap();
    tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
    assert_eq!(finished.try_recv(), Ok(1));
    assert!(started.try_recv().is_err(), "no message is taken after shutdown");
    // The second message is still in the layer, for the next worker.
    let left = tokio::time::timeout(WAIT, layer.receive(&jobs))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.to_json()["id"], 2);
}

#[tokio::test]
async fn channels_run_side_by_side() {
    let layer = InMemoryChannelLayer::default();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (finished_tx, _finished) = mpsc::unbounded_channel();
    let (_release, gate) = oneshot::channel::<()>();
    let stuck = Slow {
        started: started_tx,
        gate: Some(gate),
        finished: finished_tx,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = ChannelNameRouter::new()
        .route("stuck", stuck)
        .unwrap()
        .route("free", Recorder(tx))
        .unwrap();
    let (stop, done) = start(router, &layer);
    let stuck = ChannelName::new("stuck").unwrap();
    let free = ChannelName::new("free").unwrap();
    layer
        .send(&stuck, message(json!({"type": "job", "id": 1})))
        .await
        .unwrap();
    assert_eq!(next(&mut started).await, 1);
    // One channel's handler waits; the other channel's worker goes on.
    layer
        .send(&free, message(json!({"type": "job", "id": 9})))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, 9);
    drop(stop);
    drop(done);
}

#[tokio::test]
async fn routers_on_one_channel_share_its_messages() {
    let layer = InMemoryChannelLayer::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = ChannelNameRouter::new()
        .route("jobs", Recorder(tx.clone()))
        .unwrap();
    let b = ChannelNameRouter::new().route("jobs", Recorder(tx)).unwrap();
    let (stats_a, stats_b) = (a.stats(), b.stats());
    let (stop_a, done_a) = start(a, &layer);
    let (stop_b, done_b) = start(b, &layer);
    let jobs = ChannelName::new("jobs").unwrap();
    for id in 0..60 {
        layer
            .send(&jobs, message(json!({"type": "job", "id": id})))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen.push(next(&mut rx).await);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..60).collect::<Vec<_>>(), "each message once");
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    tokio::time::timeout(WAIT, done_a).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, done_b).await.unwrap().unwrap();
    assert_eq!(stats_a.handled() + stats_b.handled(), 60);
}

#[test]
fn routes_take_named_channels_once() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let router = ChannelNameRouter::new()
        .route("jobs", Recorder(tx.clone()))
        .unwrap();
    assert!(matches!(
        router.route("jobs", Recorder(tx.clone())),
        Err(WorkerRouteError::Duplicate(c)) if c.as_str() == "jobs"
    ));
    assert!(matches!(
        ChannelNameRouter::new().route("specific.x!y", Recorder(tx.clone())),
        Err(WorkerRouteError::ProcessSpecific(_))
    ));
    assert!(matches!(
        ChannelNameRouter::new().route("no spaces", Recorder(tx)),
        Err(WorkerRouteError::Name(NameError::InvalidChar { found: ' ', .. }))
    ));
}
