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
mod stream;
mod types;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

pub use error::GatewayError;
pub use stream::{StreamEnd, StreamSession};
pub use types::*;

/// The endpoints of an LLM proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
}

impl Endpoint {
    /// The endpoint for a path below the proxy's context path.
    pub fn parse(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/completions" => Some(Self::Completions),
            "/v1/embeddings" => Some(Self::Embeddings),
            "/v1/models" => Some(Self::Models),
            _ => None,
        }
    }

    /// Path below the provider's base URL.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
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
#[derive(Clone)]
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

/// A provider as the data plane uses it.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    /// Base URL including the version, without a trailing slash: `https://api.openai.com/v1`.
    pub base_url: String,
    /// The credential injected into upstream requests. Never logged, never returned.
    pub api_key: Option<Secret>,
    /// Set when the provider needs a key from a variable that is not set (named in the error).
    pub missing_key_env: Option<String>,
    pub timeout_ms: u64,
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
        Self::json(err.status(), err.body(request_id), request_id)
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
}

impl<H: Host> Call<H> {
    fn latency_ms(&self) -> u64 {
        self.host.monotonic_ms().saturating_sub(self.started_ms)
    }

    /// Ends a request that failed before an answer: on-complete and the usage record with the
    /// error's status and outcome. Returns the error for rendering.
    pub async fn fail<C: Chain>(&self, chain: &mut C, err: GatewayError) -> GatewayError {
        self.finish(chain, err.status(), err.outcome(), None, None, None)
            .await;
        err
    }

    /// Runs on-complete and writes the usage record: exactly once per request.
    pub async fn finish<C: Chain>(
        &self,
        chain: &mut C,
        status: u16,
        outcome: Outcome,
        usage: Option<weir_llm::Usage>,
        model: Option<String>,
        ttft_ms: Option<u64>,
    ) {
        let latency_ms = self.latency_ms();
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
        self.host.record(UsageRecord {
            timestamp_ms: self.host.now_ms(),
            request_id: self.request_id.clone(),
            proxy: self.route.clone(),
            provider: self.provider.name.clone(),
            endpoint: self.endpoint.upstream_path().to_owned(),
            consumer: chain.consumer(),
            model: model.or_else(|| self.llm.model.clone()),
            stream: self.llm.stream,
            status,
            outcome: outcome.name(),
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_prompt_tokens: u.cached_prompt_tokens,
            latency_ms,
            time_to_first_token_ms: ttft_ms,
        });
    }
}

/// Serves one request on a matched route and endpoint: everything after the body was read.
///
/// `make_chain` creates the request's policy chain from its initial state. `started_ms` is
/// [`Host::monotonic_ms`] when the request arrived.
pub async fn serve<H: Host, C: Chain>(
    host: H,
    route: &RouteInfo,
    endpoint: Endpoint,
    request: ClientRequest,
    request_id: String,
    started_ms: u64,
    make_chain: impl FnOnce(RequestState) -> C,
) -> Answer<H, C> {
    if request.body.len() > route.limits.max_body_bytes {
        return Answer::Full(Response::error(
            &too_large(route.limits.max_body_bytes),
            &request_id,
        ));
    }
    let llm = if endpoint == Endpoint::Models {
        None
    } else {
        match weir_llm::inspect::chat_request(&request.body) {
            Ok(info) => Some(info),
            Err(e) => {
                let param = match &e {
                    weir_llm::RequestError::InvalidField { field, .. } => Some(*field),
                    weir_llm::RequestError::InvalidJson(_) => None,
                };
                let err = GatewayError::Client {
                    status: 400,
                    code: "invalid_request_body",
                    message: e.to_string(),
                    param,
                };
                return Answer::Full(Response::error(&err, &request_id));
            }
        }
    };
    if endpoint == Endpoint::Embeddings && llm.as_ref().is_some_and(|l| l.stream) {
        let err = GatewayError::client(400, "invalid_request_body", "Embeddings cannot stream.");
        return Answer::Full(Response::error(&err, &request_id));
    }

    let mut chain = make_chain(RequestState {
        request_id: request_id.clone(),
        route: route.name.clone(),
        route_kind: RouteKind::Llm,
        endpoint: endpoint.upstream_path().to_owned(),
        consumer: None,
        attributes: Default::default(),
        llm: llm.clone(),
        received_at_ms: host.now_ms(),
    });
    let call = Call {
        host,
        route: route.name.clone(),
        provider: route.provider.clone(),
        endpoint,
        request_id,
        started_ms,
        llm: llm.unwrap_or_default(),
    };
    match admitted(call, &mut chain, route.limits, request).await {
        Ok(Admitted::Full(resp)) => Answer::Full(resp),
        Ok(Admitted::Stream {
            call,
            status,
            headers,
            body,
        }) => Answer::Stream(StreamStart {
            status,
            headers,
            body,
            session: StreamSession::new(call, chain),
        }),
        Err((err, request_id)) => Answer::Full(Response::error(&err, &request_id)),
    }
}

