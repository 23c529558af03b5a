//! One request through the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use weir_runtime::{
    ChainRun, CompletionInfo, Decision, MessageView, Outcome, RequestState, RouteKind,
};

use crate::body::{self, Body};
use crate::build::{Route, State};
use crate::error::{GatewayError, json_response};
use crate::usage::UsageRecord;

/// The endpoints of an LLM proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
}

impl Endpoint {
    fn parse(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/completions" => Some(Self::Completions),
            "/v1/embeddings" => Some(Self::Embeddings),
            "/v1/models" => Some(Self::Models),
            _ => None,
        }
    }

    /// Path below the provider's base URL.
    pub(crate) fn upstream_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Models => Method::GET,
            _ => Method::POST,
        }
    }
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

fn request_id() -> String {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
    });
    format!(
        "req_{seed:016x}{:08x}",
        REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn find_route<'a>(state: &'a State, path: &'a str) -> Option<(&'a Route, &'a str)> {
    state.routes.iter().find_map(|r| {
        let rest = path.strip_prefix(r.prefix.as_str())?;
        (rest.starts_with('/')).then_some((r, rest))
    })
}

/// Headers never forwarded between hops, or replaced by the gateway.
const HOP_BY_HOP: &[&str] = &[
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
const CLIENT_SECRETS: &[&str] = &["authorization", "x-api-key", "api-key", "cookie"];

pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<Body> {
    let request_id = request_id();
    let started = Instant::now();
    // A task of its own, so that a client that disconnects (dropping this future) cannot stop the
    // request half-way: on-complete and the usage record always happen.
    let id = request_id.clone();
    let task = tokio::spawn(async move {
        match handle_inner(&state, req, &id, started).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(&id),
        }
    });
    match task.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(request_id, error = %e, "request task failed");
            GatewayError::Unavailable {
                code: "internal_error",
                message: "Internal gateway error.".into(),
            }
            .into_response(&request_id)
        }
    }
}

