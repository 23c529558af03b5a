//! The data the loop and the policy chains exchange, independent of any WebAssembly runtime.
//! These mirror `weir:policy/types@0.2.0` (`wit/policy-0.2/types.wit`); each runner converts
//! its bindings to and from them.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use weir_llm::view::{ChatMessage, ContentPart, LlmEdit};

/// The phases a policy can take part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Request,
    Response,
    StreamChunk,
    StreamEnd,
    Complete,
}

impl Phase {
    /// The WIT function of the phase, for messages.
    pub const fn function(self) -> &'static str {
        match self {
            Self::Request => "on-request",
            Self::Response => "on-response",
            Self::StreamChunk => "on-stream-chunk",
            Self::StreamEnd => "on-stream-end",
            Self::Complete => "on-complete",
        }
    }

    /// The phases that can come after this one in a request.
    pub const fn later(self) -> &'static [Phase] {
        match self {
            Self::Request => &[
                Self::Response,
                Self::StreamChunk,
                Self::StreamEnd,
                Self::Complete,
            ],
            Self::Response | Self::StreamChunk | Self::StreamEnd => {
                &[Self::StreamChunk, Self::StreamEnd, Self::Complete]
            }
            Self::Complete => &[],
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    UpstreamError,
    Denied,
    /// A policy answered (`answer` or `respond`): the upstream was not called.
    Answered,
    ClientCancelled,
    GatewayError,
}

impl Outcome {
    /// The name used in usage records and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::UpstreamError => "upstream_error",
            Self::Denied => "denied",
            Self::Answered => "answered",
            Self::ClientCancelled => "client_cancelled",
            Self::GatewayError => "gateway_error",
        }
    }
}

/// How a request ended: its status, outcome and, for failures the gateway reports, the error
/// code (`upstream_timeout`, `policy_trapped`...). Feeds on-complete, the usage record and the
/// error metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    pub status: u16,
    pub outcome: Outcome,
    pub error: Option<&'static str>,
}

impl End {
    /// An end without an error code (success, denial, client gone).
    pub const fn new(status: u16, outcome: Outcome) -> Self {
        Self {
            status,
            outcome,
            error: None,
        }
    }

    /// A failure with its error code.
    pub const fn failed(status: u16, outcome: Outcome, error: &'static str) -> Self {
        Self {
            status,
            outcome,
            error: Some(error),
        }
    }
}

/// The kind of route a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    Llm,
    Mcp,
}

/// Header fields as (lower-case name, value) pairs.
pub type Headers = Vec<(String, String)>;

/// A policy's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub headers: Headers,
}

/// A complete HTTP response from a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// An LLM answer from a policy (e.g. a cache hit): an OpenAI `chat.completion` JSON object,
/// rendered by the loop in the client's format, as a stream if the client asked for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAnswer {
    pub completion: String,
    pub headers: Headers,
}

/// An upstream a policy chose: a configured provider and, optionally, the model to ask it for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub provider: String,
    pub model: Option<String>,
}

/// Changes a policy asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    pub set_headers: Headers,
    pub remove_headers: Vec<String>,
    pub body: Option<Vec<u8>>,
    /// Structured changes to the LLM request or answer, applied after `body`.
    pub llm: Vec<LlmEdit>,
    /// The upstream targets to try, in order (on-request; empty: no change).
    pub targets: Vec<Target>,
}

/// A policy's verdict on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue(Edits),
    Deny(Denial),
    Respond(Reply),
    Answer(PolicyAnswer),
}

/// One event of a streaming answer as a policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// 0 for the first event the policy sees.
    pub index: u32,
    /// One JSON `chat.completion.chunk`.
    pub data: String,
    /// `choices[0].delta.content`, if any.
    pub text: Option<String>,
    /// `choices[0].finish_reason`, if any.
    pub finish_reason: Option<String>,
}

/// An event a policy sends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emission {
    /// The current event with its delta text replaced (or a new content event with it).
    Text(String),
    /// An event of the policy's own (a JSON chunk).
    Data(String),
}

/// A policy's verdict on one streamed event (or at the end of the stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkVerdict {
    Pass,
    /// Send these instead (empty: hold back or drop).
    Emit(Vec<Emission>),
    Abort(Denial),
}

