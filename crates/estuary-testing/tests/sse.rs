//! Server-sent events and long-polls from groups, through the in-process
//! HttpClient, on a real in-memory channel layer.

use std::time::Duration;

use axum::body::Body;
use estuary_core::{
    ChannelLayer, ChannelLayerConfig, ChannelLayerHandle, GroupName, InMemoryChannelLayer, Message, User,
};
use estuary_server::sse::{LongPoll, MISSED_EVENT, SseRequest, SseRoute, SseSlowClient};
use estuary_server::{Admission, Router};
use estuary_testing::{HttpClient, HttpClientError, SseRecord};
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(5);

fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

fn event(value: Value) -> Message {
    Message::from_json(&value).unwrap()
}

/// `/events/{room}` streams `room.<room>`, plus `room.<also>` when asked.
fn rooms(layer: &InMemoryChannelLayer) -> SseRoute {
    SseRoute::new(ChannelLayerHandle::new(layer.clone()), |req: &SseRequest| {
        let mut names = vec![req.param("room").unwrap_or_default().to_owned()];
        names.extend(req.query("also"));
        names
            .iter()
            .map(|room| GroupName::new(&format!("room.{room}")).map_err(|_| StatusCode::NOT_FOUND))
            .collect::<Result<Vec<_>, _>>()
    })
}

fn client(route: &SseRoute) -> HttpClient {
    let app = Router::new()
        .route("/events/{room}", route.method_router())
        .into_service();
    HttpClient::new(app).timeout(WAIT)
}

