//! Frames going out: each a header beside its shared payload, queued, and
//! written many to one vectored write.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

use super::frame;

/// Slices handed to one vectored write (two per frame); Linux takes up to
/// 1,024, and a batch past this many goes out in several writes.
const MAX_SLICES: usize = 64;

/// A frame queued: its header, its payload (a handle on the message's
/// shared bytes: a room's members all write from one copy), and how far
/// each has been written.
#[derive(Debug)]
struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    head_sent: u8,
    payload: Bytes,
}

impl OutFrame {
    fn head(&self) -> &[u8] {
        &self.head[usize::from(self.head_sent)..usize::from(self.head_len)]
    }

    fn is_done(&self) -> bool {
        self.head_sent == self.head_len && self.payload.is_empty()
    }
}

/// Frame slots an emptied queue may hold to be kept as the thread's spare.
const SPARE_MAX: usize = 64;

/// A batch of at most this many bytes (headers included) is copied into a
/// buffer of the thread's and written with one plain write (`send` on a
/// socket); a larger one is written vectored, straight from the shared
/// payloads. The kernel copies the bytes either way, and for the usual
/// batch (one chat message, a few hundred bytes) its vectored path costs
/// more than the copy: about 0.1 us per delivery, measured at 100,000
/// deliveries/s.
const GATHER_MAX: usize = 4096;

thread_local! {
    /// An emptied queue's allocation, kept by the worker thread for the
    /// next connection that queues a frame: a delivery neither frees nor
    /// allocates, and an idle connection holds no queue.
    static SPARE: Cell<VecDeque<OutFrame>> = const { Cell::new(VecDeque::new()) };
    /// The buffer small batches are copied into (at most `GATHER_MAX`
    /// bytes, kept by the worker thread).
    static GATHER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The frames a connection has queued and not yet written. Writing keeps
/// its progress here, so a write abandoned midway (a cancelled future)
/// resumes where it stopped, and no frame ever lands inside another.
/// The queue's allocation goes back to the thread's spare each time it
/// empties (or is freed, if large): an idle connection holds none.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    frames: VecDeque<OutFrame>,
    /// Bytes queued and not yet written, headers included.
    queued: usize,
}

impl Writer {
    /// Queues a final, unmasked frame of `opcode` around `payload`.
    pub(crate) fn push(&mut self, opcode: u8, payload: Bytes) {
        let (head, head_len) = frame::server_head(opcode, payload.len());
        self.queued = self.queued.saturating_add(usize::from(head_len) + payload.len());
        if self.frames.capacity() == 0 {
            // Outside a thread's life (its locals torn down) there is no spare.
            self.frames = SPARE.try_with(Cell::take).unwrap_or_default();
        }
        self.frames.push_back(OutFrame {
            head,
            head_len,
            head_sent: 0,
            payload,
        });
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Writes everything queued, then flushes `io`. Cancel-safe: what was
    /// written stays written, the rest stays queued.
    pub(crate) fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.frames.is_empty() {
            if self.queued <= GATHER_MAX {
                let written = ready!(self.poll_write_gathered(io, cx))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.advance(written);
                continue;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for out in self.frames.iter() {
                if count + 2 > MAX_SLICES {
                    break;
                }
                for part in [out.head(), &out.payload[..]] {
                    if !part.is_empty() {
                        slices[count] = IoSlice::new(part);
                        count += 1;
                    }
                }
            }
            let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        // Done: the queue's allocation goes to the thread's spare.
        let emptied = std::mem::take(&mut self.frames);
        if emptied.capacity() > 0 && emptied.capacity() <= SPARE_MAX {
            let _ = SPARE.try_with(|spare| spare.set(emptied));
        }
        Pin::new(&mut *io).poll_flush(cx)
    }

    /// Writes what is queued (at most `GATHER_MAX` bytes) as one buffer.
    fn poll_write_gathered<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut buf = GATHER.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        for out in &self.frames {
            buf.extend_from_slice(out.head());
            buf.extend_from_slice(&out.payload);
        }
        let result = Pin::new(&mut *io).poll_write(cx, &buf);
        let _ = GATHER.try_with(|cell| cell.set(buf));
        result
    }

    /// Marks `n` bytes from the front as written.
    fn advance(&mut self, mut n: usize) {
        self.queued = self.queued.saturating_sub(n);
        while let Some(out) = self.frames.front_mut() {
            let from_head = n.min(out.head().len());
            out.head_sent += from_head as u8;
            n -= from_head;
            // `advance` moves this handle's start only: the shared payload
            // is neither copied nor freed before every holder is done.
            let from_payload = n.min(out.payload.len());
            out.payload.advance(from_payload);
            n -= from_payload;
            if !out.is_done() {
                break;
            }
            self.frames.pop_front();
        }
    }
}

/// Writes `frames` through a queue into memory, at most `step` bytes a
/// write (for the fuzz harness): the bytes a client would read.
pub(crate) fn write_all_to_vec(frames: &[(u8, &[u8])], step: usize) -> Vec<u8> {
    let mut writer = Writer::default();
    for (opcode, payload) in frames {
        writer.push(*opcode, Bytes::copy_from_slice(payload));
    }
    let mut sink = Capped {
        out: Vec::new(),
        step: step.max(1),
    };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // The sink is always ready and takes at least a byte: this ends.
    while writer.poll_flush(&mut sink, &mut cx).is_pending() {}
    sink.out
}

/// A sink in memory that takes at most `step` bytes a write.
struct Capped {
    out: Vec<u8>,
    step: usize,
}

impl AsyncWrite for Capped {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut left = self.step;
        let mut taken = 0;
        for buf in bufs {
            let n = buf.len().min(left);
            self.out.extend_from_slice(&buf[..n]);
            left -= n;
            taken += n;
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `step` bytes a write, and says Pending
    /// every other call.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        pending_next: bool,
        writes: usize,
        /// Of `writes`, those made with `poll_write` (one buffer).
        plain: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let before = self.writes;
            let result = self.as_mut().poll_write_vectored(cx, &[IoSlice::new(buf)]);
            if self.writes > before {
                self.plain += 1;
            }
            result
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if std::mem::replace(&mut self.pending_next, false) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.pending_next = true;
            self.writes += 1;
            let mut left = self.step;
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(left);
                self.out.extend_from_slice(&buf[..n]);
                left -= n;
                taken += n;
            }
            Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn expected(frames: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (opcode, payload) in frames {
            let (head, len) = frame::server_head(*opcode, payload.len());
            out.extend_from_slice(&head[..usize::from(len)]);
            out.extend_from_slice(payload);
        }
        out
    }

