//! One request through the gateway: the hyper/wasmtime adapter around weir-core's portable loop.
//!
//! This file only does what is specific to the self-hosted server: reading the body from hyper
//! within the limit, running the request in its own task, talking to upstreams with the pooled
//! client, and turning weir-core's answers into hyper responses. Routing, policies, upstream
//! request building, error mapping and usage accounting are in `weir_core`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use weir_core::{
    Answer, ClientRequest, GatewayError, RouteKind, UpstreamFailure, UpstreamRequest,
    UpstreamResponse, Wire,
};
use weir_runtime::ChainRun;

use crate::body::{self, Body};
use crate::configure::{Route, State};
use crate::usage::UsageRecord;

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

fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// An error with its chain of causes (`client error (Connect): tcp connect error: Connection
/// refused (os error 111)`), for the log.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// What weir-core needs from the server: the pooled upstream client, usage, metrics, logs.
#[derive(Debug, Clone)]
pub(crate) struct ServerPlatform(pub Arc<State>);

impl weir_core::Platform for ServerPlatform {
    type Body = Incoming;

    async fn send(
        &self,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse<Incoming>, UpstreamFailure> {
        let mut builder = Request::builder().method(request.method).uri(&request.url);
        if let Some(headers) = builder.headers_mut() {
            for (name, value) in &request.headers {
                if let (Ok(n), Ok(mut v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    if n == http::header::AUTHORIZATION {
                        v.set_sensitive(true);
                    }
                    headers.append(n, v);
                }
            }
        }
        let req = builder
            .body(Full::new(request.body))
            .map_err(|e| UpstreamFailure::Unreachable(format!("invalid upstream request: {e}")))?;
        let timeout = std::time::Duration::from_millis(request.timeout_ms);
        match tokio::time::timeout(timeout, self.0.shared.client.request(req)).await {
            Ok(Ok(resp)) => {
                let (parts, body) = resp.into_parts();
                Ok(UpstreamResponse {
                    status: parts.status.as_u16(),
                    headers: header_pairs(&parts.headers),
                    body,
                })
            }
            Ok(Err(e)) => Err(UpstreamFailure::Unreachable(with_causes(&e))),
            Err(_) => Err(UpstreamFailure::Timeout),
        }
    }

    async fn read_body(
        &self,
        body: Incoming,
        max: usize,
        timeout_ms: u64,
    ) -> Result<Bytes, UpstreamFailure> {
        let timeout = std::time::Duration::from_millis(timeout_ms);
        match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(UpstreamFailure::TooLarge(max))
            }
            Ok(Err(e)) => Err(UpstreamFailure::Unreachable(with_causes(e.as_ref()))),
            Err(_) => Err(UpstreamFailure::Timeout),
        }
    }

    fn record(&self, record: UsageRecord) {
        self.0.shared.metrics.record(&record);
        self.0.shared.usage.record(record);
    }

    fn denied(&self, route: &str, policy: &str, code: &str) {
        tracing::debug!(route, policy, code, "request denied");
        self.0.shared.metrics.denial(route, policy, code);
    }

    fn warn(&self, request_id: &str, message: &str) {
        tracing::warn!(request_id, "{message}");
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn monotonic_ms(&self) -> u64 {
        monotonic_ms()
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.shared.kv.get(key).await.map_err(|e| e.to_string())
    }

    async fn state_set(&self, key: &str, value: Vec<u8>, ttl_ms: u64) -> Result<(), String> {
        let ttl = Some(std::time::Duration::from_millis(ttl_ms));
        self.0
            .shared
            .kv
            .set(key, value, ttl)
            .await
            .map_err(|e| e.to_string())
    }

    async fn state_delete(&self, key: &str) -> Result<(), String> {
        self.0
            .shared
            .kv
            .delete(key)
            .await
            .map_err(|e| e.to_string())
    }

    fn random_bytes(&self) -> Option<[u8; 16]> {
        Some(rand::random())
    }
}

pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<Body> {
    let request_id = request_id();
    let started_ms = monotonic_ms();
    // A task of its own, so that a client that disconnects (dropping this future) cannot stop the
    // request half-way: on-complete and the usage record always happen.
    let id = request_id.clone();
    let wire = Wire::of_path(req.uri().path());
    let task = tokio::spawn(async move {
        match handle_inner(state, req, id.clone(), started_ms).await {
            Ok(resp) => resp,
            Err((wire, e)) => error_response(wire, &e, &id),
        }
    });
    match task.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(request_id, error = %e, "request task failed");
            let err = GatewayError::Unavailable {
                code: "internal_error",
                message: "Internal gateway error.".into(),
            };
            error_response(wire, &err, &request_id)
        }
    }
}

