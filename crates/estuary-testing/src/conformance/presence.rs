//! The presence checks: for layers whose
//! [`ChannelLayer::presence`] is `Some`.
//!
//! They check the model written in `estuary_core::layer::presence`: one
//! presence per key however many connections, join and leave announced
//! once, leave when a channel closes, metadata changes announced, a crowd
//! announced in a handful of diffs, a reconnect inside one interval not
//! announced, and views built from a list and the diffs converging to the
//! layer's list. [`a_dead_process_loses_its_presence`] needs two processes
//! sharing one backend.
//!
//! ```
//! use estuary_core::InMemoryChannelLayer;
//! use estuary_testing::conformance::{self, PausedClock};
//!
//! #[tokio::test(start_paused = true)]
//! async fn in_memory_presence_conforms() {
//!     conformance::presence::run_all(|config| async move { InMemoryChannelLayer::new(config) }, PausedClock)
//!         .await;
//! }
//! # fn main() {}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerConfig, ChannelName, PRESENCE_DIFF, Presence, PresenceConfig, PresenceDiff,
    PresenceKey, PresenceMeta, PresenceView, ReceiverState,
};

use super::{Clock, WAIT, group};

fn presence<L: ChannelLayer>(layer: &L) -> &dyn Presence {
    layer
        .presence()
        .expect("the layer tracks presence (ChannelLayer::presence is Some)")
}

fn key(name: &str) -> PresenceKey {
    PresenceKey::new(name).expect("valid key")
}

fn meta(name: &str) -> PresenceMeta {
    PresenceMeta::new(serde_json::json!({ "name": name })).expect("small meta")
}

/// The next `presence.diff` on `channel` (other messages are skipped).
pub async fn next_diff<L: ChannelLayer>(layer: &L, channel: &ChannelName) -> PresenceDiff {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = match tokio::time::timeout_at(deadline, layer.receive(channel)).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("receive on {channel} failed: {e}"),
            Err(_) => panic!("no presence.diff on {channel} within {WAIT:?}"),
        };
        if message.message_type() == PRESENCE_DIFF {
            return message
                .decode()
                .expect("a presence.diff decodes into PresenceDiff");
        }
    }
}

/// Diffs on `channel` until one mentions `until` (joined or left), all of
/// them returned.
async fn diffs_until<L: ChannelLayer>(
    layer: &L,
    channel: &ChannelName,
    until: &PresenceKey,
) -> Vec<PresenceDiff> {
    let mut seen = Vec::new();
    loop {
        let diff = next_diff(layer, channel).await;
        let done = diff.joins.contains_key(until) || diff.leaves.contains_key(until);
        seen.push(diff);
        if done {
            return seen;
        }
    }
}

/// Joins and leaves of `key` across `diffs`.
fn mentions(diffs: &[PresenceDiff], key: &PresenceKey) -> (usize, usize) {
    diffs.iter().fold((0, 0), |(j, l), d| {
        (
            j + usize::from(d.joins.contains_key(key)),
            l + usize::from(d.leaves.contains_key(key)),
        )
    })
}

/// The interval of the suite's layers (but for the reconnect check's).
const INTERVAL: Duration = Duration::from_millis(50);

/// A config whose diffs go out every [`INTERVAL`].
fn config() -> ChannelLayerConfig {
    ChannelLayerConfig::default().with_presence(PresenceConfig::default().with_interval(INTERVAL))
}

/// Runs every check that needs one process.
pub async fn run_all<L, F, Fut, C>(make: F, clock: C)
where
    L: ChannelLayer,
    F: Fn(ChannelLayerConfig) -> Fut,
    Fut: Future<Output = L>,
    C: Clock,
{
    two_tabs_are_one_presence(make(config()).await).await;
    closing_a_channel_leaves(make(config()).await).await;
    a_metadata_change_is_announced(make(config()).await).await;
    a_crowd_is_announced_in_a_handful_of_diffs(make(config()).await, 3_000).await;
    a_reconnect_within_the_interval_is_not_announced(
        make(
            ChannelLayerConfig::default()
                .with_presence(PresenceConfig::default().with_interval(Duration::from_secs(2))),
        )
        .await,
        &clock,
    )
    .await;
    views_converge_to_the_list(make(config()).await).await;
}