#[allow(
    missing_debug_implementations,
    reason = "holds the host's body, which need not be Debug"
)]
enum Admitted<H: Host> {
    Full(Response),
    Stream {
        call: Call<H>,
        status: u16,
        headers: Headers,
        body: H::Body,
    },
}

/// The part of [`serve`] after the chain exists: every exit records usage exactly once.
async fn admitted<H: Host, C: Chain>(
    call: Call<H>,
    chain: &mut C,
    limits: Limits,
    request: ClientRequest,
) -> Result<Admitted<H>, (GatewayError, String)> {
    let fail = |err: GatewayError, call: &Call<H>| (err, call.request_id.clone());
    let message = MessageView {
        method: request.method,
        path: request.path,
        status: 0,
        headers: request.headers,
        body: request.body,
    };
    let message = match chain.on_request(message).await {
        Ok(Decision::Continue(m)) => m,
        Ok(Decision::Deny { policy, denial }) => {
            call.host.denied(&call.route, &policy, &denial.code);
            let resp = denial_response(&denial, &call.request_id);
            call.finish(chain, denial.status, Outcome::Denied, None, None, None)
                .await;
            return Ok(Admitted::Full(resp));
        }
        Ok(Decision::Respond { reply, .. }) => {
            let resp = reply_response(reply, &call.request_id);
            call.finish(chain, resp.status, Outcome::Denied, None, None, None)
                .await;
            return Ok(Admitted::Full(resp));
        }
        Err(e) => {
            call.host
                .warn(&call.request_id, &format!("policy failed: {e}"));
            let err = call.fail(chain, GatewayError::Policy(e)).await;
            return Err(fail(err, &call));
        }
    };

    let provider = call.provider.clone();
    if let Some(var) = &provider.missing_key_env {
        let err = GatewayError::Unavailable {
            code: "provider_not_configured",
            message: format!(
                "Provider `{}` has no API key: set the variable {var} and restart.",
                provider.name
            ),
        };
        let err = call.fail(chain, err).await;
        return Err(fail(err, &call));
    }

    let body = if call.llm.stream {
        match weir_llm::inspect::with_stream_usage(&message.body) {
            Ok(Some(b)) => Bytes::from(b),
            Ok(None) => message.body.clone(),
            Err(e) => {
                let err = GatewayError::client(400, "invalid_request_body", e.to_string());
                let err = call.fail(chain, err).await;
                return Err(fail(err, &call));
            }
        }
    } else {
        message.body.clone()
    };
    let upstream = upstream_request(&call, &message, body);
    let resp = match call.host.send(upstream).await {
        Ok(r) => r,
        Err(UpstreamFailure::Unreachable(detail)) => {
            call.host.warn(
                &call.request_id,
                &format!("upstream `{}` request failed: {detail}", provider.name),
            );
            let err = GatewayError::Upstream {
                status: 502,
                code: "upstream_unavailable",
                message: format!(
                    "The upstream provider `{}` could not be reached or closed the connection.",
                    provider.name
                ),
            };
            let err = call.fail(chain, err).await;
            return Err(fail(err, &call));
        }
        Err(UpstreamFailure::Timeout) => {
            let err = GatewayError::Upstream {
                status: 504,
                code: "upstream_timeout",
                message: format!(
                    "The upstream provider `{}` did not answer within {} ms.",
                    provider.name, provider.timeout_ms
                ),
            };
            let err = call.fail(chain, err).await;
            return Err(fail(err, &call));
        }
    };

    let is_sse = resp
        .headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"));
    let mut headers: Headers = resp
        .headers
        .into_iter()
        .filter(|(n, _)| keep_response_header(n))
        .collect();
    headers.push(("x-request-id".into(), call.request_id.clone()));
    if (200..300).contains(&resp.status) && is_sse {
        return Ok(Admitted::Stream {
            call,
            status: resp.status,
            headers,
            body: resp.body,
        });
    }

    let body = match call
        .host
        .read_body(resp.body, limits.max_response_bytes, provider.timeout_ms)
        .await
    {
        Ok(b) => b,
        Err(failure) => {
            let err = match failure {
                UpstreamFailure::Unreachable(detail) => {
                    call.host.warn(
                        &call.request_id,
                        &format!("reading the upstream response failed: {detail}"),
                    );
                    GatewayError::Upstream {
                        status: 502,
                        code: "upstream_response_failed",
                        message: format!(
                            "The upstream provider `{}` broke off its response.",
                            provider.name
                        ),
                    }
                }
                UpstreamFailure::Timeout => GatewayError::Upstream {
                    status: 504,
                    code: "upstream_timeout",
                    message: format!(
                        "The upstream provider `{}` did not finish its response in time.",
                        provider.name
                    ),
                },
            };
            let err = call.fail(chain, err).await;
            return Err(fail(err, &call));
        }
    };
    let status = resp.status;
    if status == 401 || status == 403 {
        // The upstream refused *our* credential: the client cannot fix that.
        call.host.warn(
            &call.request_id,
            &format!(
                "upstream `{}` rejected the provider credential ({status})",
                provider.name
            ),
        );
        let err = GatewayError::Upstream {
            status: 502,
            code: "upstream_auth_failed",
            message: format!(
                "The upstream provider `{}` rejected the gateway's credentials.",
                provider.name
            ),
        };
        let err = call.fail(chain, err).await;
        return Err(fail(err, &call));
    }
    let ok = (200..300).contains(&status);
    let (usage, model) = if ok {
        weir_llm::usage::from_json(&body)
    } else {
        (None, None)
    };
    let outcome = if ok {
        Outcome::Success
    } else {
        Outcome::UpstreamError
    };

    let mut body = body;
    if ok && chain.has_phase(Phase::Response) {
        let view = MessageView {
            method: String::new(),
            path: String::new(),
            status,
            headers: std::mem::take(&mut headers),
            body,
        };
        match chain.on_response(view).await {
            Ok(Decision::Continue(m)) => {
                headers = m.headers;
                body = m.body;
            }
            Ok(Decision::Deny { policy, denial }) => {
                call.host.denied(&call.route, &policy, &denial.code);
                call.finish(chain, denial.status, Outcome::Denied, usage, model, None)
                    .await;
                return Ok(Admitted::Full(denial_response(&denial, &call.request_id)));
            }
            Ok(Decision::Respond { reply, .. }) => {
                let resp = reply_response(reply, &call.request_id);
                call.finish(chain, resp.status, Outcome::Success, usage, model, None)
                    .await;
                return Ok(Admitted::Full(resp));
            }
            Err(e) => {
                call.finish(chain, 500, Outcome::GatewayError, usage, model, None)
                    .await;
                return Err(fail(GatewayError::Policy(e), &call));
            }
        }
        headers.retain(|(n, _)| n != "x-request-id");
        headers.push(("x-request-id".into(), call.request_id.clone()));
    }
    call.finish(chain, status, outcome, usage, model, None)
        .await;
    Ok(Admitted::Full(Response {
        status,
        headers,
        body,
    }))
}

