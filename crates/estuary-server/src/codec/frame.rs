//! RFC 6455 frames: a client frame's header parsed and checked, a server
//! frame's header encoded, masks undone, close payloads read.

use bytes::Bytes;
use estuary_core::{CloseCode, CloseFrame};

use super::CodecError;

/// A continuation frame.
pub(crate) const OP_CONTINUATION: u8 = 0x0;
/// A text frame.
pub(crate) const OP_TEXT: u8 = 0x1;
/// A binary frame.
pub(crate) const OP_BINARY: u8 = 0x2;
/// A close frame.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// A ping.
pub(crate) const OP_PING: u8 = 0x9;
/// A pong.
pub(crate) const OP_PONG: u8 = 0xA;

/// The longest payload of a control frame.
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// A client frame's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The last frame of its message.
    pub(crate) fin: bool,
    /// One of the `OP_*` constants (reserved opcodes are refused).
    pub(crate) opcode: u8,
    /// The client's masking key.
    pub(crate) mask: [u8; 4],
    /// Bytes in the header.
    pub(crate) head_len: usize,
    /// Bytes in the payload (at most the frame limit).
    pub(crate) payload_len: usize,
}

impl Header {
    /// Header and payload together.
    pub(crate) fn frame_len(&self) -> usize {
        self.head_len + self.payload_len
    }

    /// A control frame (close, ping, pong).
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses the header at the start of `input`, a client's (masked) frame;
/// `Ok(None)` while more bytes are needed. Every check that the header
/// alone allows is made as soon as its bytes are here (fail fast): reserved
/// bits and opcodes, the mask, control frames' length and fragmentation, and
/// the payload's length against `max_frame`.
pub(crate) fn parse_header(input: &[u8], max_frame: usize) -> Result<Option<Header>, CodecError> {
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    // No extension is negotiated, so every reserved bit must be clear.
    if first & 0x70 != 0 {
        return Err(CodecError::ReservedBits);
    }
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0F;
    let control = match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
        OP_CLOSE | OP_PING | OP_PONG => true,
        _ => return Err(CodecError::ReservedOpcode),
    };
    if control && !fin {
        return Err(CodecError::FragmentedControl);
    }
    let Some(&second) = input.get(1) else {
        return Ok(None);
    };
    if second & 0x80 == 0 {
        return Err(CodecError::Unmasked);
    }
    let short = usize::from(second & 0x7F);
    if control && short > MAX_CONTROL_PAYLOAD {
        return Err(CodecError::ControlTooLong);
    }
    let (payload_len, len_bytes) = match short {
        126 => match input.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match input.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 8)
            }
            None => return Ok(None),
        },
        n => (n as u64, 0),
    };
    // A length past the platform's or the limit is refused the same way
    // (the top bit, which RFC 6455 requires clear, is past both).
    let payload_len = match usize::try_from(payload_len) {
        Ok(len) if len <= max_frame && payload_len >> 63 == 0 => len,
        _ => return Err(CodecError::TooBig),
    };
    let mask_at = 2 + len_bytes;
    let Some(m) = input.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        head_len: mask_at + 4,
        payload_len,
    }))
}

/// Undoes (or applies) the mask on `data`, which starts at payload offset 0.
pub(crate) fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The unmasked payload of a frame whose header is `header`, from `frame`
/// (header and payload, complete), in an allocation of its own and exact size.
pub(crate) fn payload(frame: &[u8], header: &Header) -> Vec<u8> {
    let mut data = frame[header.head_len..header.frame_len()].to_vec();
    unmask(&mut data, header.mask);
    data
}

/// A server frame's header: final, unmasked. Returns the bytes and how many
/// of them are used (2, 4 or 10).
pub(crate) fn server_head(opcode: u8, len: usize) -> ([u8; 10], u8) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | opcode;
    let used = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, used)
}

/// True for the codes a peer may send in a close frame: 1000-1003, 1007-1013
/// and 3000-4999 (1004-1006 and 1015 are reserved for local use, the rest
/// unassigned).
pub(crate) fn receivable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A close frame's payload read: `None` for an empty one; a code that may
/// not be sent is a protocol error, a reason that is not UTF-8 invalid data.
pub(crate) fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, CodecError> {
    match payload {
        [] => Ok(None),
        [_] => Err(CodecError::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !receivable_close_code(code) {
                return Err(CodecError::BadClosePayload);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CodecError::InvalidUtf8)?;
            Ok(Some(CloseFrame::new(CloseCode::from(code), reason)))
        }
    }
}

