//! What the loop needs from whoever runs it ([`Platform`]), and the requests and responses it
//! exchanges with it.

use std::future::Future;

use bytes::Bytes;

use crate::types::{Headers, UsageRecord};
use crate::{GatewayError, Wire};

/// A request to an upstream (a provider or an MCP server).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: &'static str,
    pub url: String,
    /// Includes the provider credential: never log these.
    pub headers: Headers,
    pub body: Bytes,
    pub timeout_ms: u64,
}

/// An upstream's answer, its body still to be read.
#[derive(Debug)]
pub struct UpstreamResponse<B> {
    pub status: u16,
    pub headers: Headers,
    pub body: B,
}

/// Why an upstream could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connection refused/reset, TLS or protocol failure: the detail (with its causes, for
    /// logs, never for clients).
    Unreachable(String),
    /// No answer within the upstream's timeout.
    Timeout,
    /// The answer's body is larger than the limit (`limits.max-response-bytes`, in bytes): it
    /// would be as large again, so it is never retried.
    TooLarge(usize),
}

/// What the loop needs from the platform it runs on: the `weir` server (hyper, tokio) or an
/// edge app (the `weir:edge/platform` interface).
pub trait Platform: Clone {
    /// A response body that has not been read yet.
    type Body;

    /// Sends a request upstream (the whole request; the body of the answer is read later).
    fn send(
        &self,
        request: UpstreamRequest,
    ) -> impl Future<Output = Result<UpstreamResponse<Self::Body>, UpstreamFailure>>;

    /// Reads a whole response body, at most `max` bytes.
    fn read_body(
        &self,
        body: Self::Body,
        max: usize,
        timeout_ms: u64,
    ) -> impl Future<Output = Result<Bytes, UpstreamFailure>>;

    /// Waits `ms` milliseconds (the backoff between two attempts).
    fn sleep(&self, ms: u64) -> impl Future<Output = ()>;

    /// Stores a usage record (and counts it in metrics).
    fn record(&self, record: UsageRecord);

    /// Counts a policy denial.
    fn denied(&self, route: &str, policy: &str, code: &str);

    /// Logs a warning about a request. Messages never contain secrets.
    fn warn(&self, request_id: &str, message: &str);

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// A monotonic clock in milliseconds, for latencies.
    fn monotonic_ms(&self) -> u64;

    /// Reads the gateway's own state (MCP sessions) from the platform's key-value store.
    fn state_get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, String>>;

    /// Writes the gateway's own state, expiring after `ttl_ms`.
    fn state_set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<(), String>>;

    /// Removes the gateway's own state.
    fn state_delete(&self, key: &str) -> impl Future<Output = Result<(), String>>;

    /// 16 bytes from a cryptographically secure source (`None`: the platform has none).
    fn random_bytes(&self) -> Option<[u8; 16]>;
}

/// A complete response to send to the client.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Bytes,
}

impl Response {
    /// A JSON response with the request id.
    pub fn json(status: u16, body: Vec<u8>, request_id: &str) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), request_id.into()),
            ],
            body: Bytes::from(body),
        }
    }

    /// The error response for `err` in the client's format: the one place where data-plane
    /// errors become responses.
    pub fn error(wire: Wire, err: &GatewayError, request_id: &str) -> Self {
        Self::json(err.status(), err.body_in(wire, request_id), request_id)
    }
}

/// A client request whose body has been read (within the limit).
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: Headers,
    pub body: Bytes,
}

/// Headers never forwarded between hops, or replaced by the gateway.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Request headers the gateway owns on the upstream side: client credentials never go upstream.
pub const CLIENT_SECRETS: &[&str] = &["authorization", "x-api-key", "api-key", "cookie"];

/// Whether an upstream response header is passed to the client.
pub fn keep_response_header(name: &str) -> bool {
    !(HOP_BY_HOP.contains(&name) || name == "set-cookie" || name == "x-request-id")
}