/// The position in an id `<route>-<stream>-<position>`.
fn position(record: &SseRecord) -> u64 {
    record
        .id
        .as_deref()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn wait_until_open(route: &SseRoute, open: u64) {
    tokio::time::timeout(WAIT, route.stats().wait_until(|s| s.open == open))
        .await
        .expect("streams opened or closed in time");
}

#[tokio::test]
async fn the_groups_events_arrive_in_order_named_by_type_with_ids() {
    let layer = InMemoryChannelLayer::default();
    let route = rooms(&layer);
    let response = client(&route)
        .get("/events/lobby?also=news")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    let mut events = response.sse();

    for n in 0..3 {
        layer
            .group_send(
                &group("room.lobby"),
                event(json!({"type": "chat.message", "n": n})),
            )
            .await
            .unwrap();
    }
    layer
        .group_send(
            &group("room.news"),
            event(json!({"type": "headline", "text": "two\nlines"})),
        )
        .await
        .unwrap();
    layer
        .group_send(&group("room.kitchen"), event(json!({"type": "not.for.us"})))
        .await
        .unwrap();

    let mut last = 0;
    for n in 0..3 {
        let record = events.next_event().await.unwrap();
        assert_eq!(record.event.as_deref(), Some("chat.message"));
        assert_eq!(
            record.json::<Value>().unwrap(),
            json!({"type": "chat.message", "n": n})
        );
        assert!(position(&record) > last, "{record:?}");
        last = position(&record);
    }
    let headline = events.next_event().await.unwrap();
    assert_eq!(headline.event.as_deref(), Some("headline"));
    assert_eq!(headline.json::<Value>().unwrap()["text"], "two\nlines");
    events.assert_no_event().await;
    assert_eq!(route.stats().snapshot().sent, 4);
}

#[tokio::test]
async fn leaving_the_stream_releases_the_group_membership() {
    let layer = InMemoryChannelLayer::default();
    let route = rooms(&layer);
    let events = client(&route).get("/events/lobby").send().await.unwrap().sse();
    assert_eq!(layer.group_size(&group("room.lobby")), 1);
    assert_eq!(route.stats().snapshot().open, 1);

    drop(events); // the client goes away
    wait_until_open(&route, 0).await;
    assert_eq!(layer.group_size(&group("room.lobby")), 0);
    assert_eq!(route.stats().snapshot().opened, 1);
}

#[tokio::test]
async fn a_refused_request_gets_the_groups_functions_answer_and_joins_nothing() {
    let layer = InMemoryChannelLayer::default();
    let route = rooms(&layer);
    let response = client(&route).get("/events/no%20spaces").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(route.stats().snapshot().opened, 0);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_comments_come_after_the_interval_of_silence() {
    let layer = InMemoryChannelLayer::default();
    let route = rooms(&layer)
        .keep_alive(Some(Duration::from_secs(10)))
        .retry(Duration::from_millis(250));
    let client = client(&route).timeout(Duration::from_secs(60));
    let mut events = client.get("/events/quiet").send().await.unwrap().sse();

    let first = events.next_record().await.unwrap();
    assert_eq!(first.retry, Some(Duration::from_millis(250)));
    let started = tokio::time::Instant::now();
    let ping = events.next_record().await.unwrap();
    assert_eq!(ping.comments, vec!["keep-alive".to_owned()]);
    assert!(!ping.is_event());
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn a_reconnecting_client_is_told_it_may_have_missed_events() {
    let layer = InMemoryChannelLayer::default();
    let route = rooms(&layer);
    let client = client(&route);
    let mut first = client.get("/events/lobby").send().await.unwrap().sse();
    for n in 0..3 {
        layer
            .group_send(&group("room.lobby"), event(json!({"type": "tick", "n": n})))
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(first.next_event().await.unwrap().id.unwrap());
    }
    // The server ends the stream (a deploy, say); the client had only seen
    // the first event when it broke.
    route.close_all();
    assert!(matches!(
        first.next_event().await,
        Err(HttpClientError::StreamEnded)
    ));
    wait_until_open(&route, 0).await;

    for (last_event_id, known_missed) in [
        (ids[0].as_str(), json!(2)),
        (ids[2].as_str(), json!(0)),
        ("not-one-of-ours", Value::Null),
    ] {
        let mut again = client
            .get("/events/lobby")
            .header("last-event-id", last_event_id)
            .send()
            .await
            .unwrap()
            .sse();
        let notice = again.next_event().await.unwrap();
        assert_eq!(notice.event.as_deref(), Some(MISSED_EVENT));
        assert_eq!(
            notice.json::<Value>().unwrap(),
            json!({
                "type": "estuary.missed",
                "reason": "reconnect",
                "last_event_id": last_event_id,
                "known_missed": known_missed,
            })
        );
        assert!(notice.id.is_some());
        // Then the events from now on.
        layer
            .group_send(&group("room.lobby"), event(json!({"type": "tick", "n": 9})))
            .await
            .unwrap();
        assert_eq!(again.next_event().await.unwrap().json::<Value>().unwrap()["n"], 9);
    }
    assert_eq!(route.stats().snapshot().resumed, 3);
}

#[tokio::test]
async fn a_slow_client_is_told_how_many_events_it_lost() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(2));
    for policy in [SseSlowClient::Notify, SseSlowClient::Close] {
        let route = rooms(&layer).slow_client(policy);
        let mut events = client(&route).get("/events/busy").send().await.unwrap().sse();
        let busy = group("room.busy");
        for n in 0..5 {
            layer
                .group_send(&busy, event(json!({"type": "tick", "n": n})))
                .await
                .unwrap();
        }
        let notice = events.next_event().await.unwrap();
        assert_eq!(
            notice.json::<Value>().unwrap(),
            json!({"type": "estuary.missed", "reason": "slow_client", "count": 3})
        );
        assert_eq!(route.stats().snapshot().lost, 3);
        match policy {
            SseSlowClient::Notify => {
                for n in 0..2 {
                    assert_eq!(
                        events.next_event().await.unwrap().json::<Value>().unwrap()["n"],
                        n
                    );
                }
                drop(events);
            }
            SseSlowClient::Close => {
                assert!(matches!(
                    events.next_event().await,
                    Err(HttpClientError::StreamEnded)
                ));
            }
        }
        wait_until_open(&route, 0).await;
        assert_eq!(layer.group_size(&busy), 0);
    }
}

#[tokio::test]
async fn a_custom_renderer_skips_and_fails_visibly() {
    let layer = InMemoryChannelLayer::default();
    let route = rooms(&layer).render(|message| match message.message_type() {
        "skip" => Ok(None),
        "broken" => Err("cannot render this"),
        _ => Ok(Some(estuary_server::sse::SseEvent::message(
            message.to_json()["text"].as_str().unwrap_or_default(),
        ))),
    });
    let mut events = client(&route).get("/events/r").send().await.unwrap().sse();
    for value in [
        json!({"type": "skip"}),
        json!({"type": "broken"}),
        json!({"type": "say", "text": "hello"}),
    ] {
        layer.group_send(&group("room.r"), event(value)).await.unwrap();
    }
    let record = events.next_event().await.unwrap();
    assert_eq!((record.event, record.data.as_deref()), (None, Some("hello")));
    let stats = route.stats().snapshot();
    assert_eq!((stats.skipped, stats.render_failed, stats.sent), (1, 1, 1));
}

#[tokio::test]
async fn an_admissions_groups_are_streamed_too() {
    let layer = InMemoryChannelLayer::default();
    let route = rooms(&layer);
    let admission = Admission::from(User::new("42", "alice")).join(group("user.42"));
    let app = Router::new()
        .route("/events/{room}", route.method_router())
        .into_service()
        .map_request(move |mut request: Request<Body>| {
            request.extensions_mut().insert(admission.clone());
            request
        });
    let mut events = HttpClient::new(app)
        .timeout(WAIT)
        .get("/events/lobby")
        .send()
        .await
        .unwrap()
        .sse();
    layer
        .group_send(&group("user.42"), event(json!({"type": "private"})))
        .await
        .unwrap();
    assert_eq!(
        events.next_event().await.unwrap().event.as_deref(),
        Some("private")
    );
}

#[tokio::test]
async fn a_stream_ends_when_the_server_shuts_down() {
    let layer = InMemoryChannelLayer::default();
    let route = rooms(&layer);
    let runtime = estuary_server::Runtime::default();
    let shutdown = runtime.shutdown.clone();
    let app = Router::new()
        .route("/events/{room}", route.method_router())
        .into_service()
        .map_request(move |mut request: Request<Body>| {
            request.extensions_mut().insert(runtime.clone());
            request
        });
    let mut events = HttpClient::new(app)
        .timeout(WAIT)
        .get("/events/x")
        .send()
        .await
        .unwrap()
        .sse();
    shutdown.cancel();
    assert!(matches!(
        events.next_event().await,
        Err(HttpClientError::StreamEnded)
    ));
    wait_until_open(&route, 0).await;
    assert_eq!(layer.group_size(&group("room.x")), 0);
}

/// `GET /poll/{room}`: the room's next event, or 204.
fn poll_app(layer: &InMemoryChannelLayer, timeout: Duration) -> HttpClient {
    let handle = ChannelLayerHandle::new(layer.clone());
    let poll = axum::routing::get(move |axum::extract::Path(room): axum::extract::Path<String>| {
        let poll = LongPoll::new(handle.clone(), timeout).group(group(&format!("room.{room}")));
        async move { poll.respond().await }
    });
    HttpClient::new(Router::new().route("/poll/{room}", poll).into_service()).timeout(WAIT * 20)
}

/// Waits (yielding, bounded) until `group` has `size` members.
async fn until_members(layer: &InMemoryChannelLayer, group: &GroupName, size: usize) {
    tokio::time::timeout(WAIT, async {
        while layer.group_size(group) != size {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("membership changed in time");
}

#[tokio::test]
async fn a_long_poll_answers_the_next_event_and_leaves_its_group() {
    let layer = InMemoryChannelLayer::default();
    let client = poll_app(&layer, Duration::from_secs(30));
    let waiting = tokio::spawn(async move { client.get("/poll/lobby").send().await });
    let lobby = group("room.lobby");
    until_members(&layer, &lobby, 1).await;
    layer
        .group_send(&lobby, event(json!({"type": "news", "n": 1})))
        .await
        .unwrap();
    let response = waiting.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"type": "news", "n": 1})
    );
    assert_eq!(layer.group_size(&lobby), 0);
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_times_out_with_no_content() {
    let layer = InMemoryChannelLayer::default();
    let client = poll_app(&layer, Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    let response = client.get("/poll/quiet").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(layer.group_size(&group("room.quiet")), 0);
}

#[tokio::test]
async fn a_long_poll_dropped_by_its_client_leaves_its_group() {
    let layer = InMemoryChannelLayer::default();
    let client = poll_app(&layer, Duration::from_secs(30));
    let waiting = tokio::spawn(async move { client.get("/poll/gone").send().await });
    let gone = group("room.gone");
    until_members(&layer, &gone, 1).await;
    waiting.abort();
    until_members(&layer, &gone, 0).await;
}
