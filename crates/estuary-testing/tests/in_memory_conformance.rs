//! The in-memory layer keeps the channel-layer contract.

use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerConfig, ChannelLayerHandle, GroupName, InMemoryChannelLayer, Message,
};
use estuary_testing::conformance::{self, PausedClock};

#[tokio::test(start_paused = true)]
async fn in_memory_layer_passes_the_conformance_suite() {
    conformance::run_all(
        |config| async move { InMemoryChannelLayer::new(config) },
        PausedClock,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn handle_passes_the_conformance_suite() {
    conformance::run_all(
        |config| async move { ChannelLayerHandle::new(InMemoryChannelLayer::new(config)) },
        PausedClock,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn default_group_expiry_is_a_day() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default());
    let g = GroupName::new("daily").unwrap();
    let ch = estuary_core::ChannelName::new("worker.daily").unwrap();
    let live = layer.new_channel().await.unwrap();
    layer.group_add(&g, &live).await.unwrap();
    layer.group_add(&g, &ch).await.unwrap();
    tokio::time::advance(Duration::from_secs(86_399)).await;
    assert_eq!(layer.group_size(&g), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        layer.group_size(&g),
        1,
        "the plain channel lapsed; the open connection stays"
    );
    let m = Message::from_json(&serde_json::json!({"type": "x"})).unwrap();
    assert_eq!(layer.group_send(&g, m).await.unwrap().delivered, 1);
    layer.close_channel(&live).await;
    assert_eq!(layer.group_size(&g), 0);
}

#[tokio::test]
async fn group_send_shares_one_encoding() {
    let layer = InMemoryChannelLayer::default();
    let g = GroupName::new("shared").unwrap();
    let a = layer.new_channel().await.unwrap();
    let b = layer.new_channel().await.unwrap();
    layer.group_add(&g, &a).await.unwrap();
    layer.group_add(&g, &b).await.unwrap();
    let m = Message::from_json(&serde_json::json!({"type": "x", "big": "y".repeat(1000)})).unwrap();
    let ptr = m.as_bytes().as_ptr();
    layer.group_send(&g, m).await.unwrap();
    let ra = layer.receive(&a).await.unwrap();
    let rb = layer.receive(&b).await.unwrap();
    assert_eq!(ra.as_bytes().as_ptr(), ptr, "no copy per recipient");
    assert_eq!(rb.as_bytes().as_ptr(), ptr, "no copy per recipient");
}

#[tokio::test]
async fn in_memory_reports_every_skip_and_full_process_channel() {
    use estuary_core::{ChannelName, SendError};
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(1));
    let g = GroupName::new("g").unwrap();
    let slow = layer.new_channel().await.unwrap();
    let fast = layer.new_channel().await.unwrap();
    layer.group_add(&g, &slow).await.unwrap();
    layer.group_add(&g, &fast).await.unwrap();
    let m = || Message::from_json(&serde_json::json!({"type": "x"})).unwrap();
    assert_eq!(layer.group_send(&g, m()).await.unwrap().delivered, 2);
    layer.receive(&fast).await.unwrap();
    let report = layer.group_send(&g, m()).await.unwrap();
    assert_eq!((report.delivered, report.dropped), (1, 1));
    assert_eq!(layer.dropped(), 1);
    assert!(matches!(
        layer.send(&slow, m()).await,
        Err(SendError::Full { .. })
    ));
    let _ = ChannelName::new("unused");
}

#[tokio::test(start_paused = true)]
async fn in_memory_presence_passes_the_presence_suite() {
    conformance::presence::run_all(
        |config| async move { InMemoryChannelLayer::new(config) },
        PausedClock,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn handle_passes_the_presence_suite() {
    conformance::presence::run_all(
        |config| async move { ChannelLayerHandle::new(InMemoryChannelLayer::new(config)) },
        PausedClock,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn in_memory_history_passes_the_history_suite() {
    conformance::history::run_all(
        |config| async move { InMemoryChannelLayer::new(config) },
        PausedClock,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn handle_passes_the_history_suite() {
    conformance::history::run_all(
        |config| async move { ChannelLayerHandle::new(InMemoryChannelLayer::new(config)) },
        PausedClock,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn in_memory_flow_control_keeps_a_live_member_that_is_behind() {
    conformance::a_live_member_behind_loses_nothing(InMemoryChannelLayer::new(
        ChannelLayerConfig::default().with_capacity(4),
    ))
    .await;
}
