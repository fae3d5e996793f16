//! The server's WebSocket codec.
//!
//! `ws-read` feeds arbitrary bytes to the frame reader as socket reads of
//! three chunkings (all at once, a step the input picks, one byte at a
//! time): the reader must not panic, every chunking must give the same
//! events and the same error, and what comes out must respect the limits
//! (text is UTF-8, messages within `max_message`, pings within 125 bytes,
//! close codes ones a client may send).
//!
//! `ws-roundtrip` reads a list of messages from its input, sends each as a
//! client would (masked, in fragments, a ping between them), and checks
//! that the reader gives exactly those messages back; and writes each
//! through the server's write queue in small writes, and checks the bytes
//! against RFC 6455's framing, parsed here independently.

use estuary_server::fuzzing::{FrameEvent, FrameReader, client_frame, server_frames};

use crate::Trail;

/// Tokens: frame first bytes, length markers, close codes.
pub const DICTIONARY: &[&[u8]] = &[
    b"\x81",
    b"\x82",
    b"\x01",
    b"\x00",
    b"\x80",
    b"\x88",
    b"\x89",
    b"\x8a",
    b"\xc1",
    b"\x83",
    b"\xfe",
    b"\xff",
    b"\x7e\x00\x7e",
    b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
    b"\x03\xe8",
    b"\x03\xed",
    b"\x0f\xa0",
    b"\xce\xba",
    b"\xf4\x90\x80\x80",
    b"\xed\xa0\x80",
    b"\x12\x34\x56\x78",
];

const LIMITS: [usize; 5] = [16, 125, 126, 1000, 65_536];

/// Runs the reader over `stream`, `step` bytes a read.
fn read_in(stream: &[u8], step: usize, max: usize) -> (Vec<FrameEvent>, Option<u16>) {
    let mut reader = FrameReader::new(max, max);
    let mut events = Vec::new();
    for piece in stream.chunks(step.max(1)) {
        let (more, error) = reader.read(piece);
        events.extend(more);
        if error.is_some() {
            return (events, error);
        }
    }
    (events, None)
}

/// `ws-read`: arbitrary bytes, arbitrary chunkings.
pub fn read(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let (Some(&step), Some(&limit)) = (data.first(), data.get(1)) else {
        return trail.finish();
    };
    let stream = &data[2..];
    let max = LIMITS[usize::from(limit) % LIMITS.len()];
    let whole = read_in(stream, stream.len(), max);
    let stepped = read_in(stream, usize::from(step % 32) + 1, max);
    let bytewise = read_in(stream, 1, max);
    assert_eq!(
        whole,
        stepped,
        "reads of {} bytes differ from one read",
        step % 32 + 1
    );
    assert_eq!(whole, bytewise, "one-byte reads differ from one read");
    let (events, error) = whole;
    for event in &events {
        match event {
            FrameEvent::Text(t) => assert!(t.len() <= max),
            FrameEvent::Binary(b) => assert!(b.len() <= max),
            FrameEvent::Ping(p) => assert!(p.len() <= 125 && p.len() <= max),
            FrameEvent::Pong => {}
            FrameEvent::Close(Some((code, reason))) => {
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999),
                    "close code {code}"
                );
                assert!(reason.len() <= 123);
            }
            FrameEvent::Close(None) => {}
        }
        trail.note(std::mem::discriminant(event));
    }
    if let Some(code) = error {
        assert!(matches!(code, 1002 | 1007 | 1009), "error close code {code}");
    }
    trail.note(error);
    trail.note(events.len().min(4));
    trail.finish()
}

/// One message of a `ws-roundtrip` input.
struct Planned {
    text: bool,
    payload: Vec<u8>,
    fragments: usize,
    ping_between: bool,
}

fn plan(mut data: &[u8]) -> Vec<Planned> {
    let mut out = Vec::new();
    while let [kind, len, rest @ ..] = data {
        let len = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        data = tail;
        let text = kind & 1 == 1;
        let payload = if text {
            crate::text(payload).into_owned().into_bytes()
        } else {
            payload.to_vec()
        };
        out.push(Planned {
            text,
            payload,
            fragments: usize::from((kind >> 1) & 7) + 1,
            ping_between: kind & 0x10 != 0,
        });
    }
    out
}

/// Checks `bytes` as one server frame of `opcode` around `payload`, read
/// by RFC 6455's rules: final, unmasked, shortest length encoding.
fn check_server_frame(bytes: &[u8], opcode: u8, payload: &[u8]) {
    assert_eq!(bytes[0], 0x80 | opcode, "first byte");
    assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
    let (len, at) = match bytes[1] & 0x7F {
        126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&bytes[2..10]);
            (usize::try_from(u64::from_be_bytes(be)).unwrap_or(usize::MAX), 10)
        }
        n => (usize::from(n), 2),
    };
    let shortest = if len < 126 {
        2
    } else if len <= 0xFFFF {
        4
    } else {
        10
    };
    assert_eq!(at, shortest, "length encoding of {len}");
    assert_eq!(len, payload.len());
    assert_eq!(&bytes[at..], payload);
}

/// `ws-roundtrip`: messages encoded as a client and as the server.
pub fn roundtrip(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let [step, m0, m1, m2, m3, rest @ ..] = data else {
        return trail.finish();
    };
    let mask = [*m0, *m1, *m2, *m3];
    let messages = plan(rest);
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for m in &messages {
        let size = m.payload.len().div_ceil(m.fragments).max(1);
        let pieces: Vec<&[u8]> = if m.payload.is_empty() {
            vec![&[]]
        } else {
            m.payload.chunks(size).collect()
        };
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = match (i, m.text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
            stream.extend(client_frame(fin | opcode, piece, mask));
            if m.ping_between && fin == 0 {
                stream.extend(client_frame(0x89, b"p", mask));
                expected.push(FrameEvent::Ping(b"p".to_vec()));
            }
        }
        expected.push(if m.text {
            FrameEvent::Text(String::from_utf8(m.payload.clone()).unwrap_or_default())
        } else {
            FrameEvent::Binary(m.payload.clone())
        });
        let opcode = if m.text { 0x1 } else { 0x2 };
        let written = server_frames(&[(opcode, &m.payload)], usize::from(*step) + 1);
        check_server_frame(&written, opcode, &m.payload);
        trail.note((m.text, m.fragments.min(3), m.ping_between));
    }
    let (events, error) = read_in(&stream, usize::from(*step) + 1, 1 << 16);
    assert_eq!(error, None);
    assert_eq!(events, expected);
    trail.finish()
}
