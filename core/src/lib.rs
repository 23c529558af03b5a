//! The portable request loop of Weir.
//!
//! Everything between "an HTTP request arrived" and "the answer is sent and its usage recorded"
//! happens here, once: matching the route and endpoint, checking the body, running the policy
//! chain's phases, building the upstream request (key injection, no client credentials
//! forwarded, usage asked for on streams), mapping upstream failures, the response phases,
//! relaying streams event by event, on-complete and the usage record exactly once.
//!
//! It does no I/O of its own and needs no runtime: the caller supplies a [`Host`] (upstream
//! HTTP, clock, usage sink) and a [`Chain`] (the policy instances of one request). The `weir`
//! server drives it with hyper + wasmtime; the edge `gateway` component (components/gateway)
//! compiles the same code to WebAssembly and drives it with the platform's `fetch` and the
//! composed policy components.
#![forbid(unsafe_code)]

mod error;
pub mod plan;
mod serve;
mod stream;
mod types;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

pub use error::GatewayError;
pub use serve::{denial_response, denial_response_in, reply_response, serve};
pub use stream::{StreamEnd, StreamSession};
pub use types::*;

/// The endpoints of an LLM proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    /// Anthropic's Messages API, served in front of any provider (chat completions upstream).
    Messages,
}

impl Endpoint {
    /// The endpoint for a path below the proxy's context path.
    pub fn parse(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/completions" => Some(Self::Completions),
            "/v1/embeddings" => Some(Self::Embeddings),
            "/v1/models" => Some(Self::Models),
            "/v1/messages" => Some(Self::Messages),
            _ => None,
        }
    }

    /// The endpoint of a name as configuration uses them (`chat/completions`).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::ChatCompletions,
            Self::Completions,
            Self::Embeddings,
            Self::Models,
            Self::Messages,
        ]
        .into_iter()
        .find(|e| e.name() == name)
    }

    /// The name configuration and usage records use (`chat/completions`, `messages`).
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
            Self::Messages => "messages",
        }
    }

    /// The OpenAI endpoint that serves it upstream.
    pub fn upstream(self) -> Self {
        match self {
            Self::Messages => Self::ChatCompletions,
            e => e,
        }
    }

    /// Path of the OpenAI endpoint below an OpenAI provider's base URL.
    pub fn upstream_path(self) -> &'static str {
        self.upstream().name()
    }

    /// The API format the client speaks on this endpoint.
    pub fn wire(self) -> Wire {
        match self {
            Self::Messages => Wire::Anthropic,
            _ => Wire::Openai,
        }
    }

    /// The one method the endpoint accepts.
    pub fn method(self) -> &'static str {
        match self {
            Self::Models => "GET",
            _ => "POST",
        }
    }
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret itself; only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The API format a client speaks: errors, answers and streams are rendered in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Openai,
    Anthropic,
}

impl Wire {
    /// An error body in this format.
    pub fn error_body(
        self,
        status: u16,
        code: &str,
        message: &str,
        param: Option<&str>,
        request_id: &str,
    ) -> Vec<u8> {
        match self {
            Self::Openai => weir_llm::error::openai_error(status, code, message, param, request_id),
            Self::Anthropic => {
                weir_llm::translate::anthropic::inbound::error(status, message, request_id)
            }
        }
    }
}

/// A provider as the data plane uses it.
#[derive(Debug, Default)]
pub struct Provider {
    pub name: String,
    /// Base URL without a trailing slash: `https://api.openai.com/v1`,
    /// `https://api.anthropic.com/v1`, `https://bedrock-runtime.us-east-1.amazonaws.com`.
    pub base_url: String,
    /// The credential injected into upstream requests (for Bedrock, the secret access key).
    /// Never logged, never returned.
    pub api_key: Option<Secret>,
    /// Set when the provider needs a key from a variable that is not set (named in the error).
    pub missing_key_env: Option<String>,
    pub timeout_ms: u64,
    /// The provider's API family.
    pub dialect: weir_llm::Dialect,
    /// Azure: the `api-version` query parameter (the dialect's default when `None`).
    pub api_version: Option<String>,
    /// Azure OpenAI: the deployment of each model (the model's name when absent).
    pub deployments: Vec<(String, String)>,
    /// Bedrock: the signing region and access key id (the secret is `api_key`).
    pub aws: Option<AwsAuth>,
    /// Prices of the models, for the cost of each request.
    pub prices: Arc<weir_llm::price::PriceTable>,
}

