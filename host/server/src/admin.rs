//! The admin listener (default 127.0.0.1:9094): liveness, readiness, Prometheus metrics, the
//! configuration without secrets, usage and the routers' circuits. Meant for a private network or loopback only.

use std::convert::Infallible;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::{Gateway, circuits};

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Readiness: a configuration is loaded (a gateway state exists only once every component is
/// compiled and every policy configuration validated), the key-value store answers, and every
/// proxy with a router has a target whose circuit is not open.
async fn ready(gateway: &Gateway) -> Response<Body> {
    let state = gateway.state();
    let components = state.catalogue.len();
    let draining = state
        .shared
        .draining
        .load(std::sync::atomic::Ordering::Relaxed);
    let body = match state.shared.kv_reachable().await {
        _ if draining => serde_json::json!({
            "status": "not_ready",
            "checks": {"config": "ok", "components": components, "shutdown": "draining"},
        }),
        Ok(()) => {
            // The store answered a moment ago; should it fail now, routing fails open too.
            let out: Vec<String> = circuits::read(&state.config, &state.shared.kv, now_ms())
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(circuits::Router::all_open)
                .map(|r| r.proxy)
                .collect();
            if out.is_empty() {
                serde_json::json!({
                    "status": "ready",
                    "checks": {"config": "ok", "components": components, "kv": "ok", "targets": "ok"},
                })
            } else {
                serde_json::json!({
                    "status": "not_ready",
                    "checks": {
                        "config": "ok", "components": components, "kv": "ok",
                        "targets": format!(
                            "every target's circuit is open for the proxies {} (GET /circuits)",
                            out.join(", ")
                        ),
                    },
                })
            }
        }
        Err(e) => serde_json::json!({
            "status": "not_ready",
            "checks": {"config": "ok", "components": components, "kv": e},
        }),
    };
    let status = if body["status"] == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "application/json", body.to_string())
}

/// `POST /cache/purge?proxy=<name>[&consumer=<id>]` (see [`crate::purge`]).
async fn purge(gateway: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != http::Method::POST {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            r#"{"error":"use POST /cache/purge?proxy=<name>[&consumer=<id>]"}"#,
        );
    }
    let query = req.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            // Proxy and consumer names are `[A-Za-z0-9._-]`: nothing to decode.
            .map(str::to_owned)
    };
    let Some(proxy) = param("proxy") else {
        return respond(
            StatusCode::BAD_REQUEST,
            "application/json",
            r#"{"error":"name the proxy: POST /cache/purge?proxy=<name>[&consumer=<id>]"}"#,
        );
    };
    let consumer = param("consumer");
    let state = gateway.state();
    match crate::purge::purge(&state.config, &state.shared.kv, &proxy, consumer.as_deref()).await {
        Ok(purged) => respond(
            StatusCode::OK,
            "application/json",
            serde_json::json!({"proxy": proxy, "consumer": consumer, "purged": purged}).to_string(),
        ),
        Err(crate::purge::PurgeError::NotFound(m)) => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            serde_json::json!({ "error": m }).to_string(),
        ),
        Err(crate::purge::PurgeError::Store(e)) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            serde_json::json!({ "error": format!("the key-value store failed: {e}") }).to_string(),
        ),
    }
}

async fn handle(gateway: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    let state = gateway.state();
    if req.uri().path() == "/cache/purge" {
        return purge(gateway, req).await;
    }
    if req.method() != http::Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            r#"{"error":"use GET"}"#,
        );
    }
    match req.uri().path() {
        "/health" => respond(StatusCode::OK, "application/json", r#"{"status":"ok"}"#),
        "/ready" => ready(gateway).await,
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.shared.metrics.render(),
        ),
        // The configuration holds no secrets: provider keys are only named (api-key-env) and
        // consumers' keys are hashes.
        "/config" => match serde_json::to_vec_pretty(&state.config) {
            Ok(json) => respond(StatusCode::OK, "application/json", json),
            Err(_) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                r#"{"error":"config"}"#,
            ),
        },
        "/circuits" => match circuits::read(&state.config, &state.shared.kv, now_ms()).await {
            Ok(routers) => respond(
                StatusCode::OK,
                "application/json",
                serde_json::json!({ "now_ms": now_ms(), "routers": routers }).to_string(),
            ),
            Err(e) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({ "error": e.to_string() }).to_string(),
            ),
        },
        "/usage" => {
            // Spend per consumer (`/usage?consumer=alice` for one): since this process started,
            // or, with a shared store, for every replica since the store was new
            // (`"scope": "gateway"`).
            let wanted = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("consumer="))
                    .map(str::to_owned)
            });
            let (scope, totals) = gateway.usage().gateway_totals().await;
            let consumers: Vec<serde_json::Value> = totals
                .into_iter()
                .filter(|(c, _)| wanted.as_ref().is_none_or(|w| w == c))
                .map(|(c, t)| {
                    serde_json::json!({
                        "consumer": c,
                        "requests": t.requests,
                        "prompt_tokens": t.prompt_tokens,
                        "completion_tokens": t.completion_tokens,
                        "total_tokens": t.total_tokens,
                        "cost_usd": t.cost_usd,
                    })
                })
                .collect();
            let body = serde_json::json!({ "scope": scope, "consumers": consumers });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"not found: try /health, /ready, /metrics, /config, /usage, /circuits, POST /cache/purge"}"#,
        ),
    }
}

/// Serves the admin endpoints on `listener` until the process ends.
pub(crate) async fn serve(gateway: Gateway, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(handle(&gateway, &req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
