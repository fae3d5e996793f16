//! The HttpClient's own contract: timeouts, request errors, and reading an
//! event stream the way a browser does, however its bytes are split.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::get;
use estuary_server::Router;
use estuary_testing::{HttpClient, HttpClientError};
use http::StatusCode;
use http_body::Frame;

/// A body sent in the given pieces, one frame each, then left open.
struct Pieces(VecDeque<&'static str>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.pop_front() {
            Some(piece) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(piece.as_bytes()))))),
            None => Poll::Pending,
        }
    }
}

fn stream_of(pieces: &'static [&'static str]) -> HttpClient {
    let app = Router::new()
        .route(
            "/stream",
            get(move || async move { Body::new(Pieces(pieces.iter().copied().collect())) }),
        )
        .route(
            "/slow",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .into_service();
    HttpClient::new(app)
}

#[tokio::test]
async fn records_are_parsed_across_pieces_and_line_endings() {
    let client = stream_of(&[
        "retry: 2500\r",
        "\n\r\n: keep",
        "-alive\n\nid: 7\nevent: tick\ndata: one\r\nda",
        "ta: two\rdata\n\ndata: {\"n\": 1}\n\n",
    ]);
    let mut events = client.get("/stream").send().await.unwrap().sse();

    let retry = events.next_record().await.unwrap();
    assert_eq!(retry.retry, Some(Duration::from_millis(2500)));
    assert!(!retry.is_event());
    let ping = events.next_record().await.unwrap();
    assert_eq!(ping.comments, vec!["keep-alive".to_owned()]);

    let tick = events.next_event().await.unwrap();
    assert_eq!(tick.id.as_deref(), Some("7"));
    assert_eq!(tick.event.as_deref(), Some("tick"));
    assert_eq!(tick.data.as_deref(), Some("one\ntwo\n"));

    let json = events.next_event().await.unwrap();
    assert_eq!(json.json::<serde_json::Value>().unwrap()["n"], 1);
    events.assert_no_event().await;
}

#[tokio::test(start_paused = true)]
async fn every_wait_is_bounded() {
    let client = stream_of(&[]).timeout(Duration::from_secs(3));
    let mut events = client.get("/stream").send().await.unwrap().sse();
    assert!(matches!(
        events.next_event().await,
        Err(HttpClientError::Timeout(d)) if d == Duration::from_secs(3)
    ));
    assert!(matches!(
        client.get("/slow").send().await,
        Err(HttpClientError::Timeout(_))
    ));
}

#[tokio::test]
async fn a_bad_header_fails_the_send_not_the_test() {
    let client = stream_of(&[]);
    let sent = client.get("/stream").header("bad header", "x").send().await;
    assert!(matches!(sent, Err(HttpClientError::InvalidRequest(_))));
    let missing = client.get("/nowhere").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