fn upstream_request<H>(call: &Call<H>, message: &MessageView, body: Bytes) -> UpstreamRequest {
    let mut headers: Headers = message
        .headers
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            !(HOP_BY_HOP.contains(&n) || CLIENT_SECRETS.contains(&n) || n == "x-request-id")
        })
        .cloned()
        .collect();
    if let Some(key) = &call.provider.api_key {
        headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
    }
    if call.endpoint != Endpoint::Models {
        headers.retain(|(n, _)| n != "content-type");
        headers.push(("content-type".into(), "application/json".into()));
    }
    headers.push(("x-request-id".into(), call.request_id.clone()));
    UpstreamRequest {
        method: call.endpoint.method(),
        url: format!(
            "{}/{}",
            call.provider.base_url,
            call.endpoint.upstream_path()
        ),
        headers,
        body,
        timeout_ms: call.provider.timeout_ms,
    }
}

/// The OpenAI-format response for a policy's denial, with its extra headers.
pub fn denial_response(denial: &Denial, request_id: &str) -> Response {
    let status = if (400..600).contains(&denial.status) {
        denial.status
    } else {
        403
    };
    let body =
        weir_llm::error::openai_error(status, &denial.code, &denial.message, None, request_id);
    let mut resp = Response::json(status, body, request_id);
    for (n, v) in &denial.headers {
        let n = n.to_ascii_lowercase();
        resp.headers.retain(|(h, _)| *h != n);
        resp.headers.push((n, v.clone()));
    }
    resp
}

/// A policy's own reply, with the request id.
pub fn reply_response(reply: Reply, request_id: &str) -> Response {
    let status = if (100..600).contains(&reply.status) {
        reply.status
    } else {
        200
    };
    let mut headers: Headers = reply
        .headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| n != "x-request-id")
        .collect();
    headers.push(("x-request-id".into(), request_id.to_owned()));
    Response {
        status,
        headers,
        body: Bytes::from(reply.body),
    }
}
