//! Relaying a streamed answer event by event, whoever does the I/O.
//!
//! The driver feeds the body's bytes as they arrive to [`StreamSession::push`] and sends what it
//! returns to the client; when the body ends (or breaks off, or stalls) it calls
//! [`StreamSession::closing`] for the last bytes, closes the client's stream, then
//! [`StreamSession::settle`], which runs on-complete and records the usage. The driver keeps
//! pushing after the client went away, so the usage of the final chunk is never lost.
//!
//! With stream policies the events go through a pipeline, one policy after the other in reverse
//! chain order: each may pass an event, hold it back, emit several events for it, rewrite its
//! text or abort the stream; what it sends goes on to the policy before it. When the answer's
//! content is complete (before the chunk carrying a `finish_reason`, or at the end) each policy's
//! on-stream-end may emit what it held back, before anything finishes the client's stream.

use bytes::Bytes;

use weir_llm::relay::{Ending, RelayEvent, StreamRelay};
use weir_llm::sse::data_event;
use weir_llm::translate::StreamDecoder;
use weir_llm::translate::anthropic::inbound::StreamEncoder;

use crate::call::{Call, Settlement};
use crate::chain::Chain;
use crate::types::{ChunkVerdict, Denial, Emission, End, Outcome, Phase, StreamEvent};
use crate::{Platform, Wire};

/// The body of a streamed answer.
#[derive(Debug)]
pub enum StreamBody<B> {
    /// The upstream's body, read as it arrives.
    Upstream(B),
    /// An answer the gateway already has (a policy's answer): push it at once.
    Ready(Bytes),
}

/// How the upstream body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ended cleanly (with or without `[DONE]`; the session checks).
    Ended,
    /// The connection broke off.
    Cut,
    /// No bytes for longer than the upstream's timeout.
    Stalled,
}

/// What the session makes of the bytes.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per stream, never moved after the session starts"
)]
pub enum SessionKind {
    /// An LLM answer: OpenAI chunks (decoded from the provider's format if needed), policies,
    /// then the client's format.
    Llm {
        relay: StreamRelay,
        decoder: Option<StreamDecoder>,
        encoder: Option<StreamEncoder>,
        /// A policy's answer: recorded as `answered`, with no upstream usage.
        answered: bool,
    },
    /// Bytes relayed as they are (MCP server streams), or event by event with the answer given
    /// back its client's id and, for a client of the stateless revision, that revision's fields
    /// (an upstream session the gateway shares: the era bridge, several servers).
    Raw(Option<crate::mcp_bridge::AnswerRewrite>),
}

impl SessionKind {
    pub(crate) fn llm<P: Platform, B>(
        call: &Call<P>,
        body: &StreamBody<B>,
        answered: bool,
    ) -> Self {
        let model = call.llm.model.clone().unwrap_or_default();
        let created = call.platform.now_ms() / 1000;
        let decoder = match (body, &call.upstream) {
            (StreamBody::Upstream(_), Some(up)) => StreamDecoder::new(up.kind, created, &model),
            _ => None,
        };
        let encoder =
            (call.wire == Wire::Anthropic).then(|| StreamEncoder::new(&model, &call.request_id));
        Self::Llm {
            relay: StreamRelay::new(call.llm.client_wants_stream_usage),
            decoder,
            encoder,
            answered,
        }
    }
}

/// One streamed answer in flight.
#[allow(
    missing_debug_implementations,
    reason = "holds the platform and the chain, which need not be Debug"
)]
pub struct StreamSession<P: Platform, C> {
    call: Call<P>,
    chain: C,
    kind: SessionKind,
    /// Positions of the policies with stream phases, in the order events reach them.
    layers: Vec<usize>,
    /// Events each layer has seen (their `index`).
    seen: Vec<u32>,
    wants_end: bool,
    ended: bool,
    aborted: bool,
    /// The last upstream chunk: id, model and time for events policies add.
    envelope: Option<String>,
    ttft_ms: Option<u64>,
    /// On MCP routes: what to send the server when the client goes away mid-stream.
    cancel: Option<crate::UpstreamRequest>,
}

