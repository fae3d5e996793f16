//! One relayed connection's side of the protocol: its events in order, one
//! in flight at a time, its pending queue, its state, and what happens on
//! an acknowledgement, a missing one, or a refusal.
//!
//! The link is shared: the connection's handlers submit client messages
//! and settle acknowledgements, the relay's watchdog expires events past
//! their deadline, and the HTTP transport settles with its answers. Each
//! change is made under the link's lock and yields a [`Step`] (what to
//! tell the client, which event to send next), run after the lock is let
//! go. So the next event goes out whoever finished the last one, and a
//! client that sends nothing still hears of a timeout.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use estuary_core::{
    ChannelLayer, ChannelLayerError, ChannelLayerHandle, ChannelName, ClientHandle, CloseCode, Message,
    MessageError, WsMessage,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::http::{Answer, HttpError};
use crate::shared::{Shared, deadline_after};
use crate::stats::Count;
use crate::target::TargetKind;
use crate::watchdog::{Watch, Watched};
use crate::wire::{self, Body, Reply, state_bytes};

/// What a connection hands the application after its `websocket.connect`.
pub(crate) enum Item {
    /// A client message (`websocket.receive`).
    Receive(WsMessage),
    /// Another message sent to the connection (`estuary.event`).
    Forward(Message),
}

impl Item {
    /// Its bytes, for `max_pending_bytes`.
    fn size(&self) -> usize {
        match self {
            Item::Receive(message) => message.len(),
            Item::Forward(message) => message.as_bytes().len(),
        }
    }
}

/// What to tell the client.
enum Report {
    /// The route's busy frame.
    Busy,
    /// Close with 1013 and this reason.
    Close(&'static str),
}

/// What to do once the lock is let go: tell the client, then send an event.
#[derive(Default)]
#[must_use]
pub(crate) struct Step {
    reports: Vec<Report>,
    deliver: Option<(u64, Message)>,
}

impl Step {
    fn merge(mut self, mut other: Step) -> Step {
        self.reports.append(&mut other.reports);
        self.deliver = self.deliver.or(other.deliver);
        self
    }
}

/// Why an event in flight ended without its acknowledgement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    /// No acknowledgement within `reply_timeout`.
    Timeout,
    /// It could not be handed over (layer, HTTP).
    Undelivered,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    deadline: Instant,
}

struct LinkState {
    next_seq: u64,
    in_flight: Option<InFlight>,
    pending: VecDeque<Item>,
    /// The bytes of `pending`.
    pending_bytes: usize,
    /// The connection's state, as msgpack (a map).
    conn_state: Bytes,
    /// The watchdog holds an entry for this link.
    armed: bool,
    /// The connection ended: flushing, nothing is reported to the client.
    closing: bool,
    /// Nothing more is sent but `websocket.disconnect` (the client was
    /// closed for a missing acknowledgement, or one went missing while
    /// flushing).
    gave_up: bool,
    /// `websocket.connect` may have reached the application: it hears of
    /// the end, whatever the handshake's.
    delivered: bool,
    /// `websocket.disconnect` was made (by [`Link::finish`], or on drop).
    ended: bool,
}

/// One relayed connection, shared by its consumer, the watchdog and HTTP
/// tasks.
pub(crate) struct Link {
    pub(crate) shared: Arc<Shared>,
    pub(crate) layer: ChannelLayerHandle,
    pub(crate) channel: ChannelName,
    pub(crate) client: ClientHandle,
    /// The scope without headers, as msgpack: the same in every event.
    scope: Bytes,
    state: Mutex<LinkState>,
    /// Told when the event in flight is settled or expired.
    settled: Notify,
    me: Weak<Link>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // A connection abandoned mid-event (its task dropped) gives its
        // slot back.
        let st = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.in_flight.take().is_some() {
            self.shared.release_slot();
        }
        if !st.delivered || std::mem::replace(&mut st.ended, true) {
            return;
        }
        // Abandoned before `finish` (a handshake dropped by the server's
        // `handshake_timeout` or a client gone mid-connect, a task
        // dropped): the application hears of the end all the same, with
        // 1006 as for a connection lost.
        let disconnect = wire::event(
            &Body::Disconnect(CloseCode::ABNORMAL.as_u16()),
            self.channel.as_str(),
            st.next_seq,
            &self.scope,
            &st.conn_state,
        );
        let Ok(disconnect) = disconnect else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            lost(
                &self.shared,
                &self.channel,
                1,
                "websocket.disconnect not sent (the connection was dropped outside a runtime)",
            );
            return;
        };
        self.shared.stats.add(Count::EventsSent, 1);
        let shared = self.shared.clone();
        let layer = self.layer.clone();
        let channel = self.channel.clone();
        runtime.spawn(async move {
            if let Some(sent) = hand_over_disconnect(&shared, &layer, &channel, disconnect) {
                sent.await;
            }
        });
    }
}