/// One try of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub provider: String,
    pub model: Option<String>,
    /// The HTTP status it answered with; none when no answer came.
    pub status: Option<u16>,
    /// The error code when the attempt failed.
    pub error: Option<&'static str>,
    pub latency_ms: u64,
    /// Whether the upstream may have billed it.
    pub billed: bool,
}

/// The final summary given to on-complete.
#[derive(Debug, Clone)]
pub struct CompletionInfo {
    pub status: u16,
    pub outcome: Outcome,
    pub error: Option<&'static str>,
    pub model: Option<String>,
    pub usage: Option<weir_llm::Usage>,
    pub latency_ms: u64,
    pub attempts: Vec<Attempt>,
}

/// What a request's policies share: the context resource's state.
#[derive(Debug, Clone)]
pub struct RequestState {
    pub request_id: String,
    pub route: String,
    pub route_kind: RouteKind,
    pub endpoint: String,
    pub consumer: Option<String>,
    pub attributes: HashMap<String, String>,
    pub llm: Option<weir_llm::LlmRequestInfo>,
    pub received_at_ms: u64,
}

impl RequestState {
    /// A state for calls outside a request (e.g. `validate-config`).
    pub fn detached() -> Self {
        Self {
            request_id: String::new(),
            route: String::new(),
            route_kind: RouteKind::Llm,
            endpoint: String::new(),
            consumer: None,
            attributes: HashMap::new(),
            llm: None,
            received_at_ms: 0,
        }
    }

    /// Most attributes one request may carry (a policy that sets more fails).
    pub const MAX_ATTRIBUTES: usize = 256;
}

/// An HTTP message as policies see it (header names lower-case).
#[derive(Debug, Clone, Default)]
pub struct MessageView {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub headers: Headers,
    pub body: Bytes,
}

impl MessageView {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Applies the header and body edits (the LLM edits need the loop: see `chain`).
    pub fn apply(&mut self, edits: &mut Edits) {
        if !edits.remove_headers.is_empty() {
            self.headers.retain(|(n, _)| {
                !edits
                    .remove_headers
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(n))
            });
        }
        for (name, value) in std::mem::take(&mut edits.set_headers) {
            let name = name.to_ascii_lowercase();
            self.headers.retain(|(n, _)| *n != name);
            self.headers.push((name, value));
        }
        if let Some(body) = edits.body.take() {
            self.body = Bytes::from(body);
        }
    }
}

/// A policy that failed while handling a request (trap, timeout, memory limit, an edit that
/// cannot be applied...). Rendered as a 500 naming the policy instance; never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyFault {
    /// A stable code for the client, e.g. `policy_trapped`.
    pub code: &'static str,
    /// e.g. "policy `auth` (demo/auth) failed in on-request: trapped: unreachable".
    pub message: String,
}

/// One request's usage, written once per request that reached a proxy.
#[derive(Debug, Clone, Serialize)]
pub struct UsageRecord {
    pub timestamp_ms: u64,
    pub request_id: String,
    pub proxy: String,
    /// The provider that answered (the last one tried); empty when none was called.
    pub provider: String,
    pub endpoint: String,
    /// MCP `tools/call`: the tool called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub consumer: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub outcome: &'static str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub latency_ms: u64,
    pub time_to_first_token_ms: Option<u64>,
    /// From sending the request upstream to its response headers (the last attempt); none when
    /// it was not sent.
    pub upstream_latency_ms: Option<u64>,
    /// The error code when the gateway reported a failure (`upstream_timeout`...).
    pub error: Option<&'static str>,
    /// What the tokens cost in US dollars, from the price table; none when the model has no
    /// price or no usage was reported.
    pub cost_usd: Option<f64>,
    /// Every upstream attempt, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// What policies flagged in this request (`guardrail.injection`, `pii.email`), from the
    /// request attribute [`FLAGS_ATTRIBUTE`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// What a cache policy did (from the request attribute [`CACHE_ATTRIBUTE`]); on a hit,
    /// what it saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheRecord>,
}