/// An event between two layers of the pipeline: its data, and its bytes as the upstream sent
/// them while no policy changed it.
struct Ev {
    data: String,
    raw: Option<Bytes>,
    /// The facts of `data`, once read (a policy that passes the event on leaves them true, so
    /// the next one does not parse the event again).
    facts: Option<weir_llm::view::ChunkFacts>,
}

impl<P: Platform, C: Chain> StreamSession<P, C> {
    /// A session over the policies before position `limit`.
    pub fn new(call: Call<P>, chain: C, limit: usize, kind: SessionKind) -> Self {
        let llm = matches!(kind, SessionKind::Llm { .. });
        let layers: Vec<usize> = (0..limit.min(chain.len()))
            .rev()
            .filter(|&i| {
                llm && (chain.wants(i, Phase::StreamChunk) || chain.wants(i, Phase::StreamEnd))
            })
            .collect();
        let wants_end = layers.iter().any(|&i| chain.wants(i, Phase::StreamEnd));
        Self {
            seen: vec![0; layers.len()],
            layers,
            wants_end,
            call,
            chain,
            kind,
            ended: false,
            aborted: false,
            envelope: None,
            ttft_ms: None,
            cancel: None,
        }
    }

    /// On MCP routes: the request (a `notifications/cancelled` for the call) that tells the
    /// server to stop when the client goes away mid-stream.
    pub fn cancel_on_client_gone(&mut self, request: crate::UpstreamRequest) {
        self.cancel = Some(request);
    }

    /// The client went away: tells the server to stop if there is a way. Returns whether the
    /// driver should drop the upstream stream instead of reading it to its end (an MCP tool
    /// call has no usage to wait for).
    pub async fn client_gone(&mut self) -> bool {
        let Some(request) = self.cancel.take() else {
            return false;
        };
        if let Ok(resp) = self.call.platform.send(request).await {
            let _ = self
                .call
                .platform
                .read_body(resp.body, 64 * 1024, 5_000)
                .await;
        }
        true
    }

    /// The request id (for logs).
    pub fn request_id(&self) -> &str {
        &self.call.request_id
    }

    /// The upstream's timeout: how long the driver waits for the next bytes.
    pub fn timeout_ms(&self) -> u64 {
        self.call.upstream.as_ref().map_or(60_000, |u| u.timeout_ms)
    }

    fn error_event(&mut self, status: u16, code: &str, message: &str) -> Bytes {
        if let SessionKind::Llm {
            encoder: Some(enc), ..
        } = &mut self.kind
        {
            return Bytes::from(enc.error_event(status, message));
        }
        let body = self
            .call
            .wire
            .error_body(status, code, message, None, &self.call.request_id);
        data_event(&String::from_utf8_lossy(&body))
    }

    /// An event to the client: as it came, or in the client's format.
    fn emit(&mut self, out: &mut Vec<Bytes>, ev: Ev) {
        if let SessionKind::Llm {
            encoder: Some(enc), ..
        } = &mut self.kind
        {
            let b = enc.chunk(&ev.data);
            if !b.is_empty() {
                out.push(Bytes::from(b));
            }
            return;
        }
        out.push(ev.raw.unwrap_or_else(|| data_event(&ev.data)));
    }