/// A close frame's payload: the code, then the reason (cut to fit a
/// control frame, on a character boundary). `None` sends an empty close.
pub(crate) fn close_payload(frame: Option<&CloseFrame>) -> Bytes {
    let Some(frame) = frame else {
        return Bytes::new();
    };
    let reason = frame.reason();
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&frame.code().as_u16().to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    Bytes::from(payload)
}

/// A client frame (what a client sends): `first` is its first byte (FIN,
/// reserved bits, opcode), the payload masked with `mask`. For tests and the
/// fuzz harness.
pub(crate) fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let mut body = payload.to_vec();
    unmask(&mut body, mask);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_at_each_length_encoding_and_wait_for_their_bytes() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 100_000] {
            let frame = client_frame(0x82, &vec![7u8; len], [1, 2, 3, 4]);
            let header = parse_header(&frame, 1 << 20).unwrap().unwrap();
            assert_eq!(header.payload_len, len);
            assert_eq!(header.frame_len(), frame.len());
            assert!(header.fin);
            assert_eq!(header.opcode, OP_BINARY);
            assert_eq!(payload(&frame, &header), vec![7u8; len]);
            for cut in 0..header.head_len {
                assert_eq!(
                    parse_header(&frame[..cut], 1 << 20).unwrap(),
                    None,
                    "{len} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn header_violations_are_refused_as_soon_as_their_byte_is_here() {
        let cases: [(&[u8], CodecError); 7] = [
            (&[0xC1], CodecError::ReservedBits),
            (&[0x83], CodecError::ReservedOpcode),
            (&[0x8B], CodecError::ReservedOpcode),
            (&[0x09], CodecError::FragmentedControl),
            (&[0x81, 0x05], CodecError::Unmasked),
            (&[0x89, 0xFE], CodecError::ControlTooLong),
            (&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], CodecError::TooBig),
        ];
        for (bytes, error) in cases {
            assert_eq!(parse_header(bytes, usize::MAX), Err(error), "{bytes:?}");
        }
        let big = client_frame(0x82, &[0; 200], [0; 4]);
        assert_eq!(parse_header(&big[..4], 199), Err(CodecError::TooBig));
        assert!(parse_header(&big, 200).unwrap().is_some());
    }

    #[test]
    fn masks_are_undone_at_every_offset_and_length() {
        let mask = [0x11, 0x22, 0x33, 0x44];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let mut data = plain.clone();
            unmask(&mut data, mask);
            for (i, (m, p)) in data.iter().zip(&plain).enumerate() {
                assert_eq!(*m, p ^ mask[i % 4]);
            }
            unmask(&mut data, mask);
            assert_eq!(data, plain);
        }
    }

    #[test]
    fn server_heads_use_the_shortest_length_encoding() {
        assert_eq!(server_head(OP_TEXT, 0), ([0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        assert_eq!(server_head(OP_BINARY, 125).0[..2], [0x82, 125]);
        assert_eq!(
            server_head(OP_BINARY, 126),
            ([0x82, 126, 0, 126, 0, 0, 0, 0, 0, 0], 4)
        );
        assert_eq!(server_head(OP_BINARY, 65_535).0[..4], [0x82, 126, 0xFF, 0xFF]);
        assert_eq!(
            server_head(OP_BINARY, 65_536),
            ([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0], 10)
        );
    }

    #[test]
    fn close_payloads_are_checked_code_by_code() {
        assert_eq!(parse_close(&[]), Ok(None));
        assert_eq!(parse_close(&[3]), Err(CodecError::BadClosePayload));
        for code in 0..=u16::MAX {
            let got = parse_close(&code.to_be_bytes());
            let allowed = matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999);
            assert_eq!(got.is_ok(), allowed, "{code}");
        }
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xCE, 0xBA, 0xE1, 0xBD]);
        assert_eq!(parse_close(&bad_reason), Err(CodecError::InvalidUtf8));
        let mut good = 4000u16.to_be_bytes().to_vec();
        good.extend_from_slice("bye \u{3ba}".as_bytes());
        let frame = parse_close(&good).unwrap().unwrap();
        assert_eq!((frame.code().as_u16(), frame.reason()), (4000, "bye \u{3ba}"));
        assert_eq!(&close_payload(Some(&frame))[..], &good[..]);
    }

    #[test]
    fn a_long_close_reason_is_cut_on_a_character_boundary() {
        let frame = CloseFrame::new(CloseCode::NORMAL, "\u{3ba}".repeat(100));
        let payload = close_payload(Some(&frame));
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
        assert!(close_payload(None).is_empty());
    }
}
