//! The in-memory layer keeps the channel-layer contract.

use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelLayerHandle, GroupName, InMemoryChannelLayer, LayerConfig, Message};
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
    let layer = InMemoryChannelLayer::new(LayerConfig::default());
    let g = GroupName::new("daily").unwrap();
    let ch = layer.new_channel().await.unwrap();
    layer.group_add(&g, &ch).await.unwrap();
    tokio::time::advance(Duration::from_secs(86_399)).await;
    assert_eq!(layer.group_size(&g), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(layer.group_size(&g), 0);
    let m = Message::from_json(&serde_json::json!({"type": "x"})).unwrap();
    assert_eq!(layer.group_send(&g, m).await.unwrap().delivered, 0);
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
