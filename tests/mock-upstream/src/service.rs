//! Request routing and the endpoint handlers.

use crate::Shared;
use crate::body::{ChatStream, MockBody, Truncated};
use crate::embeddings;
use crate::fault::{FAULT_HEADER, FAULT_MODEL_PREFIX, Faults, LATENCY_HEADER};
use crate::native;
use crate::protocol::{self, ApiError, ChatParams};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

type Reply = Response<MockBody>;

/// The `/v1` endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Embeddings,
    Models,
    Model,
    Moderations,
    NotFound,
}

fn route(method: &Method, path: &str) -> Endpoint {
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
        (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
        (&Method::POST, "/v1/moderations") => Endpoint::Moderations,
        (&Method::GET, "/v1/models") => Endpoint::Models,
        (&Method::GET, p)
            if p.strip_prefix("/v1/models/")
                .is_some_and(|id| !id.is_empty()) =>
        {
            Endpoint::Model
        }
        _ => Endpoint::NotFound,
    }
}

/// Serves one request. An `Err` makes hyper drop the connection without a response (`reset`).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Reply, io::Error> {
    let path = req.uri().path();
    if req.method() == Method::POST && matches!(path, "/mcp" | "/rest/add") {
        // The benchmark's MCP server and REST API (crate::tools).
        let mcp = path == "/mcp";
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        return Ok(if mcp {
            match crate::tools::mcp(&body) {
                (status, Some(answer)) => json(status, answer),
                (status, None) => {
                    let mut resp = Response::new(MockBody::full(Bytes::new()));
                    *resp.status_mut() = status;
                    resp
                }
            }
        } else {
            let (status, answer) = crate::tools::rest_add(&body);
            json(status, answer)
        });
    }
    let is_native = req.method() == Method::POST && native::route(path).is_some();
    if !path.starts_with("/v1/") && !is_native {
        return Ok(match (req.method(), path) {
            (&Method::GET | &Method::HEAD, "/health") => {
                json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
            }
            (&Method::GET, "/mock/requests") => {
                json(StatusCode::OK, Bytes::from(shared.recorded()))
            }
            (&Method::GET, "/mock/stats") => json(
                StatusCode::OK,
                serde_json::to_vec(&shared.stats())
                    .map(Bytes::from)
                    .unwrap_or_default(),
            ),
            (method, path) => error(&ApiError::not_found(method.as_str(), path)),
        });
    }
    shared.requests.fetch_add(1, Ordering::Relaxed);
    shared.record_headers(req.headers());

    let (parts, body) = req.into_parts();
    let endpoint = route(&parts.method, parts.uri.path());
    let mut faults = Faults::default();
    let mut fault_error = None;
    if let Some(spec) = parts.headers.get(FAULT_HEADER) {
        let spec = spec
            .to_str()
            .map_err(|_| format!("invalid {FAULT_HEADER} header"));
        if let Err(e) = spec.and_then(|s| faults.add_spec(s)) {
            fault_error = Some(e);
        }
    }
    if let Some(ms) = parts.headers.get(LATENCY_HEADER) {
        match ms
            .to_str()
            .ok()
            .and_then(|ms| ms.trim().parse::<u64>().ok())
        {
            Some(ms) => faults.latency += Duration::from_millis(ms),
            None => fault_error = Some(format!("invalid {LATENCY_HEADER} header")),
        }
    }

    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    if parts.method == Method::POST {
        shared.record_body(parts.uri.path(), &body);
    }
    let native = (parts.method == Method::POST)
        .then(|| native::route(parts.uri.path()))
        .flatten();
    if let Some(native) = native {
        // The model names a fault in the body (Anthropic, Azure) or in the path.
        let model = match &native {
            native::Native::Gemini { model, .. } | native::Native::Bedrock { model, .. } => {
                Some(model.clone())
            }
            _ => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("model")?.as_str().map(str::to_owned)),
        };
        if let Some(spec) = model
            .as_deref()
            .and_then(|m| m.strip_prefix(FAULT_MODEL_PREFIX))
            && let Err(e) = faults.add_spec(spec)
        {
            fault_error = Some(e);
        }
        faults.count_first(&shared.first_counts);
        delay(&shared, &faults).await;
        if let Some(early) = refuse(fault_error, &faults) {
            return early;
        }
        let after = faults.stream_error_after;
        return native::handle(&shared, &native, &parts, &body, &faults, after);
    }
    let json_body = matches!(
        endpoint,
        Endpoint::Chat | Endpoint::Embeddings | Endpoint::Moderations
    )
    .then(|| serde_json::from_slice::<Value>(&body));
    if let Some(Ok(req_json)) = &json_body
        && let Some(spec) = req_json
            .get("model")
            .and_then(Value::as_str)
            .and_then(|m| m.strip_prefix(FAULT_MODEL_PREFIX))
        && let Err(e) = faults.add_spec(spec)
    {
        fault_error = Some(e);
    }
    faults.count_first(&shared.first_counts);

    delay(&shared, &faults).await;
    if let Some(expected) = &shared.expected_auth
        && parts.headers.get(AUTHORIZATION) != Some(expected)
    {
        return Ok(error(&ApiError::bad_api_key()));
    }
    if let Some(early) = refuse(fault_error, &faults) {
        return early;
    }
    if let Some(status) = faults.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(error(&ApiError::injected(status)));
    }

    let result = match (endpoint, json_body) {
        (_, Some(Err(_))) => Err(ApiError::invalid_json()),
        (Endpoint::Chat, Some(Ok(req_json))) => chat(&shared, &req_json, &faults),
        (Endpoint::Embeddings, Some(Ok(req_json))) => embeddings(&shared, &req_json, &faults),
        (Endpoint::Moderations, Some(Ok(req_json))) => moderations(&req_json),
        (Endpoint::Models, _) => Ok(json(StatusCode::OK, protocol::models_body())),
        (Endpoint::Model, _) => {
            let id = parts.uri.path().trim_start_matches("/v1/models/");
            protocol::model_body(id)
                .map(|b| json(StatusCode::OK, b))
                .ok_or_else(|| ApiError {
                    status: StatusCode::NOT_FOUND,
                    message: format!(
                        "The model `{id}` does not exist or you do not have access to it."
                    ),
                    kind: "invalid_request_error",
                    param: None,
                    code: Some("model_not_found"),
                })
        }
        _ => Err(ApiError::not_found(parts.method.as_str(), parts.uri.path())),
    };
    Ok(result.unwrap_or_else(|e| error(&e)))
}

