//! The history checks: for layers whose
//! [`ChannelLayer::history`] is `Some`.
//!
//! They check the model written in `estuary_core::layer::history`: a
//! recorded group's messages carry consecutive positions, a reader recovers
//! every missed message in order, or is told it cannot (the epoch changed,
//! the gap is past the size or the ttl), unrecorded groups are untouched,
//! and presence diffs are not recorded. The suite records groups matching
//! `conformance_hist_*` (size 5, ttl 2 s; see [`config`]).
//!
//! ```
//! use estuary_core::InMemoryChannelLayer;
//! use estuary_testing::conformance::{self, PausedClock};
//!
//! #[tokio::test(start_paused = true)]
//! async fn in_memory_history_conforms() {
//!     conformance::history::run_all(|config| async move { InMemoryChannelLayer::new(config) }, PausedClock)
//!         .await;
//! }
//! # fn main() {}
//! ```

use std::future::Future;
use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerConfig, Epoch, History, HistoryConfig, HistoryError, Message, PRESENCE_DIFF,
    PresenceKey, PresenceMeta, Recovered, Recovery, StreamPosition, Unrecoverable,
};

use super::{Clock, assert_empty, group, msg, n, recv};

/// What the suite records: `conformance_hist_*`, 5 messages, each for 2 s.
pub fn config() -> ChannelLayerConfig {
    ChannelLayerConfig::default()
        .with_history_glob(
            "conformance_hist_*",
            HistoryConfig::new(5, Duration::from_secs(2)),
        )
        .expect("a valid glob")
}

fn history<L: ChannelLayer>(layer: &L) -> &dyn History {
    layer
        .history()
        .expect("the layer keeps history (ChannelLayer::history is Some)")
}

fn recovered(recovery: Recovery) -> Recovered {
    match recovery {
        Recovery::Recovered(r) => r,
        Recovery::Unrecoverable { reason, position } => {
            panic!("expected a recovery, got Unrecoverable({reason}) at {position:?}")
        }
    }
}

fn unrecoverable(recovery: Recovery) -> (Unrecoverable, StreamPosition) {
    match recovery {
        Recovery::Unrecoverable { reason, position } => (reason, position),
        Recovery::Recovered(r) => panic!("expected Unrecoverable, recovered {} messages", r.messages.len()),
    }
}

fn numbers(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(n).collect()
}

/// Runs every check.
pub async fn run_all<L, F, Fut, C>(make: F, clock: C)
where
    L: ChannelLayer,
    F: Fn(ChannelLayerConfig) -> Fut,
    Fut: Future<Output = L>,
    C: Clock,
{
    recorded_sends_carry_consecutive_positions(make(config()).await).await;
    recovery_after_a_gap_is_complete_and_in_order(make(config()).await).await;
    a_gap_past_the_size_cannot_be_recovered(make(config()).await).await;
    another_epoch_cannot_be_recovered(make(config()).await).await;
    messages_expire_after_the_ttl(make(config()).await, &clock).await;
    unrecorded_groups_are_untouched(make(config()).await).await;
    presence_diffs_are_not_recorded(make(config()).await).await;
}

/// Members of a recorded group receive each message with its position:
/// offsets one after another in one epoch, as the report says.
pub async fn recorded_sends_carry_consecutive_positions<L: ChannelLayer>(layer: L) {
    let room = group("conformance_hist_positions");
    let h = history(&layer);
    assert!(h.is_recorded(&room));
    let member = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &member).await.expect("group_add");
    let start = h.history_position(&room).await.expect("position");
    for i in 1..=3 {
        let report = layer.group_send(&room, msg(i)).await.expect("group_send");
        let position = report
            .position
            .expect("a recorded group's report has the position");
        assert_eq!(position, StreamPosition::new(start.offset + i, start.epoch));
        let got = recv(&layer, &member).await;
        assert_eq!(n(&got), i);
        assert_eq!(got.position(), Some(position), "the member's copy carries it");
    }
    let now = h.history_position(&room).await.expect("position");
    assert_eq!(now, StreamPosition::new(start.offset + 3, start.epoch));
    let recent = h.history_recent(&room, 2).await.expect("recent");
    assert_eq!(numbers(&recent.messages), [2, 3], "the last two, oldest first");
    assert_eq!(recent.position, now);
}