/// Hands `websocket.disconnect` over: sent to the worker channel (the
/// future returned), or POSTed on a task of its own (nothing to await).
/// What cannot be sent is counted and logged.
fn hand_over_disconnect<'a>(
    shared: &'a Arc<Shared>,
    layer: &'a ChannelLayerHandle,
    channel: &'a ChannelName,
    disconnect: Message,
) -> Option<impl Future<Output = ()> + Send + 'a> {
    match shared.target.kind() {
        TargetKind::Channel(worker) => Some(async move {
            if layer.send(worker, disconnect).await.is_err() {
                lost(
                    shared,
                    channel,
                    1,
                    "websocket.disconnect not sent (worker channel full, or the layer down)",
                );
            }
        }),
        TargetKind::Http { .. } => {
            // Not awaited by its connection: bounded here, so that a slow
            // endpoint and many closing connections cannot pile requests up.
            let Ok(permit) = shared.disconnects.clone().try_acquire_owned() else {
                lost(
                    shared,
                    channel,
                    1,
                    "websocket.disconnect not POSTed: max_in_flight disconnects are out already (the endpoint is slow)",
                );
                return None;
            };
            let shared = shared.clone();
            let channel = channel.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let Some(http) = &shared.http else {
                    return;
                };
                if let Err(error) = http.post(&disconnect, shared.reply_timeout).await {
                    tracing::debug!(relay = %shared.name, %error, "websocket.disconnect not answered over HTTP");
                    lost(
                        &shared,
                        &channel,
                        1,
                        "websocket.disconnect not answered over HTTP",
                    );
                }
            });
            None
        }
    }
}

/// Counts and logs events lost at the end of `channel`'s connection.
fn lost(shared: &Shared, channel: &ChannelName, count: u64, what: &'static str) {
    shared.stats.add(Count::LostAtDisconnect, count);
    estuary_core::throttled!(
        warn,
        relay = %shared.name,
        target = %shared.target,
        %channel,
        count,
        "relay events lost at disconnect: {what}"
    );
}