/// A user in two tabs is one presence with two connections: joined when
/// the first arrives and left when the last goes, each announced once.
pub async fn two_tabs_are_one_presence<L: ChannelLayer>(layer: L) {
    let p = presence(&layer);
    let room = group("conformance_presence_tabs");
    let watcher = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &watcher).await.expect("group_add");
    let (tab1, tab2) = (
        layer.new_channel().await.expect("new_channel"),
        layer.new_channel().await.expect("new_channel"),
    );
    let ann = key("user.1");
    let first = p
        .presence_join(&room, &tab1, &ann, &meta("ann"))
        .await
        .expect("join");
    assert!(first.first && first.connections == 1, "{first:?}");
    let second = p
        .presence_join(&room, &tab2, &ann, &meta("ann"))
        .await
        .expect("join");
    assert!(!second.first && second.connections == 2, "{second:?}");
    let list = p.presence_list(&room).await.expect("list");
    assert_eq!(list.keys(), 1, "{list:?}");
    assert_eq!(list.entries[0].connections, 2);
    assert_eq!(list.entries[0].meta, meta("ann"));
    let count = p.presence_count(&room).await.expect("count");
    assert_eq!((count.keys, count.connections), (1, 2));

    let mut diffs = diffs_until(&layer, &watcher, &ann).await;
    assert!(
        p.presence_leave(&room, &tab1).await.expect("leave"),
        "tab 1 held a presence"
    );
    assert!(
        !p.presence_leave(&room, &tab1).await.expect("leave"),
        "leaving twice is not an error"
    );
    assert_eq!(p.presence_count(&room).await.expect("count").connections, 1);
    assert!(p.presence_leave(&room, &tab2).await.expect("leave"));
    diffs.extend(diffs_until(&layer, &watcher, &ann).await);
    // Nothing else about the user comes after: a sentinel's join arrives
    // with no further mention of them.
    let sentinel_channel = layer.new_channel().await.expect("new_channel");
    let sentinel = key("sentinel");
    p.presence_join(&room, &sentinel_channel, &sentinel, &PresenceMeta::default())
        .await
        .expect("join");
    diffs.extend(diffs_until(&layer, &watcher, &sentinel).await);
    assert_eq!(
        mentions(&diffs, &ann),
        (1, 1),
        "one join and one leave: {diffs:?}"
    );
    let last_leave = diffs.iter().find_map(|d| d.leaves.get(&ann)).expect("a leave");
    assert_eq!(
        last_leave.meta,
        meta("ann"),
        "a leave carries the metadata it had"
    );
    let list = p.presence_list(&room).await.expect("list");
    assert_eq!(
        list.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["sentinel"]
    );
}

/// Closing a channel (what the session does when its connection ends, on
/// every way out) leaves every presence it held, announced.
pub async fn closing_a_channel_leaves<L: ChannelLayer>(layer: L) {
    let p = presence(&layer);
    let (a, b) = (
        group("conformance_presence_close_a"),
        group("conformance_presence_close_b"),
    );
    let watcher = layer.new_channel().await.expect("new_channel");
    let gone = layer.new_channel().await.expect("new_channel");
    let bob = key("user.2");
    for room in [&a, &b] {
        layer.group_add(room, &watcher).await.expect("group_add");
        p.presence_join(room, &gone, &bob, &meta("bob"))
            .await
            .expect("join");
    }
    for _ in [&a, &b] {
        diffs_until(&layer, &watcher, &bob).await;
    }
    layer.close_channel(&gone).await;
    let mut left = BTreeSet::new();
    while left.len() < 2 {
        let diff = next_diff(&layer, &watcher).await;
        if diff.leaves.contains_key(&bob) {
            left.insert(diff.group.clone());
        }
    }
    assert_eq!(left, BTreeSet::from([a.clone(), b.clone()]));
    for room in [&a, &b] {
        assert_eq!(p.presence_count(room).await.expect("count").keys, 0);
    }
    // A closed channel cannot join.
    assert!(
        p.presence_join(&a, &gone, &bob, &meta("bob")).await.is_err(),
        "a closed channel holds no presence"
    );
}

