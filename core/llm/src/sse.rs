//! Incremental server-sent-events framing.
//!
//! [`SseFramer`] takes the body of a streaming answer in whatever pieces the network delivers and
//! yields whole events, each with its raw bytes (to forward unchanged) and its `data` payload.
//! Bytes are buffered only until the end of the current event, so a split anywhere — inside a
//! line, a `\r\n`, or a multi-byte UTF-8 character — gives the same events as the whole input.

use bytes::{Bytes, BytesMut};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event exactly as received, including its terminating blank line.
    pub raw: Bytes,
    /// The `data:` lines joined with `\n` (empty for comment-only events).
    pub data: String,
    /// The `event:` field, if any.
    pub event: Option<String>,
}

/// Splits a byte stream into events.
#[derive(Debug, Default)]
pub struct SseFramer {
    buf: BytesMut,
    /// Where to resume looking for the end of the event.
    scanned: usize,
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if one has fully arrived.
    pub fn next_event(&mut self) -> Option<Event> {
        let Some(end) = find_event_end(&self.buf, self.scanned.saturating_sub(3)) else {
            self.scanned = self.buf.len();
            return None;
        };
        self.scanned = 0;
        let raw = self.buf.split_to(end).freeze();
        Some(parse_event(raw))
    }
}

/// Index just past the blank line ending the first event (`\n\n`, `\r\n\r\n`, `\r\r`, mixes).
fn find_event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let eol = match buf[i] {
            b'\n' => 1,
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            b'\r' if i + 1 < buf.len() => 1,
            b'\r' => return None, // may be the first half of \r\n
            _ => {
                i += 1;
                continue;
            }
        };
        let j = i + eol;
        match buf.get(j) {
            Some(b'\n') => return Some(j + 1),
            Some(b'\r') if buf.get(j + 1) == Some(&b'\n') => return Some(j + 2),
            Some(b'\r') if j + 1 < buf.len() => return Some(j + 1),
            Some(b'\r') | None => return None,
            Some(_) => i = j,
        }
    }
    None
}

fn parse_event(raw: Bytes) -> Event {
    let text = String::from_utf8_lossy(&raw);
    let mut data: Option<String> = None;
    let mut event = None;
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => event = Some(value.to_owned()),
            _ => {}
        }
    }
    Event {
        raw,
        data: data.unwrap_or_default(),
        event,
    }
}

/// Encodes one `data:` event.
pub fn data_event(data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 8);
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// Splits `bytes` at arbitrary points (for property tests of incremental parsers).
#[cfg(test)]
pub(crate) fn split_at<'a>(bytes: &'a [u8], cuts: &[proptest::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(points.len() + 1);
    let mut last = 0;
    for p in points {
        pieces.push(&bytes[last..p]);
        last = p;
    }
    pieces.push(&bytes[last..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_events(pieces: &[&[u8]]) -> Vec<Event> {
        let mut f = SseFramer::new();
        let mut out = Vec::new();
        for p in pieces {
            f.push(p);
            while let Some(e) = f.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn frames_events() {
        let input =
            b"data: {\"a\":1}\n\n: comment\n\nevent: x\ndata: l1\ndata: l2\r\n\r\ndata: [DONE]\n\n";
        let ev = all_events(&[input]);
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "");
        assert_eq!(ev[2].data, "l1\nl2");
        assert_eq!(ev[2].event.as_deref(), Some("x"));
        assert_eq!(ev[3].data, "[DONE]");
        let raw: Vec<u8> = ev.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(raw, input.to_vec());
    }

    #[test]
    fn waits_for_the_blank_line() {
        let mut f = SseFramer::new();
        f.push(b"data: a\n");
        assert!(f.next_event().is_none());
        f.push(b"\r");
        assert!(f.next_event().is_none());
        f.push(b"\n");
        assert_eq!(f.next_event().unwrap().data, "a");
    }

    #[test]
    fn data_event_round_trips() {
        let ev = all_events(&[&data_event("x\ny")]);
        assert_eq!(ev[0].data, "x\ny");
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            datas in proptest::collection::vec("[a-zé€😀 {}:\"]{0,12}", 1..6),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let input: String = datas.iter().map(|d| format!("data: {d}{nl}{nl}")).collect();
            let bytes = input.as_bytes();
            let pieces = crate::sse::split_at(bytes, &cuts);
            let got: Vec<String> = all_events(&pieces).into_iter().map(|e| e.data).collect();
            prop_assert_eq!(got, datas);
        }
    }
}
