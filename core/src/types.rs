//! The data the loop and the policy chains exchange, independent of any WebAssembly runtime.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The phases a policy can take part in (mirrors `weir:policy/types.phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Request,
    Response,
    StreamChunk,
    Complete,
}

impl Phase {
    /// The WIT function of the phase, for messages.
    pub const fn function(self) -> &'static str {
        match self {
            Self::Request => "on-request",
            Self::Response => "on-response",
            Self::StreamChunk => "on-stream-chunk",
            Self::Complete => "on-complete",
        }
    }
}

/// How a request ended (mirrors `weir:policy/types.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    UpstreamError,
    Denied,
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

/// A complete response from a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Changes a policy asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    pub set_headers: Headers,
    pub remove_headers: Vec<String>,
    pub body: Option<Vec<u8>>,
}

/// A policy's verdict on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue(Edits),
    Deny(Denial),
    Respond(Reply),
}

/// A policy's verdict on one streamed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkVerdict {
    Pass,
    Replace(String),
    Drop,
    Abort(Denial),
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

    /// Applies a policy's edits.
    pub fn apply(&mut self, edits: Edits) {
        if !edits.remove_headers.is_empty() {
            self.headers.retain(|(n, _)| {
                !edits
                    .remove_headers
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(n))
            });
        }
        for (name, value) in edits.set_headers {
            let name = name.to_ascii_lowercase();
            self.headers.retain(|(n, _)| *n != name);
            self.headers.push((name, value));
        }
        if let Some(body) = edits.body {
            self.body = Bytes::from(body);
        }
    }
}

/// The outcome of a request or response phase over the whole chain.
#[derive(Debug)]
pub enum Decision {
    /// Go on with this (possibly edited) message.
    Continue(MessageView),
    /// A policy refused.
    Deny { policy: String, denial: Denial },
    /// A policy answered.
    Respond { policy: String, reply: Reply },
}

/// The outcome of the stream-chunk phase for one event over the whole chain.
#[derive(Debug)]
pub enum ChunkDecision {
    /// Send this payload (possibly replaced).
    Send(String),
    /// Send nothing for this event.
    Drop,
    /// End the stream with this error.
    Abort { policy: String, denial: Denial },
}

/// The final summary given to on-complete.
#[derive(Debug, Clone)]
pub struct CompletionInfo {
    pub status: u16,
    pub outcome: Outcome,
    pub model: Option<String>,
    pub usage: Option<weir_llm::Usage>,
    pub latency_ms: u64,
}

/// A policy that failed while handling a request (trap, timeout, memory limit...). Rendered as
/// a 500 naming the policy instance; never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyFault {
    /// A stable code for the client, e.g. `policy_trapped`.
    pub code: &'static str,
    /// e.g. "policy `auth` (demo/auth#0) failed in on-request: trapped: unreachable".
    pub message: String,
}

/// One request's usage, written once per request that reached a proxy.
#[derive(Debug, Clone, Serialize)]
pub struct UsageRecord {
    pub timestamp_ms: u64,
    pub request_id: String,
    pub proxy: String,
    pub provider: String,
    pub endpoint: String,
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
    /// From sending the request upstream to its response headers; none when it was not sent.
    pub upstream_latency_ms: Option<u64>,
    /// The error code when the gateway reported a failure (`upstream_timeout`...).
    pub error: Option<&'static str>,
    /// What the tokens cost in US dollars, from the price table; none when the model has no
    /// price or no usage was reported.
    pub cost_usd: Option<f64>,
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
        m.apply(Edits {
            set_headers: vec![("X-A".into(), "2".into())],
            remove_headers: vec!["Authorization".into()],
            body: Some(b"new".to_vec()),
        });
        assert_eq!(m.headers, vec![("x-a".to_owned(), "2".to_owned())]);
        assert_eq!(m.header("X-A"), Some("2"));
        assert_eq!(&m.body[..], b"new");
    }
}
