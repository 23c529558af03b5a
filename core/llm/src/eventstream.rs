//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), as Bedrock's
//! ConverseStream uses it: an incremental decoder correct for any split of its input, and the
//! encoder (for tests and mocks).
//!
//! A message is `total length (u32 BE) | headers length (u32 BE) | prelude CRC32 | headers |
//! payload | message CRC32`, a header `name length (u8) | name | type (u8) | value`.

use bytes::{Buf, BytesMut};

/// Messages larger than this are refused (the service's own limit is far lower).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
const PRELUDE: usize = 12;
const MIN_MESSAGE: usize = PRELUDE + 4;

/// One decoded message: its string headers and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

/// A header value (all the types of the format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl Message {
    /// A string header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Why a stream cannot be decoded; the stream is unusable afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event-stream message of {0} bytes is out of bounds")]
    Length(usize),
    #[error("event-stream prelude checksum mismatch")]
    PreludeCrc,
    #[error("event-stream message checksum mismatch")]
    MessageCrc,
    #[error("malformed event-stream headers")]
    Headers,
}

/// Incremental decoder: push bytes as they arrive, take the messages they complete.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    failed: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes received but not yet part of a complete message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` until more bytes arrive.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.failed {
            return Ok(None);
        }
        let result = self.decode();
        if result.is_err() {
            self.failed = true;
            self.buf.clear();
        }
        result
    }

    fn decode(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.buf.len() < PRELUDE {
            return Ok(None);
        }
        let total = be32(&self.buf[0..4]) as usize;
        let headers_len = be32(&self.buf[4..8]) as usize;
        if !(MIN_MESSAGE..=MAX_MESSAGE_BYTES).contains(&total) || headers_len > total - MIN_MESSAGE
        {
            return Err(DecodeError::Length(total));
        }
        if crc32fast::hash(&self.buf[0..8]) != be32(&self.buf[8..12]) {
            return Err(DecodeError::PreludeCrc);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total);
        if crc32fast::hash(&frame[..total - 4]) != be32(&frame[total - 4..]) {
            return Err(DecodeError::MessageCrc);
        }
        let headers = parse_headers(&frame[PRELUDE..PRELUDE + headers_len])?;
        let payload = frame[PRELUDE + headers_len..total - 4].to_vec();
        Ok(Some(Message { headers, payload }))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut out = Vec::new();
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>, DecodeError> {
        if b.len() < n {
            return Err(DecodeError::Headers);
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head.to_vec())
    };
    while !b.is_empty() {
        let name_len = usize::from(b.get_u8());
        let name = String::from_utf8(take(&mut b, name_len)?).map_err(|_| DecodeError::Headers)?;
        if b.is_empty() {
            return Err(DecodeError::Headers);
        }
        let fixed = |b: &mut &[u8], n: usize| -> Result<[u8; 8], DecodeError> {
            let v = take(b, n)?;
            let mut a = [0u8; 8];
            a[8 - n..].copy_from_slice(&v);
            Ok(a)
        };
        let value = match b.get_u8() {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes([fixed(&mut b, 1)?[7]])),
            3 => {
                let a = fixed(&mut b, 2)?;
                HeaderValue::Short(i16::from_be_bytes([a[6], a[7]]))
            }
            4 => {
                let a = fixed(&mut b, 4)?;
                HeaderValue::Int(i32::from_be_bytes([a[4], a[5], a[6], a[7]]))
            }
            5 => HeaderValue::Long(i64::from_be_bytes(fixed(&mut b, 8)?)),
            6 | 7 => {
                if b.len() < 2 {
                    return Err(DecodeError::Headers);
                }
                let len = usize::from(b.get_u16());
                let v = take(&mut b, len)?;
                match String::from_utf8(v) {
                    Ok(s) => HeaderValue::String(s),
                    Err(e) => HeaderValue::Bytes(e.into_bytes()),
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(fixed(&mut b, 8)?)),
            9 => {
                let v = take(&mut b, 16)?;
                let mut u = [0u8; 16];
                u.copy_from_slice(&v);
                HeaderValue::Uuid(u)
            }
            _ => return Err(DecodeError::Headers),
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Encodes a message with string headers.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        h.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
        h.push(7);
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&value.as_bytes()[..usize::from(len)]);
    }
    let total = PRELUDE + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    #[test]
    fn decodes_a_message_and_its_headers() {
        let mut d = Decoder::new();
        d.push(&event("contentBlockDelta", r#"{"delta":{"text":"hé"}}"#));
        let Ok(Some(m)) = d.next_message() else {
            panic!("no message")
        };
        assert_eq!(m.header(":event-type"), Some("contentBlockDelta"));
        assert_eq!(m.header(":message-type"), Some("event"));
        assert_eq!(m.payload, r#"{"delta":{"text":"hé"}}"#.as_bytes());
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn corrupt_messages_are_refused() {
        let mut bytes = event("messageStop", "{}");
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        let mut d = Decoder::new();
        d.push(&bytes);
        assert_eq!(d.next_message(), Err(DecodeError::MessageCrc));
        let mut bytes = event("messageStop", "{}");
        bytes[3] ^= 0x01;
        let mut d = Decoder::new();
        d.push(&bytes);
        assert_eq!(d.next_message(), Err(DecodeError::PreludeCrc));
    }

    #[test]
    fn every_header_type_is_read() {
        // name "b" bool true, "i" int 7, "u" uuid, "s" string "x"
        let mut h = vec![1, b'b', 0, 1, b'i', 4, 0, 0, 0, 7, 1, b'u', 9];
        h.extend_from_slice(&[0xab; 16]);
        h.extend_from_slice(&[1, b's', 7, 0, 1, b'x']);
        let headers = parse_headers(&h).unwrap_or_default();
        assert_eq!(
            headers,
            vec![
                ("b".into(), HeaderValue::Bool(true)),
                ("i".into(), HeaderValue::Int(7)),
                ("u".into(), HeaderValue::Uuid([0xab; 16])),
                ("s".into(), HeaderValue::String("x".into())),
            ]
        );
        assert_eq!(
            parse_headers(&[1, b'x', 7, 0, 5, b'a']),
            Err(DecodeError::Headers)
        );
    }

    proptest! {
        /// Any split of a stream of messages decodes to the same messages.
        #[test]
        fn decoding_is_independent_of_splits(
            payloads in proptest::collection::vec("[a-zé€\"{}:, ]{0,40}", 1..6),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                stream.extend(event(&format!("e{i}"), p));
            }
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in crate::sse::split_at(&stream, &cuts) {
                d.push(piece);
                while let Ok(Some(m)) = d.next_message() {
                    got.push(String::from_utf8(m.payload).unwrap_or_default());
                }
            }
            prop_assert_eq!(got, payloads);
            prop_assert_eq!(d.pending(), 0);
        }
    }
}
