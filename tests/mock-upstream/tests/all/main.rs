//! End-to-end tests of the mock provider through a real HTTP client (hyper-util's legacy client).
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir_mock_upstream::{MockOptions, MockServer, Stats, count_prompt_tokens, reply_text};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start(opts: MockOptions) -> MockServer {
    MockServer::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap()
}

async fn send(
    client: &HttpClient,
    server: &MockServer,
    method: Method,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.base_url()));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = Full::new(Bytes::copy_from_slice(body.unwrap_or_default()));
    client.request(req.body(body).unwrap()).await
}

async fn post(
    client: &HttpClient,
    server: &MockServer,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    send(
        client,
        server,
        Method::POST,
        path,
        Some(body.to_string().as_bytes()),
        headers,
    )
    .await
    .unwrap()
}

async fn get(client: &HttpClient, server: &MockServer, path: &str) -> Response<Incoming> {
    send(client, server, Method::GET, path, None, &[])
        .await
        .unwrap()
}

async fn body_json(resp: Response<Incoming>) -> Value {
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

fn content_type(resp: &Response<Incoming>) -> &str {
    resp.headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
}

/// Splits a server-sent-event body into its `data:` payloads.
fn sse_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect()
}

fn chat_body(model: &str, stream: bool, include_usage: bool, max_tokens: Option<u64>) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": "Say something, please."}]},
        ],
        "stream": stream,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Some(n) = max_tokens {
        body["max_tokens"] = json!(n);
    }
    body
}

mod chat;
mod endpoints;
mod faults;