/// How requests to Bedrock are signed.
#[derive(Debug, Clone)]
pub struct AwsAuth {
    pub region: String,
    pub access_key_id: String,
    pub session_token: Option<Secret>,
}

/// Body size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
}

/// The route a request matched.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub name: String,
    pub provider: Arc<Provider>,
    pub limits: Limits,
    /// The endpoints the route exposes (its provider's access control); all when `None`.
    pub exposed: Option<Vec<Endpoint>>,
}

/// Finds the route whose context path prefixes `path` (routes sorted longest prefix first);
/// returns it with the rest of the path.
pub fn find_route<'a, R>(
    routes: &'a [R],
    path: &'a str,
    prefix: impl Fn(&R) -> &str,
) -> Option<(&'a R, &'a str)> {
    routes.iter().find_map(|r| {
        let rest = path.strip_prefix(prefix(r))?;
        rest.starts_with('/').then_some((r, rest))
    })
}

/// Checks the endpoint and method of a request on a matched route.
pub fn endpoint(route: &str, rest: &str, method: &str) -> Result<Endpoint, GatewayError> {
    let Some(endpoint) = Endpoint::parse(rest) else {
        return Err(GatewayError::client(
            404,
            "unknown_endpoint",
            format!("Unknown endpoint `{rest}` on proxy `{route}`."),
        ));
    };
    if method != endpoint.method() {
        return Err(GatewayError::client(
            405,
            "method_not_allowed",
            format!("`{rest}` accepts {} only.", endpoint.method()),
        ));
    }
    Ok(endpoint)
}

/// The error for a path no proxy serves.
pub fn unknown_route(path: &str) -> GatewayError {
    GatewayError::client(404, "unknown_route", format!("No route for `{path}`."))
}

/// The error for a body over the limit.
pub fn too_large(max: usize) -> GatewayError {
    GatewayError::client(
        413,
        "request_too_large",
        format!("The request body exceeds the limit of {max} bytes."),
    )
}

/// The policies of one request.
pub trait Chain {
    /// on-request in chain order.
    fn on_request(
        &mut self,
        message: MessageView,
    ) -> impl Future<Output = Result<Decision, PolicyFault>>;
    /// on-response in reverse chain order.
    fn on_response(
        &mut self,
        message: MessageView,
    ) -> impl Future<Output = Result<Decision, PolicyFault>>;
    /// on-stream-chunk in reverse chain order, for one event.
    fn on_stream_chunk(
        &mut self,
        index: u32,
        data: String,
    ) -> impl Future<Output = Result<ChunkDecision, PolicyFault>>;
    /// on-complete in reverse chain order; failures are returned for logging only.
    fn on_complete(&mut self, info: &CompletionInfo) -> impl Future<Output = Vec<PolicyFault>>;
    /// Whether any policy takes part in `phase`.
    fn has_phase(&self, phase: Phase) -> bool;
    /// The consumer set by an authentication policy.
    fn consumer(&self) -> Option<String>;
}

/// A request to the provider.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: &'static str,
    pub url: String,
    /// Includes the provider credential: never log these.
    pub headers: Headers,
    pub body: Bytes,
    pub timeout_ms: u64,
}

/// The provider's answer, its body still to be read.
#[derive(Debug)]
pub struct UpstreamResponse<B> {
    pub status: u16,
    pub headers: Headers,
    pub body: B,
}

/// Why the provider could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connection refused/reset, TLS or protocol failure (detail for logs, never for clients).
    Unreachable(String),
    /// No answer within the provider's timeout.
    Timeout,
}

/// What the loop needs from whoever runs it.
pub trait Host: Clone {
    /// A response body that has not been read yet.
    type Body;