    /// Feeds bytes of the body; returns the bytes to send to the client, in order.
    pub async fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let events = match &mut self.kind {
            SessionKind::Raw(rewrite) => {
                if self.ttft_ms.is_none() {
                    self.ttft_ms = Some(self.call.latency_ms());
                }
                return match rewrite {
                    Some(m) => m.push(bytes),
                    None => vec![Bytes::copy_from_slice(bytes)],
                };
            }
            SessionKind::Llm { relay, decoder, .. } => match decoder {
                Some(d) => {
                    let decoded = d.push(bytes);
                    relay.push(&decoded)
                }
                None => relay.push(bytes),
            },
        };
        for event in events {
            if self.ttft_ms.is_none() {
                self.ttft_ms = Some(self.call.latency_ms());
            }
            if self.aborted {
                // Keep reading for the usage, but send nothing more.
                continue;
            }
            match event {
                RelayEvent::Done(raw) => {
                    self.end(&mut out).await;
                    if self.aborted {
                        continue;
                    }
                    self.done(&mut out, raw);
                }
                RelayEvent::Chunk { data, raw } => {
                    self.chunk(&mut out, data, raw).await;
                }
            }
        }
        out
    }

    fn done(&mut self, out: &mut Vec<Bytes>, raw: Bytes) {
        if let SessionKind::Llm {
            relay,
            encoder: Some(enc),
            ..
        } = &mut self.kind
        {
            let u = relay.usage().unwrap_or_default();
            out.push(Bytes::from(enc.done(
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_prompt_tokens,
            )));
        } else {
            out.push(raw);
        }
    }

    async fn chunk(&mut self, out: &mut Vec<Bytes>, data: String, raw: Bytes) {
        if self.layers.is_empty() {
            self.emit(
                out,
                Ev {
                    data,
                    raw: Some(raw),
                    facts: None,
                },
            );
            return;
        }
        // Read only when the end must be placed; otherwise the first policy that takes stream
        // events reads them (and none does when no policy takes them).
        let facts = (self.wants_end && !self.ended).then(|| weir_llm::view::chunk_facts(&data));
        let finishing = facts.as_ref().is_some_and(|f| f.finish_reason.is_some());
        self.envelope = Some(data.clone());
        if !finishing {
            self.pipeline(
                out,
                0,
                vec![Ev {
                    data,
                    raw: Some(raw),
                    facts,
                }],
            )
            .await;
            return;
        }
        // Text and finish in one chunk: the text goes first, then the end, then the finish.
        match weir_llm::view::split_finish(&data) {
            Some((text, finish)) => {
                self.pipeline(
                    out,
                    0,
                    vec![Ev {
                        data: text,
                        raw: None,
                        facts: None,
                    }],
                )
                .await;
                self.end(out).await;
                self.pipeline(
                    out,
                    0,
                    vec![Ev {
                        data: finish,
                        raw: None,
                        facts: None,
                    }],
                )
                .await;
            }
            None => {
                self.end(out).await;
                self.pipeline(
                    out,
                    0,
                    vec![Ev {
                        data,
                        raw: Some(raw),
                        facts,
                    }],
                )
                .await;
            }
        }
    }

    /// The events a policy emitted, as data: text replaces the delta of `current` (or makes a
    /// new content event).
    fn materialize(&self, current: Option<&str>, emitted: Vec<Emission>) -> Vec<Ev> {
        emitted
            .into_iter()
            .map(|e| {
                let data = match e {
                    Emission::Data(d) => d,
                    Emission::Text(t) => current
                        .and_then(|c| weir_llm::view::with_text(c, &t))
                        .unwrap_or_else(|| self.content_event(&t)),
                };
                Ev {
                    data,
                    raw: None,
                    facts: None,
                }
            })
            .collect()
    }

    fn content_event(&self, text: &str) -> String {
        let model = self.call.llm.model.clone().unwrap_or_default();
        weir_llm::view::content_chunk(
            self.envelope.as_deref(),
            &format!("chatcmpl-{}", self.call.request_id),
            &model,
            self.call.platform.now_ms() / 1000,
            text,
        )
    }

    /// Sends `events` through the layers from `from` on, then to the client.
    async fn pipeline(&mut self, out: &mut Vec<Bytes>, from: usize, mut events: Vec<Ev>) {
        for k in from..self.layers.len() {
            let i = self.layers[k];
            if !self.chain.wants(i, Phase::StreamChunk) {
                continue;
            }
            let mut next = Vec::with_capacity(events.len());
            for ev in events {
                let facts = ev
                    .facts
                    .unwrap_or_else(|| weir_llm::view::chunk_facts(&ev.data));
                let event = StreamEvent {
                    index: self.seen[k],
                    data: ev.data,
                    text: facts.text,
                    finish_reason: facts.finish_reason,
                };
                self.seen[k] = self.seen[k].saturating_add(1);
                match self.chain.on_stream_chunk(i, &event).await {
                    Ok(ChunkVerdict::Pass) => next.push(Ev {
                        data: event.data,
                        raw: ev.raw,
                        facts: Some(weir_llm::view::ChunkFacts {
                            text: event.text,
                            finish_reason: event.finish_reason,
                        }),
                    }),
                    Ok(ChunkVerdict::Emit(emitted)) => {
                        next.extend(self.materialize(Some(&event.data), emitted));
                    }
                    Ok(ChunkVerdict::Abort(denial)) => return self.abort(out, i, &denial),
                    Err(e) => return self.fail(out, &e),
                }
            }
            events = next;
        }
        for ev in events {
            self.emit(out, ev);
        }
    }

    fn abort(&mut self, out: &mut Vec<Bytes>, i: usize, denial: &Denial) {
        self.call
            .platform
            .denied(&self.call.route.name, self.chain.name(i), &denial.code);
        let e = self.error_event(denial.status, &denial.code, &denial.message);
        out.push(e);
        self.aborted = true;
    }

    fn fail(&mut self, out: &mut Vec<Bytes>, e: &crate::PolicyFault) {
        self.call.platform.warn(
            &self.call.request_id,
            &format!("policy failed on a stream: {e}"),
        );
        let ev = self.error_event(500, e.code, &e.message);
        out.push(ev);
        self.aborted = true;
    }

    /// on-stream-end of every stream policy, once: what each emits goes through the policies
    /// after it (in stream order), then to the client.
    async fn end(&mut self, out: &mut Vec<Bytes>) {
        if self.ended || !self.wants_end {
            self.ended = true;
            return;
        }
        self.ended = true;
        for k in 0..self.layers.len() {
            if self.aborted {
                return;
            }
            let i = self.layers[k];
            if !self.chain.wants(i, Phase::StreamEnd) {
                continue;
            }
            match self.chain.on_stream_end(i).await {
                Ok(ChunkVerdict::Pass) => {}
                Ok(ChunkVerdict::Emit(emitted)) => {
                    let events = self.materialize(None, emitted);
                    self.pipeline(out, k + 1, events).await;
                }
                Ok(ChunkVerdict::Abort(denial)) => return self.abort(out, i, &denial),
                Err(e) => return self.fail(out, &e),
            }
        }
    }

    /// The last bytes to send: what policies still hold, and an error event if the stream did
    /// not complete. Call [`StreamSession::settle`] after sending them (and after closing the
    /// client's stream, so the client does not wait on the policies).
    pub async fn closing(&mut self, end: StreamEnd) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let SessionKind::Raw(Some(m)) = &mut self.kind {
            out.extend(m.flush());
        }
        if !self.aborted {
            self.end(&mut out).await;
        }
        if !self.aborted
            && let Some((code, message)) = self.failure(end)
        {
            let e = self.error_event(502, code, &message);
            out.push(e);
        }
        out
    }

    fn failure(&self, end: StreamEnd) -> Option<(&'static str, String)> {
        match end {
            StreamEnd::Cut => Some((
                "upstream_stream_cut",
                "The upstream stream broke off before the answer was complete.".into(),
            )),
            StreamEnd::Stalled => Some((
                "upstream_timeout",
                format!("The upstream stream stalled for {} ms.", self.timeout_ms()),
            )),
            StreamEnd::Ended => match &self.kind {
                SessionKind::Llm { relay, .. } if relay.ending() == Ending::Incomplete => Some((
                    "upstream_stream_incomplete",
                    "The upstream stream ended without completing the answer.".into(),
                )),
                _ => None,
            },
        }
    }

    /// Runs on-complete and records the usage: exactly once per streamed request.
    pub async fn settle(mut self, end: StreamEnd, client_gone: bool) {
        let error = self.failure(end).map(|(code, _)| code);
        let (usage, model, answered) = match &self.kind {
            SessionKind::Llm {
                relay, answered, ..
            } => (relay.usage(), relay.model().map(str::to_owned), *answered),
            SessionKind::Raw(_) => (None, None, false),
        };
        let outcome = if error.is_some() {
            Outcome::UpstreamError
        } else if self.aborted {
            Outcome::Denied
        } else if client_gone {
            Outcome::ClientCancelled
        } else if answered {
            Outcome::Answered
        } else {
            Outcome::Success
        };
        let status = if error.is_some() { 502 } else { 200 };
        let settlement = Settlement {
            saved: if answered { usage } else { None },
            usage: if answered { None } else { usage },
            model,
            ttft_ms: self.ttft_ms,
        };
        self.call
            .finish(
                &mut self.chain,
                End {
                    status,
                    outcome,
                    error,
                },
                settlement,
            )
            .await;
    }
}