/// A reader that saw a position gets every message after it, in order,
/// with their positions; at the top it gets nothing, successfully.
pub async fn recovery_after_a_gap_is_complete_and_in_order<L: ChannelLayer>(layer: L) {
    let room = group("conformance_hist_gap");
    let h = history(&layer);
    let seen = h.history_position(&room).await.expect("position");
    layer.group_send(&room, msg(1)).await.expect("group_send");
    let mark = layer
        .group_send(&room, msg(2))
        .await
        .expect("group_send")
        .position
        .expect("position");
    for i in 3..=5 {
        layer.group_send(&room, msg(i)).await.expect("group_send");
    }
    let all = recovered(h.history_since(&room, seen).await.expect("since"));
    assert_eq!(numbers(&all.messages), [1, 2, 3, 4, 5]);
    let offsets: Vec<u64> = all
        .messages
        .iter()
        .map(|m| m.position().expect("a position").offset)
        .collect();
    assert_eq!(offsets, (seen.offset + 1..=seen.offset + 5).collect::<Vec<_>>());
    assert_eq!(all.position.offset, seen.offset + 5);
    let rest = recovered(h.history_since(&room, mark).await.expect("since"));
    assert_eq!(
        numbers(&rest.messages),
        [3, 4, 5],
        "exactly what followed the mark"
    );
    let none = recovered(h.history_since(&room, all.position).await.expect("since"));
    assert!(none.messages.is_empty());
    assert_eq!(none.position, all.position);
}

/// When the first missed message was dropped for the size (5), the
/// reader is told it cannot recover; a later position still recovers.
pub async fn a_gap_past_the_size_cannot_be_recovered<L: ChannelLayer>(layer: L) {
    let room = group("conformance_hist_size");
    let h = history(&layer);
    let seen = h.history_position(&room).await.expect("position");
    let mut positions = Vec::new();
    for i in 1..=7 {
        let report = layer.group_send(&room, msg(i)).await.expect("group_send");
        positions.push(report.position.expect("position"));
    }
    let (reason, now) = unrecoverable(h.history_since(&room, seen).await.expect("since"));
    assert_eq!(reason, Unrecoverable::TooOld);
    assert_eq!(now, positions[6], "the current position comes with it");
    // Messages 3..=7 are kept: from 2 on, everything is there.
    let kept = recovered(h.history_since(&room, positions[1]).await.expect("since"));
    assert_eq!(numbers(&kept.messages), [3, 4, 5, 6, 7]);
    let (reason, _) = unrecoverable(h.history_since(&room, positions[0]).await.expect("since"));
    assert_eq!(reason, Unrecoverable::TooOld, "message 2 is gone");
}

/// A position from another epoch (the history was lost since: here by
/// `flush`), or ahead of the group's, cannot be recovered; the new epoch
/// starts from offset 1.
pub async fn another_epoch_cannot_be_recovered<L: ChannelLayer>(layer: L) {
    let room = group("conformance_hist_epoch");
    let h = history(&layer);
    let first = layer
        .group_send(&room, msg(1))
        .await
        .expect("group_send")
        .position
        .expect("position");
    let stranger = StreamPosition::new(first.offset, Epoch::random());
    let (reason, _) = unrecoverable(h.history_since(&room, stranger).await.expect("since"));
    assert_eq!(reason, Unrecoverable::EpochChanged);
    let ahead = StreamPosition::new(first.offset + 10, first.epoch);
    let (reason, _) = unrecoverable(h.history_since(&room, ahead).await.expect("since"));
    assert_eq!(
        reason,
        Unrecoverable::EpochChanged,
        "a position ahead of the group"
    );

    layer.flush().await.expect("flush");
    let after = layer
        .group_send(&room, msg(2))
        .await
        .expect("group_send")
        .position
        .expect("position");
    assert_ne!(after.epoch, first.epoch, "the history was lost: a new epoch");
    assert_eq!(after.offset, 1);
    let (reason, now) = unrecoverable(h.history_since(&room, first).await.expect("since"));
    assert_eq!(reason, Unrecoverable::EpochChanged);
    assert_eq!(now, after);
}