/// The request attribute a cache policy writes its lookups to: space-separated
/// `<layer>:<result>[:<similarity>]` tokens, layer `exact` or `semantic`, result `hit`, `miss`,
/// `bypass` (the client's `cache-control`), `skip` (the request is not eligible) or `error` (the
/// lookup failed; the request went on uncached). The gateway turns it into the `x-weir-cache`
/// response header, [`UsageRecord::cache`] and the `weir_cache_requests_total` metric.
pub const CACHE_ATTRIBUTE: &str = "usage.cache";

/// One lookup of a cache layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheLookup {
    pub layer: &'static str,
    pub result: &'static str,
    /// The cosine similarity of a semantic hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

/// The cache part of a usage record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheRecord {
    /// `hit`, `miss` or `bypass`: the `x-weir-cache` header's value.
    pub result: &'static str,
    pub lookups: Vec<CacheLookup>,
    /// On a hit: the tokens the stored answer cost when it was made, saved this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_tokens: Option<u64>,
    /// On a hit: what those tokens would have cost, from the price table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_cost_usd: Option<f64>,
}

impl CacheRecord {
    /// Reads a [`CACHE_ATTRIBUTE`] value; `None` when it holds no valid lookup.
    pub fn parse(value: &str) -> Option<CacheRecord> {
        let mut lookups = Vec::new();
        for token in value.split_ascii_whitespace().take(4) {
            let mut parts = token.split(':');
            let layer = match parts.next() {
                Some("exact") => "exact",
                Some("semantic") => "semantic",
                _ => continue,
            };
            let result = match parts.next() {
                Some("hit") => "hit",
                Some("miss") => "miss",
                Some("bypass") => "bypass",
                Some("skip") => "skip",
                Some("error") => "error",
                _ => continue,
            };
            let similarity = parts
                .next()
                .and_then(|s| s.parse::<f32>().ok())
                .filter(|s| s.is_finite() && (-1.0..=1.0).contains(s));
            lookups.push(CacheLookup {
                layer,
                result,
                similarity,
            });
        }
        if lookups.is_empty() {
            return None;
        }
        let result = if lookups.iter().any(|l| l.result == "hit") {
            "hit"
        } else if lookups.iter().any(|l| l.result == "bypass") {
            "bypass"
        } else {
            "miss"
        };
        Some(CacheRecord {
            result,
            lookups,
            saved_tokens: None,
            saved_cost_usd: None,
        })
    }

    /// The response headers that say what the cache did (`x-weir-cache`, and the similarity
    /// of a semantic hit).
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out = vec![("x-weir-cache".to_owned(), self.result.to_owned())];
        if let Some(s) = self.lookups.iter().find_map(|l| l.similarity) {
            out.push(("x-weir-cache-similarity".to_owned(), format!("{s:.4}")));
        }
        out
    }
}

/// The request attribute policies append their flags to (space-separated `policy.name` tokens),
/// copied into the usage record. Tokens are limited to `[a-z0-9._:-]`, at most 64 bytes each
/// and [`MAX_FLAGS`] per request, so a flag can name a rule or an entity type but never carry
/// text from the request.
pub const FLAGS_ATTRIBUTE: &str = "usage.flags";

/// Most flags one usage record keeps.
pub const MAX_FLAGS: usize = 32;

/// The flags of a [`FLAGS_ATTRIBUTE`] value: valid tokens, in order, without duplicates.
pub fn parse_flags(value: &str) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    for token in value.split_ascii_whitespace() {
        let valid = token.len() <= 64
            && token
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:-".contains(&b));
        if valid && !flags.iter().any(|f| f == token) {
            flags.push(token.to_owned());
            if flags.len() == MAX_FLAGS {
                break;
            }
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_replace_remove_and_lowercase() {
        let mut m = MessageView {
            headers: vec![
                ("authorization".into(), "Bearer x".into()),
                ("x-a".into(), "1".into()),
            ],
            ..Default::default()
        };
        m.apply(&mut Edits {
            set_headers: vec![("X-A".into(), "2".into())],
            remove_headers: vec!["Authorization".into()],
            body: Some(b"new".to_vec()),
            ..Default::default()
        });
        assert_eq!(m.headers, vec![("x-a".to_owned(), "2".to_owned())]);
        assert_eq!(m.header("X-A"), Some("2"));
        assert_eq!(&m.body[..], b"new");
    }
}