async fn handle_inner(
    state: &Arc<State>,
    req: Request<Incoming>,
    request_id: &str,
    started: Instant,
) -> Result<Response<Body>, GatewayError> {
    let path = req.uri().path().to_owned();
    let Some((route, rest)) = find_route(state, &path) else {
        return Err(GatewayError::client(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!("No route for `{path}`."),
        ));
    };
    let Some(endpoint) = Endpoint::parse(rest) else {
        return Err(GatewayError::client(
            StatusCode::NOT_FOUND,
            "unknown_endpoint",
            format!("Unknown endpoint `{rest}` on proxy `{}`.", route.name),
        ));
    };
    if req.method() != endpoint.method() {
        return Err(GatewayError::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("`{rest}` accepts {} only.", endpoint.method()),
        ));
    }

    let (parts, incoming) = req.into_parts();
    let max_body = state.config.limits.max_body_bytes;
    if let Some(len) = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > max_body
    {
        return Err(too_large(max_body));
    }
    let body = match Limited::new(incoming, max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(max_body)),
        Err(e) => {
            return Err(GatewayError::client(
                StatusCode::BAD_REQUEST,
                "body_read_failed",
                format!("Could not read the request body: {e}"),
            ));
        }
    };

    let llm = if endpoint == Endpoint::Models {
        None
    } else {
        Some(weir_llm::inspect::chat_request(&body).map_err(|e| {
            let param = match &e {
                weir_llm::RequestError::InvalidField { field, .. } => Some(*field),
                weir_llm::RequestError::InvalidJson(_) => None,
            };
            GatewayError::Client {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_request_body",
                message: e.to_string(),
                param,
            }
        })?)
    };
    if endpoint == Endpoint::Embeddings && llm.as_ref().is_some_and(|l| l.stream) {
        return Err(GatewayError::client(
            StatusCode::BAD_REQUEST,
            "invalid_request_body",
            "Embeddings cannot stream.",
        ));
    }

    let message = MessageView {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| path.clone(), ToString::to_string),
        status: 0,
        headers: header_pairs(&parts.headers),
        body,
    };
    let mut run = ChainRun::new(
        route.chain.clone(),
        RequestState {
            request_id: request_id.to_owned(),
            route: route.name.clone(),
            route_kind: RouteKind::Llm,
            endpoint: endpoint.upstream_path().to_owned(),
            consumer: None,
            attributes: Default::default(),
            llm: llm.clone(),
            received_at_ms: now_ms(),
        },
    );
    let call = Call {
        state: state.clone(),
        route_name: route.name.clone(),
        provider: route.provider.clone(),
        endpoint,
        request_id: request_id.to_owned(),
        started,
        llm: llm.unwrap_or_default(),
    };

    let message = match run.on_request(message).await {
        Ok(Decision::Continue(m)) => m,
        Ok(Decision::Deny { policy, denial }) => {
            tracing::debug!(request_id, policy, status = denial.status, code = %denial.code, "request denied");
            state.metrics.denial(&route.name, &policy, &denial.code);
            let resp = denial_response(&denial, request_id);
            call.finish(&mut run, denial.status, Outcome::Denied, None, None, None)
                .await;
            return Ok(resp);
        }
        Ok(Decision::Respond { reply, .. }) => {
            let resp = reply_response(reply.status, &reply.headers, reply.body, request_id);
            call.finish(
                &mut run,
                resp.status().as_u16(),
                Outcome::Denied,
                None,
                None,
                None,
            )
            .await;
            return Ok(resp);
        }
        Err(e) => {
            tracing::warn!(request_id, error = %e, "policy failed");
            return Err(call.fail(&mut run, GatewayError::Policy(e)).await);
        }
    };

    let provider = &call.provider;
    if let Some(var) = &provider.missing_key_env {
        let err = GatewayError::Unavailable {
            code: "provider_not_configured",
            message: format!(
                "Provider `{}` has no API key: set the environment variable {var} and restart weir.",
                provider.name
            ),
        };
        return Err(call.fail(&mut run, err).await);
    }

    let upstream_body = if call.llm.stream {
        match weir_llm::inspect::with_stream_usage(&message.body) {
            Ok(Some(b)) => Bytes::from(b),
            Ok(None) => message.body.clone(),
            Err(e) => {
                let err = GatewayError::client(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_body",
                    e.to_string(),
                );
                return Err(call.fail(&mut run, err).await);
            }
        }
    } else {
        message.body.clone()
    };
    let upstream_req = match build_upstream_request(&call, &message, upstream_body) {
        Ok(r) => r,
        Err(e) => return Err(call.fail(&mut run, e).await),
    };

    let sent = tokio::time::timeout(provider.timeout, state.client.request(upstream_req)).await;
    let upstream_resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(request_id, provider = %provider.name, error = %e, "upstream request failed");
            let err = GatewayError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                code: "upstream_unavailable",
                message: format!(
                    "The upstream provider `{}` could not be reached or closed the connection.",
                    provider.name
                ),
            };
            return Err(call.fail(&mut run, err).await);
        }
        Err(_) => {
            let err = GatewayError::Upstream {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: "upstream_timeout",
                message: format!(
                    "The upstream provider `{}` did not answer within {} ms.",
                    provider.name,
                    provider.timeout.as_millis()
                ),
            };
            return Err(call.fail(&mut run, err).await);
        }
    };

    let status = upstream_resp.status();
    let is_sse = upstream_resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if status.is_success() && is_sse {
        return Ok(crate::stream::relay(call, run, upstream_resp));
    }
    call.non_streaming(run, upstream_resp).await
}

fn too_large(max: usize) -> GatewayError {
    GatewayError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("The request body exceeds the limit of {max} bytes."),
    )
}