    /// Sends a request to a provider (the whole request; the body of the answer is read later).
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

    /// The OpenAI-format error response for `err`.
    pub fn error(err: &GatewayError, request_id: &str) -> Self {
        Self::error_in(Wire::Openai, err, request_id)
    }

    /// The error response for `err` in the client's format.
    pub fn error_in(wire: Wire, err: &GatewayError, request_id: &str) -> Self {
        Self::json(err.status(), err.body_in(wire, request_id), request_id)
    }
}

/// The start of a streamed answer: send `status` and `headers`, then drive `session` with the
/// bytes of `body` as they arrive.
#[allow(
    missing_debug_implementations,
    reason = "holds the host's body and session, which need not be Debug"
)]
pub struct StreamStart<H: Host, C> {
    pub status: u16,
    pub headers: Headers,
    pub body: H::Body,
    pub session: StreamSession<H, C>,
}

/// What the loop answers.
#[expect(
    clippy::large_enum_variant,
    reason = "one value per request, moved once; boxing would add an allocation per answer"
)]
pub enum Answer<H: Host, C> {
    Full(Response),
    Stream(StreamStart<H, C>),
}

impl<H: Host, C> std::fmt::Debug for Answer<H, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(r) => f.debug_tuple("Full").field(r).finish(),
            Self::Stream(s) => f
                .debug_struct("Stream")
                .field("status", &s.status)
                .finish_non_exhaustive(),
        }
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

/// What the gateway tracks about one admitted call until its usage is recorded.
#[derive(Debug)]
pub struct Call<H> {
    pub host: H,
    pub route: String,
    pub provider: Arc<Provider>,
    pub endpoint: Endpoint,
    pub request_id: String,
    /// [`Host::monotonic_ms`] when the request arrived.
    pub started_ms: u64,
    pub llm: weir_llm::LlmRequestInfo,
    /// Milliseconds from sending the request upstream to its response headers.
    pub upstream_ms: Option<u64>,
}

impl<H: Host> Call<H> {
    fn latency_ms(&self) -> u64 {
        self.host.monotonic_ms().saturating_sub(self.started_ms)
    }

    /// Ends a request that failed before an answer: on-complete and the usage record with the
    /// error's status and outcome. Returns the error for rendering.
    pub async fn fail<C: Chain>(&self, chain: &mut C, err: GatewayError) -> GatewayError {
        let end = End::failed(err.status(), err.outcome(), err.code());
        self.finish(chain, end, None, None, None).await;
        err
    }

    /// Runs on-complete and writes the usage record: exactly once per request.
    pub async fn finish<C: Chain>(
        &self,
        chain: &mut C,
        end: End,
        usage: Option<weir_llm::Usage>,
        model: Option<String>,
        ttft_ms: Option<u64>,
    ) {
        let latency_ms = self.latency_ms();
        let End {
            status,
            outcome,
            error,
        } = end;
        let info = CompletionInfo {
            status,
            outcome,
            model: model.clone(),
            usage,
            latency_ms,
        };
        if chain.has_phase(Phase::Complete) {
            for e in chain.on_complete(&info).await {
                self.host.warn(
                    &self.request_id,
                    &format!("policy failed in on-complete: {e}"),
                );
            }
        }
        let u = usage.unwrap_or_default();
        let model = model.or_else(|| self.llm.model.clone());
        let cost_usd = match (&usage, &model) {
            (Some(usage), Some(m)) => self.provider.prices.cost(&self.provider.name, m, usage),
            _ => None,
        };
        self.host.record(UsageRecord {
            timestamp_ms: self.host.now_ms(),
            request_id: self.request_id.clone(),
            proxy: self.route.clone(),
            provider: self.provider.name.clone(),
            endpoint: self.endpoint.name().to_owned(),
            consumer: chain.consumer(),
            model,
            stream: self.llm.stream,
            status,
            outcome: outcome.name(),
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_prompt_tokens: u.cached_prompt_tokens,
            latency_ms,
            time_to_first_token_ms: ttft_ms,
            upstream_latency_ms: self.upstream_ms,
            error,
            cost_usd,
        });
    }
}
