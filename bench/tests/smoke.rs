//! Each scenario of the load generator at tiny sizes against the chat
//! application served in-process over real TCP: the harness cannot rot.
//! Figures are printed, never asserted; delivery counts are.

use std::net::SocketAddr;
use std::time::Duration;

use estuary_bench::client::Target;
use estuary_bench::fanout::{self, FanoutOptions, Load};
use estuary_bench::{connect, idle};
use estuary_cli::config::Config;
use tokio::task::LocalSet;
use tokio_util::sync::CancellationToken;

/// Serves the chat application on a free port until `stop` is cancelled.
async fn serve(stop: CancellationToken) -> SocketAddr {
    // A load generator's clients all come from 127.0.0.1: the per-address
    // limits are off, as `bench/run.py` sets them.
    let mut config = Config::default();
    config.websocket.rate_limit = 0.0;
    config.websocket.rate_limit_per_ip = 0.0;
    config.server.handshake_rate = 0.0;
    config.server.max_connections_per_ip = 0;
    let service = estuary_cli::serve::service(&config).expect("the application");
    let server = estuary::Server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_config(config.server_config().unwrap());
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move { server.serve(service, stop.cancelled_owned()).await.unwrap() });
    addr
}

fn target(addr: SocketAddr) -> Target {
    Target::new(&format!("ws://{addr}"), "/ws/chat/{room}/", 1).unwrap()
}

fn tiny(pid: u32) -> FanoutOptions {
    FanoutOptions {
        rooms: 2,
        clients: 5,
        senders: 2,
        load: Load::Closed { window: 4 },
        size: 100,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(300),
        drain: Duration::from_secs(10),
        slow_share: 0.0,
        slow_recv_buffer: 4096,
        connect_concurrency: 8,
        pids: vec![pid],
        room_prefix: "smoke".into(),
    }
}

async fn with_server<F, Fut>(f: F)
where
    F: FnOnce(Target) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = CancellationToken::new();
    let addr = serve(stop.clone()).await;
    LocalSet::new().run_until(f(target(addr))).await;
    stop.cancel();
}

#[tokio::test]
async fn fanout_counts_every_delivery() {
    with_server(|t| async move {
        let report = fanout::run(&t, &tiny(std::process::id())).await.unwrap();
        println!("{}", serde_json::to_string(&report).unwrap());
        assert!(report.received > 0);
        assert_eq!(
            report.expected,
            report.sent * 5,
            "every member owes every message"
        );
        assert_eq!((report.lost, report.duplicated, report.foreign), (0, 0, 0));
        assert!(report.server_us_per_delivery.is_some());
    })
    .await;
}

#[tokio::test]
async fn open_loop_with_slow_members() {
    with_server(|t| async move {
        let opts = FanoutOptions {
            rooms: 1,
            clients: 6,
            senders: 1,
            load: Load::Open { rate: 50.0 },
            size: 1000,
            slow_share: 0.4,
            ..tiny(std::process::id())
        };
        let report = fanout::run(&t, &opts).await.unwrap();
        println!("{}", serde_json::to_string(&report).unwrap());
        assert_eq!(report.slow_clients, 2);
        assert_eq!(report.expected, report.sent * 4, "slow members are owed nothing");
        assert_eq!(report.lost, 0);
    })
    .await;
}

#[tokio::test]
async fn connect_counts_handshakes() {
    with_server(|t| async move {
        let opts = connect::ConnectOptions {
            concurrency: 2,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            pids: vec![std::process::id()],
            room: "smoke".into(),
        };
        let report = connect::run(&t, &opts).await.unwrap();
        println!("{}", serde_json::to_string(&report).unwrap());
        assert!(report.handshakes > 0);
        assert_eq!(report.errors, 0);
    })
    .await;
}

#[tokio::test]
async fn idle_holds_every_connection() {
    with_server(|t| async move {
        let opts = idle::IdleOptions {
            connections: 20,
            rooms: 3,
            connect_concurrency: 4,
            pids: vec![std::process::id()],
            room_prefix: "smoke-idle".into(),
        };
        let report = idle::run(&t, &opts).await.unwrap();
        println!("{}", serde_json::to_string(&report).unwrap());
        assert_eq!((report.connections, report.closed_by_server), (20, 0));
        assert!(report.kib_per_connection.is_some());
    })
    .await;
}

#[tokio::test]
async fn a_closed_port_is_an_error_not_a_hang() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = target(addr);
    let err = LocalSet::new()
        .run_until(fanout::run(&t, &tiny(std::process::id())))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("connecting"), "{err:#}");
}

#[tokio::test]
async fn a_server_that_never_answers_the_handshake_is_an_error_not_a_hang() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut t = target(listener.local_addr().unwrap());
    t.connect_timeout = Duration::from_millis(200);
    // Accept and hold every connection without a word.
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let err = LocalSet::new()
        .run_until(fanout::run(&t, &tiny(std::process::id())))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("took over"), "{err:#}");
    held.abort();
}

#[tokio::test]
async fn options_out_of_range_are_refused() {
    let t = target("127.0.0.1:9".parse().unwrap());
    for opts in [
        FanoutOptions {
            slow_share: 1.5,
            ..tiny(0)
        },
        FanoutOptions {
            senders: 0,
            ..tiny(0)
        },
        FanoutOptions {
            load: Load::Open { rate: 0.0 },
            ..tiny(0)
        },
        FanoutOptions {
            size: 1001,
            ..tiny(0)
        },
    ] {
        assert!(LocalSet::new().run_until(fanout::run(&t, &opts)).await.is_err());
    }
}