/// Joining again with other metadata (a name typed after joining) is
/// announced as a join with the new metadata; the count does not change.
pub async fn a_metadata_change_is_announced<L: ChannelLayer>(layer: L) {
    let p = presence(&layer);
    let room = group("conformance_presence_meta");
    let me = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &me).await.expect("group_add");
    let anon = PresenceKey::for_channel(&me);
    p.presence_join(&room, &me, &anon, &meta("")).await.expect("join");
    diffs_until(&layer, &me, &anon).await;
    let joined = p
        .presence_join(&room, &me, &anon, &meta("carol"))
        .await
        .expect("join");
    assert!(!joined.first && joined.connections == 1, "{joined:?}");
    let diff = diffs_until(&layer, &me, &anon).await.pop().expect("a diff");
    assert_eq!(diff.joins.get(&anon).map(|c| &c.meta), Some(&meta("carol")));
    let list = p.presence_list(&room).await.expect("list");
    assert_eq!(list.entries[0].meta, meta("carol"));
    assert_eq!(list.entries[0].connections, 1);
}

/// `crowd` connections joining at once reach a member in a handful of
/// diffs (one per interval, a few more for scheduling), not one event per
/// arrival: a member of a crowd of N gets a few frames, not N.
pub async fn a_crowd_is_announced_in_a_handful_of_diffs<L: ChannelLayer>(layer: L, crowd: usize) {
    let p = presence(&layer);
    let room = group("conformance_presence_crowd");
    let watcher = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &watcher).await.expect("group_add");
    // A session reads the watcher while the crowd arrives (as it would):
    // on a slow machine the joins take long enough for more diffs than
    // the channel holds, so they are read as they come, not afterwards.
    layer.set_receiver(&watcher, ReceiverState::Live);
    let joining = async {
        let started = tokio::time::Instant::now();
        for i in 0..crowd {
            let ch = layer.new_channel().await.expect("new_channel");
            layer.group_add(&room, &ch).await.expect("group_add");
            p.presence_join(&room, &ch, &key(&format!("crowd.{i}")), &PresenceMeta::default())
                .await
                .expect("join");
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        started.elapsed()
    };
    let reading = async {
        let mut joined = BTreeSet::new();
        let mut diffs = 0usize;
        while joined.len() < crowd {
            let diff = next_diff(&layer, &watcher).await;
            diffs += 1;
            assert!(diff.leaves.is_empty(), "nobody left: {diff:?}");
            joined.extend(diff.joins.into_keys());
        }
        diffs
    };
    let (took, diffs) = tokio::join!(joining, reading);
    let bound = (took.as_millis() / INTERVAL.as_millis()) as usize + 3;
    assert!(
        diffs <= bound,
        "{crowd} joins over {took:?} came in {diffs} diffs; at most {bound} expected (one per {INTERVAL:?})"
    );
    assert_eq!(p.presence_count(&room).await.expect("count").keys, crowd);
}

/// A key that leaves and comes back within one interval with the same
/// metadata (a page reconnecting) is not announced. `layer`'s interval is
/// 2 s, so that the check holds on a wall clock too.
pub async fn a_reconnect_within_the_interval_is_not_announced<L: ChannelLayer, C: Clock>(
    layer: L,
    clock: &C,
) {
    let p = presence(&layer);
    let room = group("conformance_presence_reconnect");
    let watcher = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &watcher).await.expect("group_add");
    let dave = key("user.4");
    let old = layer.new_channel().await.expect("new_channel");
    p.presence_join(&room, &old, &dave, &meta("dave"))
        .await
        .expect("join");
    diffs_until(&layer, &watcher, &dave).await;
    // The diff just went: the next one waits for the interval.
    layer.close_channel(&old).await;
    let new = layer.new_channel().await.expect("new_channel");
    p.presence_join(&room, &new, &dave, &meta("dave"))
        .await
        .expect("join");
    let sentinel_channel = layer.new_channel().await.expect("new_channel");
    let sentinel = key("sentinel");
    p.presence_join(&room, &sentinel_channel, &sentinel, &PresenceMeta::default())
        .await
        .expect("join");
    clock.advance(Duration::from_millis(2100)).await;
    let diffs = diffs_until(&layer, &watcher, &sentinel).await;
    assert_eq!(
        mentions(&diffs, &dave),
        (0, 0),
        "a reconnect is not announced: {diffs:?}"
    );
    let list = p.presence_list(&room).await.expect("list");
    assert_eq!(list.keys(), 2, "{list:?}");
}

