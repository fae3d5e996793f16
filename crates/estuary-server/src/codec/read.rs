//! Client frames to messages: the decoder, which applies the protocol's
//! rules frame by frame, and the per-thread buffer sockets are read into.

use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use estuary_core::{ByteString, CloseFrame, WsMessage};

use super::CodecError;
use super::frame::{self, Header, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use super::utf8;

/// What a connection accepts from its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Largest message, all its fragments together.
    pub(crate) max_message: usize,
    /// Largest single frame's payload.
    pub(crate) max_frame: usize,
}

/// What one client frame amounted to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A complete data message.
    Message(WsMessage),
    /// A ping, with the payload its pong must carry.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame (`None`: one without a code).
    Close(Option<CloseFrame>),
}

/// The outcome of [`Decoder::decode`] on the bytes at hand.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// The frame at the start is not complete; when its header is, the
    /// whole frame's length (to reserve room for it once).
    NeedMore(Option<usize>),
    /// A frame was decoded: `used` bytes of the input; the event it made,
    /// if any (a fragment that does not end its message makes none).
    Frame {
        /// Bytes of the input the frame took.
        used: usize,
        /// What it amounted to.
        event: Option<Event>,
    },
}

/// A message arriving in fragments.
#[derive(Debug)]
struct Fragments {
    text: bool,
    data: Vec<u8>,
    /// How far `data` is known to be UTF-8 (text only).
    checked: usize,
}

/// The protocol's state between frames: the limits, and the message being
/// assembled from fragments (boxed: most connections never have one, and
/// an idle connection's size counts).
#[derive(Debug)]
pub(crate) struct Decoder {
    limits: Limits,
    fragments: Option<Box<Fragments>>,
}

impl Decoder {
    /// A decoder with `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            fragments: None,
        }
    }

    /// Forgets a message in progress (after an error, or once closing).
    pub(crate) fn reset(&mut self) {
        self.fragments = None;
    }

    /// Decodes the frame at the start of `input`. Never panics; an error
    /// leaves the decoder in no defined state (the connection is closing).
    pub(crate) fn decode(&mut self, input: &[u8]) -> Result<Decoded, CodecError> {
        let Some(header) = frame::parse_header(input, self.limits.max_frame)? else {
            return Ok(Decoded::NeedMore(None));
        };
        // The rules that the header alone decides, before the payload is
        // here: continuation order and the message limit.
        if !header.is_control() {
            let so_far = match (&self.fragments, header.opcode) {
                (None, OP_CONTINUATION) => return Err(CodecError::UnexpectedContinuation),
                (Some(_), OP_TEXT | OP_BINARY) => return Err(CodecError::ExpectedContinuation),
                (Some(f), _) => f.data.len(),
                (None, _) => 0,
            };
            if so_far.saturating_add(header.payload_len) > self.limits.max_message {
                return Err(CodecError::TooBig);
            }
        }
        let Some(frame) = input.get(..header.frame_len()) else {
            return Ok(Decoded::NeedMore(Some(header.frame_len())));
        };
        let payload = frame::payload(frame, &header);
        let event = self.on_frame(&header, payload)?;
        Ok(Decoded::Frame {
            used: header.frame_len(),
            event,
        })
    }

    fn on_frame(&mut self, header: &Header, payload: Vec<u8>) -> Result<Option<Event>, CodecError> {
        match header.opcode {
            OP_PING => Ok(Some(Event::Ping(Bytes::from(payload)))),
            OP_PONG => Ok(Some(Event::Pong)),
            OP_CLOSE => Ok(Some(Event::Close(frame::parse_close(&payload)?))),
            OP_TEXT | OP_BINARY if header.fin => {
                Ok(Some(Event::Message(message(header.opcode == OP_TEXT, payload)?)))
            }
            OP_TEXT | OP_BINARY => {
                let mut fragments = Fragments {
                    text: header.opcode == OP_TEXT,
                    data: payload,
                    checked: 0,
                };
                if fragments.text {
                    utf8::check_prefix(&fragments.data, &mut fragments.checked)?;
                }
                self.fragments = Some(Box::new(fragments));
                Ok(None)
            }
            // OP_CONTINUATION: `decode` made sure a message is in progress.
            _ => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(CodecError::UnexpectedContinuation);
                };
                fragments.data.extend_from_slice(&payload);
                if fragments.text {
                    utf8::check_prefix(&fragments.data, &mut fragments.checked)?;
                }
                if !header.fin {
                    return Ok(None);
                }
                let Some(done) = self.fragments.take() else {
                    return Err(CodecError::UnexpectedContinuation);
                };
                Ok(Some(Event::Message(message(done.text, done.data)?)))
            }
        }
    }
}