/// A message is kept for the ttl (2 s): after it, a reader that missed it
/// cannot recover, but one that saw everything recovers nothing, in the
/// same epoch.
pub async fn messages_expire_after_the_ttl<L: ChannelLayer, C: Clock>(layer: L, clock: &C) {
    let room = group("conformance_hist_ttl");
    let h = history(&layer);
    let seen = h.history_position(&room).await.expect("position");
    layer.group_send(&room, msg(1)).await.expect("group_send");
    let top = layer
        .group_send(&room, msg(2))
        .await
        .expect("group_send")
        .position
        .expect("position");
    assert_eq!(
        numbers(&recovered(h.history_since(&room, seen).await.expect("since")).messages),
        [1, 2]
    );
    clock.advance(Duration::from_millis(3100)).await;
    let (reason, now) = unrecoverable(h.history_since(&room, seen).await.expect("since"));
    assert_eq!(reason, Unrecoverable::TooOld);
    assert_eq!(now, top, "the epoch outlives the messages");
    assert!(
        recovered(h.history_since(&room, top).await.expect("since"))
            .messages
            .is_empty()
    );
    assert!(
        h.history_recent(&room, 10)
            .await
            .expect("recent")
            .messages
            .is_empty()
    );
    let next = layer
        .group_send(&room, msg(3))
        .await
        .expect("group_send")
        .position
        .expect("position");
    assert_eq!(next, StreamPosition::new(top.offset + 1, top.epoch));
}

/// A group no pattern matches is not recorded: no position, nothing added
/// to its messages, and reading its history is an error.
pub async fn unrecorded_groups_are_untouched<L: ChannelLayer>(layer: L) {
    let room = group("conformance_plain");
    let h = history(&layer);
    assert!(!h.is_recorded(&room));
    let member = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &member).await.expect("group_add");
    let sent = msg(1);
    let report = layer.group_send(&room, sent.clone()).await.expect("group_send");
    assert_eq!(report.position, None);
    let got = recv(&layer, &member).await;
    assert_eq!(got.as_bytes(), sent.as_bytes(), "delivered as sent");
    assert!(matches!(
        h.history_position(&room).await,
        Err(HistoryError::NotRecorded(_))
    ));
    assert!(matches!(
        h.history_since(&room, StreamPosition::new(0, Epoch::random()))
            .await,
        Err(HistoryError::NotRecorded(_))
    ));
}

/// Presence diffs sent to a recorded group are delivered, never recorded.
pub async fn presence_diffs_are_not_recorded<L: ChannelLayer>(layer: L) {
    let Some(presence) = layer.presence() else {
        return;
    };
    let room = group("conformance_hist_presence");
    let h = history(&layer);
    let member = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &member).await.expect("group_add");
    let start = h.history_position(&room).await.expect("position");
    presence
        .presence_join(
            &room,
            &member,
            &PresenceKey::for_channel(&member),
            &PresenceMeta::default(),
        )
        .await
        .expect("join");
    let diff = recv(&layer, &member).await;
    assert_eq!(diff.message_type(), PRESENCE_DIFF);
    assert_eq!(diff.position(), None);
    assert_eq!(h.history_position(&room).await.expect("position"), start);
    assert_empty(&layer, &member).await;
}