fn build_upstream_request(
    call: &Call,
    message: &MessageView,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, GatewayError> {
    let url = format!(
        "{}/{}",
        call.provider.base_url,
        call.endpoint.upstream_path()
    );
    let mut builder = Request::builder().method(call.endpoint.method()).uri(&url);
    if let Some(headers) = builder.headers_mut() {
        for (name, value) in &message.headers {
            let lower = name.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str()) || CLIENT_SECRETS.contains(&lower.as_str()) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(lower.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(n, v);
            }
        }
        if let Some(key) = &call.provider.api_key
            && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        {
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
        if call.endpoint != Endpoint::Models {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if let Ok(v) = HeaderValue::from_str(&call.request_id) {
            headers.insert("x-request-id", v);
        }
    }
    builder
        .body(Full::new(body))
        .map_err(|e| GatewayError::Unavailable {
            code: "invalid_upstream_request",
            message: format!(
                "Could not build the upstream request for provider `{}`: {e}",
                call.provider.name
            ),
        })
}

/// Copies upstream response headers worth keeping.
pub(crate) fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || n == "set-cookie" || n == "x-request-id" {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Header fields as the (lower-case name, value) pairs policies see.
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Writes pairs from a policy into a header map, skipping invalid names or values.
fn set_pairs(pairs: &[(String, String)], to: &mut HeaderMap, replace: bool) {
    for (n, v) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            if replace {
                to.insert(n, v);
            } else {
                to.append(n, v);
            }
        }
    }
}

fn denial_response(denial: &weir_runtime::Denial, request_id: &str) -> Response<Body> {
    let status = StatusCode::from_u16(denial.status).unwrap_or(StatusCode::FORBIDDEN);
    let body = weir_llm::error::openai_error(
        status.as_u16(),
        &denial.code,
        &denial.message,
        None,
        request_id,
    );
    let mut resp = json_response(status, body, request_id);
    set_pairs(&denial.headers, resp.headers_mut(), true);
    resp
}

fn reply_response(
    status: u16,
    headers: &[(String, String)],
    body: Vec<u8>,
    request_id: &str,
) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    set_pairs(headers, resp.headers_mut(), false);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// What the gateway tracks about one admitted call until its usage is recorded.
pub(crate) struct Call {
    pub state: Arc<State>,
    pub route_name: String,
    pub provider: Arc<crate::upstream::Provider>,
    pub endpoint: Endpoint,
    pub request_id: String,
    pub started: Instant,
    pub llm: weir_llm::LlmRequestInfo,
}

impl Call {
    /// Ends a request that failed before an answer: on-complete and the usage record with the
    /// error's status and outcome. Returns the error for rendering.
    pub(crate) async fn fail(&self, run: &mut ChainRun, err: GatewayError) -> GatewayError {
        self.finish(run, err.status().as_u16(), err.outcome(), None, None, None)
            .await;
        err
    }

    /// Runs on-complete and writes the usage record: exactly once per request.
    pub(crate) async fn finish(
        &self,
        run: &mut ChainRun,
        status: u16,
        outcome: Outcome,
        usage: Option<weir_llm::Usage>,
        model: Option<String>,
        ttft_ms: Option<u64>,
    ) {
        let latency_ms = self.started.elapsed().as_millis() as u64;
        let info = CompletionInfo {
            status,
            outcome,
            model: model.clone(),
            usage,
            latency_ms,
        };
        if run.has_phase(weir_runtime::Phase::Complete) {
            for e in run.on_complete(&info).await {
                tracing::warn!(request_id = %self.request_id, error = %e, "policy failed in on-complete");
            }
        }
        let u = usage.unwrap_or_default();
        let record = UsageRecord {
            timestamp_ms: now_ms(),
            request_id: self.request_id.clone(),
            proxy: self.route_name.clone(),
            provider: self.provider.name.clone(),
            endpoint: self.endpoint.upstream_path().to_owned(),
            consumer: run.consumer(),
            model: model.or_else(|| self.llm.model.clone()),
            stream: self.llm.stream,
            status,
            outcome: outcome_name(outcome),
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_prompt_tokens: u.cached_prompt_tokens,
            latency_ms,
            time_to_first_token_ms: ttft_ms,
        };
        self.state.metrics.record(&record);
        self.state.usage.record(record);
    }

    async fn non_streaming(
        self,
        mut run: ChainRun,
        resp: Response<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let (parts, incoming) = resp.into_parts();
        let max = self.state.config.limits.max_response_bytes;
        let body = match tokio::time::timeout(
            self.provider.timeout,
            Limited::new(incoming, max).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                tracing::warn!(request_id = %self.request_id, error = %e, "reading the upstream response failed");
                let err = GatewayError::Upstream {
                    status: StatusCode::BAD_GATEWAY,
                    code: "upstream_response_failed",
                    message: format!(
                        "The upstream provider `{}` broke off its response.",
                        self.provider.name
                    ),
                };
                return Err(self.fail(&mut run, err).await);
            }
            Err(_) => {
                let err = GatewayError::Upstream {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    code: "upstream_timeout",
                    message: format!(
                        "The upstream provider `{}` did not finish its response in time.",
                        self.provider.name
                    ),
                };
                return Err(self.fail(&mut run, err).await);
            }
        };
        let status = parts.status;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // The upstream refused *our* credential: the client cannot fix that.
            tracing::error!(request_id = %self.request_id, provider = %self.provider.name, %status, "upstream rejected the provider credential");
            let err = GatewayError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                code: "upstream_auth_failed",
                message: format!(
                    "The upstream provider `{}` rejected the gateway's credentials.",
                    self.provider.name
                ),
            };
            return Err(self.fail(&mut run, err).await);
        }
        let (usage, model) = if status.is_success() {
            weir_llm::usage::from_json(&body)
        } else {
            (None, None)
        };
        let outcome = if status.is_success() {
            Outcome::Success
        } else {
            Outcome::UpstreamError
        };

        let mut body = body;
        let mut headers = HeaderMap::new();
        copy_response_headers(&parts.headers, &mut headers);
        let mut final_status = status;
        if status.is_success() && run.has_phase(weir_runtime::Phase::Response) {
            let view = MessageView {
                method: String::new(),
                path: String::new(),
                status: status.as_u16(),
                headers: header_pairs(&headers),
                body,
            };
            match run.on_response(view).await {
                Ok(Decision::Continue(m)) => {
                    headers.clear();
                    set_pairs(&m.headers, &mut headers, false);
                    body = m.body;
                }
                Ok(Decision::Deny { denial, .. }) => {
                    self.finish(&mut run, denial.status, Outcome::Denied, usage, model, None)
                        .await;
                    return Ok(denial_response(&denial, &self.request_id));
                }
                Ok(Decision::Respond { reply, .. }) => {
                    let resp =
                        reply_response(reply.status, &reply.headers, reply.body, &self.request_id);
                    self.finish(
                        &mut run,
                        resp.status().as_u16(),
                        Outcome::Success,
                        usage,
                        model,
                        None,
                    )
                    .await;
                    return Ok(resp);
                }
                Err(e) => {
                    let err = GatewayError::Policy(e);
                    self.finish(&mut run, 500, Outcome::GatewayError, usage, model, None)
                        .await;
                    return Err(err);
                }
            }
            final_status = status;
        }
        self.finish(&mut run, final_status.as_u16(), outcome, usage, model, None)
            .await;
        let mut resp = Response::new(body::full(body));
        *resp.status_mut() = final_status;
        *resp.headers_mut() = headers;
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        Ok(resp)
    }
}

pub(crate) fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::UpstreamError => "upstream_error",
        Outcome::Denied => "denied",
        Outcome::ClientCancelled => "client_cancelled",
        Outcome::GatewayError => "gateway_error",
    }
}