/// A view built from a list and fed every later diff by the version rule
/// holds what the layer lists, after joins, leaves, metadata changes and
/// closes in any mix.
pub async fn views_converge_to_the_list<L: ChannelLayer>(layer: L) {
    let p = presence(&layer);
    let room = group("conformance_presence_view");
    let watcher = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &watcher).await.expect("group_add");
    let early = layer.new_channel().await.expect("new_channel");
    p.presence_join(&room, &early, &key("early"), &meta("e"))
        .await
        .expect("join");
    diffs_until(&layer, &watcher, &key("early")).await;
    let mut view = PresenceView::from_list(p.presence_list(&room).await.expect("list"));
    let mut channels = Vec::new();
    for i in 0..12u32 {
        let ch = layer.new_channel().await.expect("new_channel");
        p.presence_join(&room, &ch, &key(&format!("k{}", i % 5)), &meta(&format!("m{i}")))
            .await
            .expect("join");
        channels.push(ch);
        if i % 3 == 2 {
            let gone = channels.remove(0);
            layer.close_channel(&gone).await;
        }
        if i % 4 == 3 {
            tokio::task::yield_now().await;
        }
    }
    layer.close_channel(&early).await;
    let done = layer.new_channel().await.expect("new_channel");
    p.presence_join(&room, &done, &key("done"), &PresenceMeta::default())
        .await
        .expect("join");
    loop {
        let diff = next_diff(&layer, &watcher).await;
        view.apply(&diff);
        if diff.joins.contains_key(&key("done")) {
            break;
        }
    }
    let list = p.presence_list(&room).await.expect("list");
    let listed: BTreeMap<_, _> = list
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.meta.clone()))
        .collect();
    let seen: BTreeMap<_, _> = view
        .keys()
        .map(|k| (k.clone(), view.get(k).cloned().unwrap_or_default()))
        .collect();
    assert_eq!(seen, listed, "the view converged to the list");
}

/// A process that dies without closing its channels loses its presences
/// within the bound (`timeout` plus `refresh` plus the interval of
/// `config`, the config both layers were made with), and the other process
/// announces the leave. `alive` and `dying` share one backend; `kill` makes
/// `dying` stop as a crashed process would (no cleanup). Give `config` a
/// timeout of a second or two: the check waits for the bound.
pub async fn a_dead_process_loses_its_presence<L, K, KFut>(
    alive: L,
    dying: L,
    config: &ChannelLayerConfig,
    kill: K,
) where
    L: ChannelLayer,
    K: FnOnce(L) -> KFut,
    KFut: Future<Output = ()>,
{
    let room = group("conformance_presence_dead");
    let watcher = alive.new_channel().await.expect("new_channel");
    alive.group_add(&room, &watcher).await.expect("group_add");
    let eve = key("user.5");
    let here = alive.new_channel().await.expect("new_channel");
    presence(&alive)
        .presence_join(&room, &here, &key("user.6"), &meta("frank"))
        .await
        .expect("join");
    let there = dying.new_channel().await.expect("new_channel");
    presence(&dying)
        .presence_join(&room, &there, &eve, &meta("eve"))
        .await
        .expect("join");
    diffs_until(&alive, &watcher, &eve).await;
    let listed = presence(&alive).presence_list(&room).await.expect("list");
    assert_eq!(
        listed.keys(),
        2,
        "both processes' presences are listed: {listed:?}"
    );
    kill(dying).await;
    let settings = config.presence();
    let bound = settings.timeout() + settings.refresh() + settings.interval();
    // Delivery and a round trip or two on top of the bound.
    let slack = Duration::from_millis(500);
    let left = tokio::time::timeout(bound + slack, async {
        loop {
            let diff = next_diff(&alive, &watcher).await;
            if diff.leaves.contains_key(&eve) {
                return diff;
            }
            assert!(
                !diff.joins.contains_key(&eve),
                "a dead process's user joined again: {diff:?}"
            );
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the dead process's presence was not announced gone within {bound:?}"));
    assert_eq!(left.leaves[&eve].meta, meta("eve"));
    let listed = presence(&alive).presence_list(&room).await.expect("list");
    assert_eq!(
        listed.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["user.6"],
        "only the live process's presence is left"
    );
}
