//! The live example over TCP: a post reaches an open event stream, and a
//! stream the server ends is followed, on reconnection with Last-Event-ID,
//! by a notice of what may have been missed.

mod common;

use estuary_test_support::http;

use common::{Example, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An open `GET` of an event stream, read as raw text.
struct Stream {
    tcp: TcpStream,
    seen: String,
}

impl Stream {
    async fn open(addr: &str, path: &str, last_event_id: Option<&str>) -> Self {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let resume = last_event_id.map_or(String::new(), |id| format!("last-event-id: {id}\r\n"));
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n{resume}\r\n");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut stream = Self {
            tcp,
            seen: String::new(),
        };
        let head = stream.until("retry: 500\n\n").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        stream
    }

    /// Reads until `text` has arrived (after what earlier calls consumed);
    /// returns what arrived up to and including it.
    async fn until(&mut self, text: &str) -> String {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(at) = self.seen.find(text) {
                    let upto: String = self.seen.drain(..at + text.len()).collect();
                    return upto;
                }
                let n = self.tcp.read(&mut buf).await.expect("read");
                assert!(n > 0, "stream closed before {text:?}; got {:?}", self.seen);
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{text:?} did not arrive; got {:?}", self.seen))
    }
}

#[tokio::test]
async fn posts_stream_to_the_page_and_a_reconnect_gets_a_notice() {
    let example = Example::start(env!("CARGO_BIN_EXE_live")).await;
    let addr = example.addr.as_str();
    let mut stream = Stream::open(addr, "/events/news", None).await;

    let response = http::post_json(addr, "/publish/news", r#"{"text": "hello"}"#).await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    assert!(response.contains(r#""delivered":1"#), "{response}");
    let record = stream.until("\n\n").await;
    assert!(record.contains("event: live.post\n"), "{record}");
    assert!(record.contains(r#""text":"hello""#), "{record}");
    let id = record
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an id")
        .to_owned();

    // The server ends every stream: the chunked body ends.
    let response = http::post_json(addr, "/reconnect", "{}").await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    stream.until("0\r\n\r\n").await;

    let mut again = Stream::open(addr, "/events/news", Some(&id)).await;
    let notice = again.until("\n\n").await;
    assert!(notice.contains("event: estuary.missed\n"), "{notice}");
    assert!(notice.contains(&format!(r#""last_event_id":"{id}""#)), "{notice}");
    assert!(notice.contains(r#""known_missed":0"#), "{notice}");

    let response = http::post_json(addr, "/publish/sports", r#"{"text": "elsewhere"}"#).await;
    assert!(response.contains(r#""delivered":0"#), "{response}");
    let response = http::post_json(addr, "/publish/bad%20topic", r#"{"text": "x"}"#).await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}