    #[tokio::test]
    async fn frames_go_out_whole_and_in_order_through_partial_and_pending_writes() {
        let big = vec![b'b'; 70_000];
        let frames: Vec<(u8, &[u8])> = vec![(0x1, b"hello"), (0x2, &big), (0x9, b""), (0x1, b"x")];
        for step in [1, 3, 7, 100, 1 << 20] {
            let mut writer = Writer::default();
            for (opcode, payload) in &frames {
                writer.push(*opcode, Bytes::copy_from_slice(payload));
            }
            assert_eq!(writer.queued(), expected(&frames).len());
            let mut sink = Trickle {
                out: Vec::new(),
                step,
                pending_next: false,
                writes: 0,
                plain: 0,
            };
            // Each Pending drops the future: progress must survive it.
            loop {
                let once = std::future::poll_fn(|cx| Poll::Ready(writer.poll_flush(&mut sink, cx))).await;
                match once {
                    Poll::Ready(result) => break result.unwrap(),
                    Poll::Pending => continue,
                }
            }
            assert_eq!(sink.out, expected(&frames), "step {step}");
            assert!(writer.is_empty());
            assert_eq!(writer.queued(), 0);
        }
    }

    #[test]
    fn an_emptied_queue_holds_no_allocation_and_the_next_reuses_it() {
        let mut sink = Capped {
            out: Vec::new(),
            step: usize::MAX,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut writer = Writer::default();
        writer.push(0x1, Bytes::from_static(b"one"));
        let slots = writer.frames.capacity();
        assert!(writer.poll_flush(&mut sink, &mut cx).is_ready());
        assert_eq!(writer.frames.capacity(), 0, "an idle connection holds no queue");
        // Another connection on this thread queues into the same allocation.
        let mut other = Writer::default();
        other.push(0x1, Bytes::from_static(b"two"));
        assert_eq!(other.frames.capacity(), slots);
        assert_eq!(
            SPARE.with(|spare| spare.take().capacity()),
            0,
            "taken, not copied"
        );
        assert!(other.poll_flush(&mut sink, &mut cx).is_ready());
        assert_eq!(sink.out, expected(&[(0x1, b"one"), (0x1, b"two")]));
    }

    #[tokio::test]
    async fn many_small_frames_share_a_write() {
        let mut writer = Writer::default();
        for _ in 0..20 {
            writer.push(0x1, Bytes::from_static(b"0123456789"));
        }
        let mut sink = Trickle {
            out: Vec::new(),
            step: usize::MAX,
            pending_next: false,
            writes: 0,
            plain: 0,
        };
        std::future::poll_fn(|cx| writer.poll_flush(&mut sink, cx))
            .await
            .unwrap();
        assert_eq!(sink.writes, 1);
        assert_eq!(sink.plain, 1, "a small batch is copied into one buffer");
        assert_eq!(sink.out.len(), 20 * 12);
    }

    #[tokio::test]
    async fn a_large_batch_is_written_vectored_and_its_small_rest_plain() {
        let big = vec![b'b'; GATHER_MAX * 2];
        let frames: Vec<(u8, &[u8])> = vec![(0x1, b"before"), (0x2, &big), (0x1, b"after")];
        let mut writer = Writer::default();
        for (opcode, payload) in &frames {
            writer.push(*opcode, Bytes::copy_from_slice(payload));
        }
        // Takes all but the last 100 bytes in its first write.
        let total = expected(&frames).len();
        let mut sink = Trickle {
            out: Vec::new(),
            step: total - 100,
            pending_next: false,
            writes: 0,
            plain: 0,
        };
        loop {
            match std::future::poll_fn(|cx| Poll::Ready(writer.poll_flush(&mut sink, cx))).await {
                Poll::Ready(result) => break result.unwrap(),
                Poll::Pending => continue,
            }
        }
        assert_eq!(sink.out, expected(&frames));
        assert_eq!(
            (sink.writes, sink.plain),
            (2, 1),
            "vectored, then the 100 bytes left in one buffer"
        );
    }
}