/// Sleeps the configured and the requested latency.
async fn delay(shared: &Shared, faults: &Faults) {
    let latency = shared.opts.latency + faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// The answer for an invalid fault spec, or the dropped connection of a `reset` fault.
fn refuse(fault_error: Option<String>, faults: &Faults) -> Option<Result<Reply, io::Error>> {
    if let Some(message) = fault_error {
        return Some(Ok(error(&ApiError::invalid(
            message,
            None,
            Some("invalid_mock_fault"),
        ))));
    }
    faults.reset.then(|| {
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "weir-mock-upstream: injected reset fault",
        ))
    })
}

/// The OpenAI chat handler for a raw body (Azure paths reuse it).
pub(crate) fn openai_chat(shared: &Arc<Shared>, body: &[u8], faults: &Faults) -> Reply {
    let result = serde_json::from_slice::<Value>(body)
        .map_err(|_| ApiError::invalid_json())
        .and_then(|req| chat(shared, &req, faults));
    result.unwrap_or_else(|e| error(&e))
}

fn chat(shared: &Arc<Shared>, req: &Value, faults: &Faults) -> Result<Reply, ApiError> {
    let params = ChatParams::parse(req)?;
    let id = protocol::next_id("chatcmpl-");
    let created = protocol::unix_now();
    if params.stream {
        let stream = ChatStream::new(
            &params,
            &id,
            created,
            faults.cut_after,
            shared.opts.chunk_delay,
            Arc::clone(shared),
        );
        let mut resp = Response::new(MockBody::Chat(Box::new(stream)));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(resp);
    }
    let body = params.completion_body(&id, created);
    if faults.cut_after.is_some() {
        return Ok(with_json_type(Response::new(MockBody::Truncated(
            Truncated::new(&body, Arc::clone(shared)),
        ))));
    }
    let usage = params.usage();
    shared
        .prompt_tokens
        .fetch_add(usage.prompt_tokens, Ordering::Relaxed);
    shared
        .completion_tokens
        .fetch_add(usage.completion_tokens, Ordering::Relaxed);
    Ok(json(StatusCode::OK, body))
}

/// `POST /v1/moderations` in OpenAI's format. Deterministic: an input is flagged for
/// `violence` when it contains the word `kill`, for `harassment` when it contains `idiot`
/// (case-insensitive); scores are 0.97 for a flagged category and 0.01 otherwise.
fn moderations(req: &Value) -> Result<Reply, ApiError> {
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) => Ok(o
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()),
                _ => Err(protocol::invalid_type("input", "a string or an array")),
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => return Err(protocol::missing("input")),
        Some(_) => return Err(protocol::invalid_type("input", "a string or an array")),
    };
    const CATEGORIES: [(&str, Option<&str>); 4] = [
        ("violence", Some("kill")),
        ("harassment", Some("idiot")),
        ("hate", None),
        ("self-harm", None),
    ];
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let lower = text.to_lowercase();
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            let mut flagged = false;
            for (name, word) in CATEGORIES {
                let hit = word.is_some_and(|word| {
                    lower.split(|c: char| !c.is_alphanumeric()).any(|w| w == word)
                });
                flagged |= hit;
                categories.insert(name.into(), Value::Bool(hit));
                scores.insert(name.into(), serde_json::json!(if hit { 0.97 } else { 0.01 }));
            }
            serde_json::json!({"flagged": flagged, "categories": categories, "category_scores": scores})
        })
        .collect();
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("omni-moderation-latest");
    let body =
        serde_json::json!({"id": protocol::next_id("modr-"), "model": model, "results": results});
    Ok(json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    ))
}

fn embeddings(shared: &Arc<Shared>, req: &Value, faults: &Faults) -> Result<Reply, ApiError> {
    let (body, tokens) = embeddings::embeddings_body(req)?;
    if faults.cut_after.is_some() {
        return Ok(with_json_type(Response::new(MockBody::Truncated(
            Truncated::new(&body, Arc::clone(shared)),
        ))));
    }
    shared.prompt_tokens.fetch_add(tokens, Ordering::Relaxed);
    Ok(json(StatusCode::OK, body))
}

fn with_json_type(mut resp: Reply) -> Reply {
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn json(status: StatusCode, body: Bytes) -> Reply {
    let mut resp = with_json_type(Response::new(MockBody::full(body)));
    *resp.status_mut() = status;
    resp
}

fn error(e: &ApiError) -> Reply {
    let mut resp = json(e.status, e.body());
    if e.retry_after() {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
