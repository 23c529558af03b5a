//! The accounting side of relaying an OpenAI-format stream, as a push-based state machine.
//!
//! The I/O (reading the upstream, writing to the client, calling policies) belongs to whoever
//! drives it — the host's tokio task today, an edge app tomorrow; this type only turns bytes
//! into events to forward and keeps what the gateway must know at the end: the final usage, the
//! model, and whether the stream really completed (`[DONE]`).

use bytes::Bytes;

use crate::sse::SseFramer;
use crate::usage::{self, Usage};

/// One event to hand on, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// A `chat.completion.chunk` (or other data event): policies may inspect or replace it.
    Chunk { data: String, raw: Bytes },
    /// The terminating `data: [DONE]` event.
    Done(Bytes),
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `[DONE]` arrived.
    Complete,
    /// The upstream body ended cleanly but without `[DONE]`.
    Incomplete,
}

/// Frames a stream and keeps its usage.
#[derive(Debug)]
pub struct StreamRelay {
    framer: SseFramer,
    client_wants_usage: bool,
    usage: Option<Usage>,
    model: Option<String>,
    done: bool,
}

impl StreamRelay {
    /// `client_wants_usage`: the client asked for `stream_options.include_usage` itself; if not,
    /// the usage-only chunk the gateway asked for is kept from it.
    pub fn new(client_wants_usage: bool) -> Self {
        Self {
            framer: SseFramer::new(),
            client_wants_usage,
            usage: None,
            model: None,
            done: false,
        }
    }

    /// Feeds received bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<RelayEvent> {
        self.framer.push(bytes);
        let mut out = Vec::new();
        while let Some(event) = self.framer.next_event() {
            if event.data.is_empty() {
                continue;
            }
            if event.data == "[DONE]" {
                self.done = true;
                out.push(RelayEvent::Done(event.raw));
                continue;
            }
            // At most one parse per event, and none for content chunks once the model is known:
            // with usage asked for, those carry `"usage":null`; only the last one has usage.
            let may_have_usage =
                event.data.contains("\"usage\"") && !event.data.contains("\"usage\":null");
            if self.model.is_none() || may_have_usage {
                let summary = usage::summary(event.data.as_bytes());
                if summary.usage.is_some() {
                    self.usage = summary.usage;
                }
                if summary.model.is_some() {
                    self.model = summary.model;
                }
                if summary.usage_only && !self.client_wants_usage {
                    continue;
                }
            }
            out.push(RelayEvent::Chunk {
                data: event.data,
                raw: event.raw,
            });
        }
        out
    }

    /// The usage reported so far (the final usage once the stream completed).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The model the upstream reported.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether `[DONE]` has arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How the stream ended, once the upstream body has ended without an error.
    pub fn ending(&self) -> Ending {
        if self.done {
            Ending::Complete
        } else {
            Ending::Incomplete
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = concat!(
        "data: {\"model\":\"m1\",\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
        ": keep-alive\n\n",
        "data: {\"model\":\"m1\",\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":null}\n\n",
        "data: {\"model\":\"m1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(relay: &mut StreamRelay, pieces: &[&[u8]]) -> Vec<RelayEvent> {
        pieces.iter().flat_map(|p| relay.push(p)).collect()
    }

    #[test]
    fn keeps_usage_and_hides_the_chunk_the_client_did_not_ask_for() {
        let mut relay = StreamRelay::new(false);
        let events = run(&mut relay, &[STREAM.as_bytes()]);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(events[2], RelayEvent::Done(_)));
        assert_eq!(relay.usage().map(|u| u.total_tokens), Some(5));
        assert_eq!(relay.model(), Some("m1"));
        assert_eq!(relay.ending(), Ending::Complete);
    }

    #[test]
    fn forwards_the_usage_chunk_when_asked() {
        let mut relay = StreamRelay::new(true);
        let events = run(&mut relay, &[STREAM.as_bytes()]);
        assert_eq!(events.len(), 4);
    }

    #[test]
    fn a_stream_without_done_is_incomplete() {
        let mut relay = StreamRelay::new(false);
        let cut = &STREAM[..STREAM
            .find("data: {\"model\":\"m1\",\"choices\":[]")
            .unwrap()];
        run(&mut relay, &[cut.as_bytes()]);
        assert_eq!(relay.ending(), Ending::Incomplete);
        assert_eq!(relay.usage(), None);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events_and_usage(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let bytes = STREAM.as_bytes();
            let pieces = crate::sse::split_at(bytes, &cuts);
            let mut relay = StreamRelay::new(false);
            let events = run(&mut relay, &pieces);
            let mut whole = StreamRelay::new(false);
            prop_assert_eq!(events, run(&mut whole, &[bytes]));
            prop_assert_eq!(relay.usage(), whole.usage());
        }
    }
}
