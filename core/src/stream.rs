//! Relaying a streamed (SSE) answer event by event, whoever does the I/O.
//!
//! The driver feeds the upstream bytes as they arrive to [`StreamSession::push`] and sends what
//! it returns to the client; when the upstream ends (or breaks off, or stalls) it calls
//! [`StreamSession::finish`], which returns a final error event if the stream did not complete
//! and then runs on-complete and records the usage. The driver keeps pushing after the client
//! went away (`client_gone`), so the usage of the final chunk is never lost.

use bytes::Bytes;

use weir_llm::relay::{Ending, RelayEvent, StreamRelay};
use weir_llm::sse::data_event;
use weir_llm::translate::StreamDecoder;
use weir_llm::translate::anthropic::inbound::StreamEncoder;

use crate::{Call, Chain, ChunkDecision, End, Host, Outcome, Phase, Wire};

/// How the upstream body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ended cleanly (with or without `[DONE]`; the session checks).
    Ended,
    /// The connection broke off.
    Cut,
    /// No bytes for longer than the provider's timeout.
    Stalled,
}

/// One streamed answer in flight.
#[allow(
    missing_debug_implementations,
    reason = "holds the host and the chain, which need not be Debug"
)]
pub struct StreamSession<H: Host, C> {
    call: Call<H>,
    chain: C,
    relay: StreamRelay,
    index: u32,
    aborted: bool,
    ttft_ms: Option<u64>,
    wants_chunks: bool,
    /// Native stream to OpenAI chunks, for providers whose streams are not OpenAI's.
    decoder: Option<StreamDecoder>,
    /// OpenAI chunks to Anthropic events, for `/v1/messages` clients.
    encoder: Option<StreamEncoder>,
}

impl<H: Host, C: Chain> StreamSession<H, C> {
    pub(crate) fn new(call: Call<H>, chain: C) -> Self {
        let wants_chunks = chain.has_phase(Phase::StreamChunk);
        let model = call.llm.model.clone().unwrap_or_default();
        let created = call.host.now_ms() / 1000;
        let decoder = StreamDecoder::new(call.provider.dialect, created, &model);
        let encoder = (call.endpoint.wire() == Wire::Anthropic)
            .then(|| StreamEncoder::new(&model, &call.request_id));
        Self {
            relay: StreamRelay::new(call.llm.client_wants_stream_usage),
            call,
            chain,
            index: 0,
            aborted: false,
            ttft_ms: None,
            wants_chunks,
            decoder,
            encoder,
        }
    }

    fn error_event(&mut self, status: u16, code: &str, message: &str) -> Bytes {
        if let Some(enc) = &mut self.encoder {
            return Bytes::from(enc.error_event(status, message));
        }
        let body =
            weir_llm::error::openai_error(status, code, message, None, &self.call.request_id);
        data_event(&String::from_utf8_lossy(&body))
    }

    /// A chunk to send: as it came, or in the client's format.
    fn emit(&mut self, out: &mut Vec<Bytes>, data: &str, raw: Bytes) {
        match &mut self.encoder {
            Some(enc) => {
                let b = enc.chunk(data);
                if !b.is_empty() {
                    out.push(Bytes::from(b));
                }
            }
            None => out.push(raw),
        }
    }

    /// The request id (for logs).
    pub fn request_id(&self) -> &str {
        &self.call.request_id
    }

    /// The provider's timeout: how long the driver waits for the next bytes.
    pub fn timeout_ms(&self) -> u64 {
        self.call.provider.timeout_ms
    }

    /// Feeds bytes received from the upstream; returns the bytes to send to the client, in order.
    pub async fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let events = match &mut self.decoder {
            Some(d) => {
                let decoded = d.push(bytes);
                self.relay.push(&decoded)
            }
            None => self.relay.push(bytes),
        };
        for event in events {
            if self.ttft_ms.is_none() {
                self.ttft_ms = Some(
                    self.call
                        .host
                        .monotonic_ms()
                        .saturating_sub(self.call.started_ms),
                );
            }
            if self.aborted {
                // Keep reading for the usage, but send nothing more.
                continue;
            }
            let (data, raw) = match event {
                RelayEvent::Done(raw) => {
                    match &mut self.encoder {
                        Some(enc) => {
                            let u = self.relay.usage().unwrap_or_default();
                            out.push(Bytes::from(enc.done(
                                u.prompt_tokens,
                                u.completion_tokens,
                                u.cached_prompt_tokens,
                            )));
                        }
                        None => out.push(raw),
                    }
                    continue;
                }
                RelayEvent::Chunk { data, raw } => (data, raw),
            };
            if !self.wants_chunks {
                self.emit(&mut out, &data, raw);
                continue;
            }
            match self.chain.on_stream_chunk(self.index, data.clone()).await {
                Ok(ChunkDecision::Send(new)) if new == data => self.emit(&mut out, &data, raw),
                Ok(ChunkDecision::Send(new)) => {
                    let raw = data_event(&new);
                    self.emit(&mut out, &new, raw);
                }
                Ok(ChunkDecision::Drop) => {}
                Ok(ChunkDecision::Abort { denial, .. }) => {
                    let e = self.error_event(denial.status, &denial.code, &denial.message);
                    out.push(e);
                    self.aborted = true;
                }
                Err(e) => {
                    self.call.host.warn(
                        &self.call.request_id,
                        &format!("policy failed on a stream chunk: {e}"),
                    );
                    let ev = self.error_event(500, e.code, &e.message);
                    out.push(ev);
                    self.aborted = true;
                }
            }
            self.index = self.index.saturating_add(1);
        }
        out
    }

    /// The last bytes to send (an error event if the stream did not complete), if any. Call
    /// [`StreamSession::settle`] after sending them (and after closing the client's stream, so the
    /// client does not wait on the policies).
    pub fn closing(&mut self, end: StreamEnd) -> Option<Bytes> {
        let (code, message) = self.failure(end)?;
        Some(self.error_event(502, code, &message))
    }

    fn failure(&self, end: StreamEnd) -> Option<(&'static str, String)> {
        match end {
            StreamEnd::Cut => Some((
                "upstream_stream_cut",
                "The upstream stream broke off before the answer was complete.".into(),
            )),
            StreamEnd::Stalled => Some((
                "upstream_timeout",
                format!(
                    "The upstream stream stalled for {} ms.",
                    self.call.provider.timeout_ms
                ),
            )),
            StreamEnd::Ended if self.relay.ending() == Ending::Incomplete => Some((
                "upstream_stream_incomplete",
                "The upstream stream ended without completing the answer.".into(),
            )),
            StreamEnd::Ended => None,
        }
    }

    /// Runs on-complete and records the usage: exactly once per streamed request.
    pub async fn settle(mut self, end: StreamEnd, client_gone: bool) {
        let error = self.failure(end).map(|(code, _)| code);
        let failed = error.is_some();
        let outcome = if failed {
            Outcome::UpstreamError
        } else if self.aborted {
            Outcome::Denied
        } else if client_gone {
            Outcome::ClientCancelled
        } else {
            Outcome::Success
        };
        let status = if failed { 502 } else { 200 };
        let usage = self.relay.usage();
        let model = self.relay.model().map(str::to_owned);
        self.call
            .finish(
                &mut self.chain,
                End {
                    status,
                    outcome,
                    error,
                },
                usage,
                model,
                self.ttft_ms,
            )
            .await;
    }
}