impl Link {
    pub(crate) fn new(
        shared: Arc<Shared>,
        layer: ChannelLayerHandle,
        channel: ChannelName,
        client: ClientHandle,
        scope: Bytes,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Link {
            shared,
            layer,
            channel,
            client,
            scope,
            state: Mutex::new(LinkState {
                next_seq: 1,
                in_flight: None,
                pending: VecDeque::new(),
                pending_bytes: 0,
                conn_state: Bytes::from_static(wire::EMPTY_STATE),
                armed: false,
                closing: false,
                gave_up: false,
                delivered: false,
                ended: false,
            }),
            settled: Notify::new(),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        estuary_core::sync::lock(&self.state)
    }

    /// `websocket.connect` (event 0), with `scope` (the one with headers).
    pub(crate) fn connect_event(&self, scope: &[u8]) -> Result<Message, MessageError> {
        let st = self.lock();
        wire::event(&Body::Connect, self.channel.as_str(), 0, scope, &st.conn_state)
    }

    /// Whether `websocket.connect` may have reached the application (set
    /// before it is handed over, unset when it could not be): then the
    /// application gets `websocket.disconnect` however the connection
    /// ends, even when it is dropped before [`finish`](Self::finish).
    pub(crate) fn set_delivered(&self, delivered: bool) {
        self.lock().delivered = delivered;
    }

    /// Replaces the connection's state (an acknowledgement's map).
    pub(crate) fn set_state(&self, state: Bytes) {
        let mut st = self.lock();
        self.keep_state(&mut st, state);
    }

    /// Keeps `state`, unless it is larger than `max_state_bytes`: then the
    /// previous one stays, and the refusal is counted and logged.
    fn keep_state(&self, st: &mut LinkState, state: Bytes) {
        if state.len() > self.shared.max_state_bytes {
            self.shared.stats.add(Count::StatesRefused, 1);
            estuary_core::throttled!(
                warn,
                relay = %self.shared.name,
                channel = %self.channel,
                bytes = state.len(),
                max = self.shared.max_state_bytes,
                "connection state larger than max_state_bytes refused; the previous state is kept (counted in states_refused)"
            );
            return;
        }
        st.conn_state = state;
    }

    /// Marks `seq` in flight (its slot taken) and has the watchdog watch it.
    fn mark_in_flight(&self, st: &mut LinkState, seq: u64) {
        let deadline = deadline_after(self.shared.reply_timeout);
        st.in_flight = Some(InFlight { seq, deadline });
        if !st.armed {
            st.armed = true;
            self.shared.watch(Watch {
                deadline,
                link: self.me.clone() as Weak<dyn Watched>,
            });
        }
    }

    /// `websocket.connect` as a notification (connect mode `accept`): event
    /// 0 in flight, its slot taken by the caller.
    pub(crate) fn begin_connect(&self) {
        let mut st = self.lock();
        self.mark_in_flight(&mut st, 0);
    }

    /// POSTs `websocket.connect` as event 0 (connect mode `accept`).
    pub(crate) fn post_connect(self: &Arc<Self>, event: Message) {
        tokio::spawn(self.clone().post(0, event));
    }

    /// Undoes [`begin_connect`](Self::begin_connect): the event was not
    /// handed over.
    pub(crate) fn abandon_connect(&self) {
        let mut st = self.lock();
        if st.in_flight.take().is_some() {
            self.shared.release_slot();
        }
    }

    /// Keeps a message that came while connecting, for after it: `false`
    /// when `max_pending` (or `max_pending_bytes`) are kept already.
    pub(crate) fn stash(&self, item: Item) -> bool {
        let mut st = self.lock();
        if !self.has_room(&st, &item) {
            return false;
        }
        Self::push(&mut st, item);
        true
    }

    /// True when `item` may wait: under `max_pending` and
    /// `max_pending_bytes` (one item always fits when none waits).
    fn has_room(&self, st: &LinkState, item: &Item) -> bool {
        st.pending.len() < self.shared.max_pending
            && (st.pending.is_empty()
                || st.pending_bytes.saturating_add(item.size()) <= self.shared.max_pending_bytes)
    }

    fn push(st: &mut LinkState, item: Item) {
        st.pending_bytes = st.pending_bytes.saturating_add(item.size());
        st.pending.push_back(item);
    }

    /// Sends what is pending, if nothing is in flight.
    pub(crate) fn kick(&self) -> Step {
        let mut st = self.lock();
        self.next_locked(&mut st)
    }

    /// A client message or another message for the connection: sent now
    /// if nothing is in flight, else kept (up to `max_pending`), else
    /// refused.
    pub(crate) fn submit(&self, item: Item) -> Step {
        let mut st = self.lock();
        if st.gave_up || st.closing {
            // The connection is closing already (with 1013, which said it).
            self.shared.stats.add(Count::RefusedBusy, 1);
            return Step::default();
        }
        if st.in_flight.is_some() && !self.has_room(&st, &item) {
            self.shared.stats.add(Count::RefusedBusy, 1);
            let mut step = Step::default();
            self.refuse(
                &mut st,
                item,
                "too many messages (or bytes) waiting for the application",
                &mut step,
            );
            return step;
        }
        Self::push(&mut st, item);
        self.next_locked(&mut st)
    }

    /// Tells the client `item` was refused (a client message), or logs it
    /// (another message).
    fn refuse(&self, st: &mut LinkState, item: Item, reason: &'static str, step: &mut Step) {
        match item {
            Item::Receive(_) => match self.shared.busy_frame {
                Some(_) => step.reports.push(Report::Busy),
                None => {
                    st.gave_up = true;
                    step.reports.push(Report::Close(reason));
                }
            },
            Item::Forward(message) => {
                estuary_core::throttled!(
                    warn,
                    relay = %self.shared.name,
                    channel = %self.channel,
                    r#type = message.message_type(),
                    "message for a relayed connection not handed to the application: {reason} (counted in refused_busy)"
                );
            }
        }
    }

    /// Takes the next pending item, if nothing is in flight: its event goes
    /// out (a slot taken), or it is refused when `max_in_flight` are out.
    fn next_locked(&self, st: &mut LinkState) -> Step {
        let mut step = Step::default();
        while st.in_flight.is_none() && !st.gave_up {
            let Some(item) = st.pending.pop_front() else {
                break;
            };
            st.pending_bytes = st.pending_bytes.saturating_sub(item.size());
            if !self.shared.take_slot() {
                self.shared.stats.add(Count::RefusedBusy, 1);
                self.refuse(st, item, "too many events waiting for the application", &mut step);
                continue;
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            let body = match &item {
                Item::Receive(message) => Body::Receive(message),
                Item::Forward(message) => Body::Event(message),
            };
            match wire::event(&body, self.channel.as_str(), seq, &self.scope, &st.conn_state) {
                Ok(message) => {
                    self.mark_in_flight(st, seq);
                    step.deliver = Some((seq, message));
                }
                Err(error) => {
                    self.shared.release_slot();
                    estuary_core::throttled!(error, relay = %self.shared.name, %error, "cannot encode a relay event (a bug); dropped");
                }
            }
        }
        step
    }

    /// The application acknowledged `seq` (with a new state, maybe): the
    /// next event may go. `None` when `seq` is not the event in flight (an
    /// acknowledgement after its timeout).
    pub(crate) fn settle(&self, seq: u64, state: Option<Bytes>) -> Option<Step> {
        let mut st = self.lock();
        if st.in_flight.is_none_or(|f| f.seq != seq) {
            self.shared.stats.add(Count::Late, 1);
            tracing::debug!(relay = %self.shared.name, channel = %self.channel, seq, "acknowledgement for no event in flight (given up already?); ignored");
            return None;
        }
        st.in_flight = None;
        self.shared.release_slot();
        self.shared.stats.add(Count::Acked, 1);
        if let Some(state) = state {
            self.keep_state(&mut st, state);
        }
        self.settled.notify_one();
        Some(self.next_locked(&mut st))
    }

    /// Event `seq` ended without its acknowledgement: the client gets the
    /// busy frame and the next event goes, or it is closed with 1013.
    /// `None` when `seq` is no longer in flight.
    pub(crate) fn expire(&self, seq: u64, why: Why) -> Option<Step> {
        let mut st = self.lock();
        if st.in_flight.is_none_or(|f| f.seq != seq) {
            return None;
        }
        st.in_flight = None;
        self.shared.release_slot();
        self.shared.stats.add(
            match why {
                Why::Timeout => Count::TimedOut,
                Why::Undelivered => Count::Undelivered,
            },
            1,
        );
        self.settled.notify_one();
        let what = match why {
            Why::Timeout => "no acknowledgement within reply_timeout (is a worker running on the channel?)",
            Why::Undelivered => "the event could not be handed to the application",
        };
        estuary_core::throttled!(
            warn,
            relay = %self.shared.name,
            target = %self.shared.target,
            channel = %self.channel,
            seq,
            closing = st.closing,
            "relayed event given up: {what}"
        );
        if st.closing {
            st.gave_up = true;
            return Some(Step::default());
        }
        let mut step = Step::default();
        match self.shared.busy_frame {
            Some(_) => step.reports.push(Report::Busy),
            None => {
                st.gave_up = true;
                step.reports
                    .push(Report::Close("the application did not answer in time"));
            }
        }
        Some(step.merge(self.next_locked(&mut st)))
    }

    /// Runs a step: tells the client, then hands the next event over (and
    /// when that fails, runs what its expiry yields).
    pub(crate) async fn drive(self: &Arc<Self>, mut step: Step) {
        loop {
            for report in std::mem::take(&mut step.reports) {
                self.report(report).await;
            }
            let Some((seq, message)) = step.deliver.take() else {
                return;
            };
            self.shared.stats.add(Count::EventsSent, 1);
            if self.hand_over(seq, message).await {
                return;
            }
            match self.expire(seq, Why::Undelivered) {
                Some(next) => step = next,
                None => return,
            }
        }
    }

    async fn report(&self, report: Report) {
        match report {
            Report::Busy => {
                if let Some(frame) = &self.shared.busy_frame {
                    let _ = self.client.send(frame.clone()).await;
                }
            }
            Report::Close(reason) => {
                let _ = self.client.close(CloseCode::TRY_AGAIN_LATER, reason).await;
            }
        }
    }

    /// Hands event `seq` to the application: sent to the worker channel, or
    /// POSTed (on a task of its own, which settles it). `false` when it
    /// could not be.
    async fn hand_over(self: &Arc<Self>, seq: u64, message: Message) -> bool {
        match self.shared.target.kind() {
            TargetKind::Channel(worker) => match self.layer.send(worker, message).await {
                Ok(()) => true,
                Err(error) => {
                    estuary_core::throttled!(
                        warn,
                        relay = %self.shared.name,
                        %worker,
                        %error,
                        "cannot send a relay event to the worker channel (full: run more workers or raise its capacity; or the channel layer is down: check that it is reachable)"
                    );
                    false
                }
            },
            TargetKind::Http { .. } => {
                tokio::spawn(self.clone().post(seq, message));
                true
            }
        }
    }

    /// POSTs event `seq` and applies the answer: the acknowledgement (when
    /// `seq` is still in flight), then its messages. Named and boxed: it is spawned from
    /// [`drive`](Self::drive), which it runs itself.
    fn post(
        self: Arc<Self>,
        seq: u64,
        message: Message,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(async move {
            let Some(http) = &self.shared.http else {
                return;
            };
            let answer = http.post(&message, self.shared.reply_timeout).await;
            if let Some(step) = self.answered(seq, answer).await {
                self.drive(step).await;
            }
        })
    }

    /// Applies the HTTP answer to event `seq`: settled first, so that an
    /// answer that comes after its event was given up is not applied (its
    /// client heard of the timeout, and the next event may have been
    /// answered since); then its messages, before the next event goes out
    /// (the step returned).
    async fn answered(&self, seq: u64, answer: Result<Answer, HttpError>) -> Option<Step> {
        match answer {
            Ok(answer) => {
                let step = self.settle(seq, answer.state)?;
                self.apply(answer.messages).await;
                Some(step)
            }
            Err(error) => {
                estuary_core::throttled!(
                    warn,
                    relay = %self.shared.name,
                    target = %self.shared.target,
                    channel = %self.channel,
                    seq,
                    %error,
                    "relay event not answered over HTTP (check that the application at the relay's target is up and answers in time; the error names why)"
                );
                self.expire(seq, Why::Undelivered)
            }
        }
    }

    /// The messages of an HTTP answer, in order, to the client.
    pub(crate) async fn apply(&self, messages: Vec<Reply>) {
        for reply in messages {
            match reply {
                Reply::Send { .. } => {
                    if let Some(frame) = reply.frame() {
                        let _ = self.client.send(frame).await;
                    }
                }
                Reply::Close { code, reason } => {
                    let code = Reply::close_code(code.as_ref());
                    if code == 1011 {
                        self.shared.stats.add(Count::WorkerErrors, 1);
                    }
                    let _ = self
                        .client
                        .close(CloseCode::from(code), reason.as_deref().unwrap_or(""))
                        .await;
                }
                Reply::Accept { .. } | Reply::Ack { .. } => {}
            }
        }
    }

    /// The connection ended: its pending events are handed over, one at a
    /// time, all within `reply_timeout` from now (their acknowledgements
    /// read here from the connection's channel, which its session no
    /// longer reads), then `websocket.disconnect` is sent and not waited
    /// for. What is not
    /// delivered is counted and logged.
    pub(crate) async fn finish(self: &Arc<Self>, code: u16) {
        self.lock().closing = true;
        let reads_channel = matches!(self.shared.target.kind(), TargetKind::Channel(_));
        // One deadline for the whole flush: a slow worker answering each
        // event just in time must not keep a closed connection's session
        // alive for every pending event's reply_timeout in turn.
        let overall = deadline_after(self.shared.reply_timeout);
        loop {
            let Some(flight) = self.lock().in_flight else {
                break;
            };
            let step = tokio::select! {
                () = self.settled.notified() => None,
                read = self.read_reply(), if reads_channel => match read {
                    Ok(Some(Reply::Ack { seq, state })) => self.settle(seq, state_bytes(state)),
                    // Frames for a client that is gone; other messages.
                    Ok(_) => None,
                    Err(()) => self.expire(flight.seq, Why::Undelivered),
                },
                () = tokio::time::sleep_until(flight.deadline.min(overall)) => self.expire(flight.seq, Why::Timeout),
            };
            if let Some(step) = step {
                self.drive(step).await;
            }
            if self.lock().gave_up {
                break;
            }
        }
        let (lost_pending, disconnect) = {
            let mut st = self.lock();
            let lost = st.pending.len();
            st.pending.clear();
            st.pending_bytes = 0;
            let seq = st.next_seq;
            st.next_seq += 1;
            st.ended = true;
            let event = wire::event(
                &Body::Disconnect(code),
                self.channel.as_str(),
                seq,
                &self.scope,
                &st.conn_state,
            );
            (lost, event)
        };
        if lost_pending > 0 {
            lost(
                &self.shared,
                &self.channel,
                lost_pending as u64,
                "pending events given up after a missing acknowledgement",
            );
        }
        let Ok(disconnect) = disconnect else {
            return;
        };
        self.shared.stats.add(Count::EventsSent, 1);
        if let Some(sent) = hand_over_disconnect(&self.shared, &self.layer, &self.channel, disconnect) {
            sent.await;
        }
    }

    /// The next reply on the connection's own channel (`None`: a message
    /// that is no reply); `Err` when the channel cannot be read.
    pub(crate) async fn read_reply(&self) -> Result<Option<Reply>, ()> {
        match self.layer.receive(&self.channel).await {
            Ok(message) => Ok(message.decode::<Reply>().ok()),
            Err(ChannelLayerError::Lost { .. }) => Ok(None),
            Err(_) => Err(()),
        }
    }
}

impl Watched for Link {
    /// The watchdog's look at this link when a deadline it held passed.
    fn check(&self, now: Instant) {
        let mut st = self.lock();
        st.armed = false;
        let Some(flight) = st.in_flight else {
            return;
        };
        if flight.deadline > now {
            st.armed = true;
            self.shared.watch(Watch {
                deadline: flight.deadline,
                link: self.me.clone() as Weak<dyn Watched>,
            });
            return;
        }
        drop(st);
        let Some(step) = self.expire(flight.seq, Why::Timeout) else {
            return;
        };
        if let Some(link) = self.me.upgrade() {
            tokio::spawn(async move { link.drive(step).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use estuary_core::{Connect, Consumer, ConsumerError, Context, NoEvent};
    use estuary_testing::Communicator;
    use tokio::sync::oneshot;

    use super::*;
    use crate::{Relay, Target};

    /// Makes a link to its connection, as the relay's consumer does, and
    /// hands it to the test.
    #[derive(Clone)]
    struct Links {
        shared: Arc<Shared>,
        out: Arc<Mutex<Option<oneshot::Sender<Arc<Link>>>>>,
    }

    impl Consumer for Links {
        type Event = NoEvent;
        async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
            let link = Link::new(
                self.shared.clone(),
                ctx.channel_layer().clone(),
                ctx.channel_name().clone(),
                ctx.client(),
                Bytes::from_static(wire::EMPTY_STATE),
            );
            if let Some(out) = self.out.lock().unwrap().take() {
                let _ = out.send(link);
            }
            Ok(Connect::accept())
        }
    }

    /// A connected client and its link, on an HTTP relay to nowhere.
    async fn linked(relay: &Relay) -> (Communicator, Arc<Link>) {
        let (tx, rx) = oneshot::channel();
        let links = Links {
            shared: relay.shared.clone(),
            out: Arc::new(Mutex::new(Some(tx))),
        };
        let service = estuary_server::Router::new()
            .websocket("ws/", move || links.clone())
            .into_service();
        let mut c = Communicator::new(service, "/ws/").timeout(std::time::Duration::from_secs(30));
        c.connect().await.unwrap();
        (c, rx.await.unwrap())
    }

    #[tokio::test]
    async fn an_http_answer_after_its_event_was_given_up_is_not_applied() {
        let relay = Relay::builder(Target::http("http://127.0.0.1:9/", "0123456789abcdef").unwrap())
            .busy_frame("busy")
            .build()
            .unwrap();
        let (mut c, link) = linked(&relay).await;
        // Event 1 goes out (not POSTed here) and is given up.
        let sent = link.submit(Item::Receive(WsMessage::text("slow")));
        assert!(matches!(sent.deliver, Some((1, _))));
        let given_up = link.expire(1, Why::Timeout).expect("in flight");
        link.drive(given_up).await;
        assert_eq!(c.receive_text().await.unwrap(), "busy");

        let late = Answer {
            messages: vec![Reply::Send {
                text: Some("too late".into()),
                bytes: None,
            }],
            state: state_bytes(Some(rmpv::Value::Map(vec![("late".into(), true.into())]))),
        };
        assert!(link.answered(1, Ok(late)).await.is_none());
        assert_eq!(relay.stats().late(), 1);
        link.client.send(WsMessage::text("marker")).await.unwrap();
        assert_eq!(
            c.receive_text().await.unwrap(),
            "marker",
            "the late answer's frame was not sent"
        );
        assert_eq!(
            &link.lock().conn_state[..],
            wire::EMPTY_STATE,
            "nor its state kept"
        );
    }
}