/// Routes a request and reads its body; errors come back with the format to render them in.
async fn handle_inner(
    state: Arc<State>,
    req: Request<Incoming>,
    request_id: String,
    started_ms: u64,
) -> Result<Response<Body>, (Wire, GatewayError)> {
    let path = req.uri().path().to_owned();
    let wire = Wire::of_path(&path);
    if req.method() == http::Method::GET && path.starts_with(weir_core::mcp::METADATA_PATH) {
        let client = ClientRequest {
            method: "GET".into(),
            path: path.clone(),
            headers: header_pairs(req.headers()),
            body: Default::default(),
        };
        let proxies = state.routes.iter().filter_map(|r| {
            let m = r.info.mcp.as_ref()?;
            Some((m.prefix.as_str(), m.oauth.as_ref()?))
        });
        if let Some(answer) = weir_core::mcp::metadata(proxies, &client, &request_id) {
            return Ok(full_response(answer));
        }
    }
    let (route, rest) = weir_core::find_route(&state.routes, &path, |r| r.prefix.as_str())
        .ok_or_else(|| (wire, weir_core::unknown_route(&path)))?;
    let wire = match route.info.kind {
        RouteKind::Mcp => Wire::JsonRpc,
        RouteKind::Llm => wire,
    };
    let endpoint = match route.info.kind {
        RouteKind::Llm => Some(
            weir_core::endpoint(&route.info.name, rest, req.method().as_str())
                .map_err(|e| (wire, e))?,
        ),
        RouteKind::Mcp if rest.is_empty() || rest == "/" => None,
        RouteKind::Mcp => return Err((wire, weir_core::unknown_route(&path))),
    };
    let request = read(req, route, &path).await.map_err(|e| (wire, e))?;
    let chain = route.chain.clone();
    let platform = ServerPlatform(state.clone());
    let make_chain = |initial| ChainRun::new(chain, initial);
    let answer = match endpoint {
        Some(endpoint) => {
            weir_core::serve(
                platform,
                &route.info,
                endpoint,
                request,
                request_id,
                started_ms,
                make_chain,
            )
            .await
        }
        None => {
            weir_core::mcp::serve(
                platform,
                &route.info,
                request,
                request_id,
                started_ms,
                make_chain,
            )
            .await
        }
    };
    Ok(match answer {
        Answer::Full(resp) => full_response(resp),
        Answer::Stream(start) => crate::stream::relay(start),
    })
}

/// Reads the body within the route's limit.
async fn read(
    req: Request<Incoming>,
    route: &Route,
    path: &str,
) -> Result<ClientRequest, GatewayError> {
    let (parts, incoming) = req.into_parts();
    let max_body = route.info.limits.max_body_bytes;
    if let Some(len) = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > max_body
    {
        return Err(weir_core::too_large(max_body));
    }
    let body = match Limited::new(incoming, max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(weir_core::too_large(max_body));
        }
        Err(e) => {
            return Err(GatewayError::client(
                400,
                "body_read_failed",
                format!("Could not read the request body: {e}"),
            ));
        }
    };
    Ok(ClientRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| path.to_owned(), ToString::to_string),
        headers: header_pairs(&parts.headers),
        body,
    })
}

/// A weir-core response as a hyper response.
pub(crate) fn full_response(resp: weir_core::Response) -> Response<Body> {
    let mut out = Response::new(body::full(resp.body));
    *out.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    set_pairs(&resp.headers, out.headers_mut());
    out
}

/// The error response in the client's format.
pub(crate) fn error_response(wire: Wire, err: &GatewayError, request_id: &str) -> Response<Body> {
    full_response(weir_core::Response::error(wire, err, request_id))
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

/// Writes pairs into a header map, skipping invalid names or values.
pub(crate) fn set_pairs(pairs: &[(String, String)], to: &mut HeaderMap) {
    for (n, v) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            to.append(n, v);
        }
    }
}