/// A complete message from its payload; text is checked (once) as the
/// `String` is made.
fn message(text: bool, mut payload: Vec<u8>) -> Result<WsMessage, CodecError> {
    if !text {
        return Ok(WsMessage::Binary(Bytes::from(payload)));
    }
    // An assembled message may have grown its allocation past its length.
    payload.shrink_to_fit();
    let text = String::from_utf8(payload).map_err(|_| CodecError::InvalidUtf8)?;
    Ok(WsMessage::Text(ByteString::from(text)))
}

/// A connection's decoding state: the decoder, and the bytes read but not
/// decoded yet: a frame that arrived in part, or frames that came after one
/// returned. `held` is empty (no allocation) otherwise: complete frames are
/// decoded straight out of the read they came in.
#[derive(Debug)]
pub(crate) struct Inbox {
    decoder: Decoder,
    held: BytesMut,
}

impl Inbox {
    /// An empty inbox with `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            decoder: Decoder::new(limits),
            held: BytesMut::new(),
        }
    }

    /// Forgets everything held and any message in progress.
    pub(crate) fn reset(&mut self) {
        self.decoder.reset();
        self.held = BytesMut::new();
    }

    /// Keeps `bytes` (read before this inbox existed) to be decoded first.
    pub(crate) fn hold(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
    }

    /// The next event from the bytes held; `Ok(None)` when they make none
    /// (more bytes are needed).
    pub(crate) fn next_held(&mut self) -> Result<Option<Event>, CodecError> {
        while !self.held.is_empty() {
            match self.decoder.decode(&self.held)? {
                Decoded::NeedMore(whole) => {
                    if let Some(whole) = whole {
                        self.held.reserve(whole.saturating_sub(self.held.len()));
                    }
                    return Ok(None);
                }
                Decoded::Frame { used, event } => {
                    let _ = self.held.split_to(used);
                    if self.held.is_empty() {
                        // Give the allocation back.
                        self.held = BytesMut::new();
                    }
                    if event.is_some() {
                        return Ok(event);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Takes the bytes of one socket read: the first event they complete,
    /// if any. Frames complete in `fresh` are decoded from it; what follows
    /// the event returned, and a frame cut short, are kept.
    pub(crate) fn absorb(&mut self, mut fresh: &[u8]) -> Result<Option<Event>, CodecError> {
        if !self.held.is_empty() {
            self.held.extend_from_slice(fresh);
            return self.next_held();
        }
        while !fresh.is_empty() {
            match self.decoder.decode(fresh)? {
                Decoded::NeedMore(whole) => {
                    self.held.reserve(whole.unwrap_or(0).max(fresh.len()));
                    self.held.extend_from_slice(fresh);
                    return Ok(None);
                }
                Decoded::Frame { used, event } => {
                    fresh = fresh.get(used..).unwrap_or_default();
                    if event.is_some() {
                        self.held.extend_from_slice(fresh);
                        return Ok(event);
                    }
                }
            }
        }
        Ok(None)
    }
}

thread_local! {
    /// The buffer this thread's connections read their sockets into.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` over this thread's read buffer, `len` bytes of it. The buffer
/// is taken out while `f` runs and put back after: a nested call (never
/// made) or one while the thread exits gets a buffer of its own.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let result = f(&mut buf[..len]);
    let _ = SCRATCH.try_with(|cell| cell.set(buf));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::client_frame;

    const MASK: [u8; 4] = [0xA1, 0xB2, 0xC3, 0xD4];

    fn decoder(max: usize) -> Decoder {
        Decoder::new(Limits {
            max_message: max,
            max_frame: max,
        })
    }

    /// Decodes `bytes` fed `chunk` bytes at a time, the way a socket
    /// delivers them: events, or the first error.
    fn feed(decoder: &mut Decoder, bytes: &[u8], chunk: usize) -> Result<Vec<Event>, CodecError> {
        let mut held = Vec::new();
        let mut events = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            held.extend_from_slice(piece);
            loop {
                match decoder.decode(&held)? {
                    Decoded::NeedMore(_) => break,
                    Decoded::Frame { used, event } => {
                        held.drain(..used);
                        events.extend(event);
                    }
                }
            }
        }
        Ok(events)
    }

    #[test]
    fn whole_messages_come_out_in_any_chunking() {
        let mut bytes = client_frame(0x81, "h\u{e9}llo".as_bytes(), MASK);
        bytes.extend(client_frame(0x82, &[0, 1, 2, 255], MASK));
        bytes.extend(client_frame(0x89, b"are you there", MASK));
        bytes.extend(client_frame(0x8A, b"", MASK));
        bytes.extend(client_frame(0x88, &[0x03, 0xE8, b'o', b'k'], MASK));
        for chunk in 1..bytes.len() {
            let events = feed(&mut decoder(1024), &bytes, chunk).unwrap();
            assert_eq!(
                events,
                [
                    Event::Message(WsMessage::text("h\u{e9}llo")),
                    Event::Message(WsMessage::binary(vec![0, 1, 2, 255])),
                    Event::Ping(Bytes::from_static(b"are you there")),
                    Event::Pong,
                    Event::Close(Some(CloseFrame::new(estuary_core::CloseCode::NORMAL, "ok"))),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn fragments_make_one_message_with_control_frames_between_them() {
        let text = "\u{3ba}\u{1f600}";
        let (a, b) = text.as_bytes().split_at(3);
        let mut bytes = client_frame(0x01, a, MASK);
        bytes.extend(client_frame(0x89, b"", MASK));
        bytes.extend(client_frame(0x00, &b[..2], MASK));
        bytes.extend(client_frame(0x80, &b[2..], MASK));
        let events = feed(&mut decoder(1024), &bytes, 1).unwrap();
        assert_eq!(
            events,
            [Event::Ping(Bytes::new()), Event::Message(WsMessage::text(text))]
        );
    }

    #[test]
    fn continuation_rules_are_enforced() {
        let lone = client_frame(0x80, b"x", MASK);
        assert_eq!(
            feed(&mut decoder(64), &lone, 99),
            Err(CodecError::UnexpectedContinuation)
        );
        let mut interleaved = client_frame(0x01, b"x", MASK);
        interleaved.extend(client_frame(0x82, b"y", MASK));
        assert_eq!(
            feed(&mut decoder(64), &interleaved, 99),
            Err(CodecError::ExpectedContinuation)
        );
    }

    #[test]
    fn limits_apply_to_frames_and_to_whole_messages_before_the_payload_arrives() {
        let big = client_frame(0x82, &[0; 65], MASK);
        // Only the header is fed: the frame is refused already.
        assert_eq!(decoder(64).decode(&big[..2]), Err(CodecError::TooBig));
        let mut parts = client_frame(0x02, &[0; 40], MASK);
        parts.extend(client_frame(0x80, &[0; 40], MASK));
        assert_eq!(feed(&mut decoder(64), &parts, 50), Err(CodecError::TooBig));
        let exact = client_frame(0x82, &[0; 64], MASK);
        assert_eq!(feed(&mut decoder(64), &exact, 7).unwrap().len(), 1);
    }

    #[test]
    fn invalid_text_fails_at_the_fragment_that_breaks_it() {
        let mut d = decoder(1024);
        let first = client_frame(0x01, "\u{3ba}".as_bytes(), MASK);
        assert_eq!(feed(&mut d, &first, 99), Ok(vec![]));
        let bad = client_frame(0x00, &[0xF4, 0x90], MASK);
        assert_eq!(feed(&mut d, &bad, 99), Err(CodecError::InvalidUtf8));
        let whole = client_frame(0x81, &[b'a', 0xFF], MASK);
        assert_eq!(feed(&mut decoder(1024), &whole, 99), Err(CodecError::InvalidUtf8));
        let cut_short = {
            let mut b = client_frame(0x01, &[0xF0, 0x9F], MASK);
            b.extend(client_frame(0x80, &[], MASK));
            b
        };
        assert_eq!(
            feed(&mut decoder(1024), &cut_short, 99),
            Err(CodecError::InvalidUtf8)
        );
    }

    #[test]
    fn bad_close_frames_are_refused() {
        let one_byte = client_frame(0x88, &[3], MASK);
        assert_eq!(
            feed(&mut decoder(64), &one_byte, 99),
            Err(CodecError::BadClosePayload)
        );
        let reserved = client_frame(0x88, &1005u16.to_be_bytes(), MASK);
        assert_eq!(
            feed(&mut decoder(64), &reserved, 99),
            Err(CodecError::BadClosePayload)
        );
        let empty = client_frame(0x88, &[], MASK);
        assert_eq!(feed(&mut decoder(64), &empty, 99), Ok(vec![Event::Close(None)]));
    }

    #[test]
    fn incomplete_frames_say_how_long_they_will_be() {
        let bytes = client_frame(0x82, &[9; 300], MASK);
        assert_eq!(decoder(1024).decode(&bytes[..1]), Ok(Decoded::NeedMore(None)));
        assert_eq!(
            decoder(1024).decode(&bytes[..10]),
            Ok(Decoded::NeedMore(Some(308)))
        );
    }

    #[test]
    fn the_scratch_buffer_has_the_length_asked_for() {
        assert_eq!(with_scratch(100, |b| b.len()), 100);
        assert_eq!(
            with_scratch(10, |b| with_scratch(20, |inner| (b.len(), inner.len()))),
            (10, 20)
        );
    }
}
