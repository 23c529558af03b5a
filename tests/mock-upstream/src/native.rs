//! The native protocols of other providers, with the same deterministic replies, token counts,
//! faults and billing as the OpenAI protocol:
//!
//! | provider | paths | credential |
//! | --- | --- | --- |
//! | Anthropic Messages | `POST /v1/messages` (`anthropic-version` required) | `x-api-key` |
//! | Gemini | `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse` | `x-goog-api-key` (a `key=` query is refused) |
//! | Bedrock Converse | `POST /model/{model}/converse`, `/converse-stream` (event-stream) | SigV4, service `bedrock` |
//! | Azure OpenAI | `POST /openai/deployments/{deployment}/chat/completions?api-version=` | `api-key` |
//! | Azure AI Foundry | `POST /models/chat/completions?api-version=` | `api-key` or `Authorization: Bearer` |
//! | Mistral | `POST /mistral/v1/chat/completions` (`stream_options` refused with 422) | `Authorization: Bearer` |
//!
//! Tool calls: when a request offers tools and its last message is the user's own text, the
//! answer calls the first tool with `{"input": <that text>}` (completion tokens: 3 + a quarter of
//! the arguments' characters); after a tool result the answer is text again.
//!
//! Errors use each provider's envelope; `status-NNN` faults too. `cut-after-N` cuts a stream
//! after N frames (not billed); `stream-error-after-N` sends the provider's in-stream error
//! event after N frames and ends the body cleanly (not billed).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::time::Sleep;

use crate::Shared;
use crate::body::MockBody;
use crate::fault::Faults;
use crate::native_auth::authenticate;
use crate::native_request::{Chat, parse};
use crate::protocol;

pub(crate) type Reply = Response<MockBody>;

/// The native protocol a request speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Native {
    Anthropic,
    Gemini {
        model: String,
        stream: bool,
    },
    Bedrock {
        model: String,
        stream: bool,
    },
    Azure,
    Foundry,
    /// Mistral under `/mistral/v1/chat/completions`: OpenAI's protocol, but `stream_options`
    /// is refused (422) and streams always end with usage.
    Mistral,
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The native protocol of a `POST` path, if it is one.
pub(crate) fn route(path: &str) -> Option<Native> {
    if path == "/v1/messages" {
        return Some(Native::Anthropic);
    }
    if let Some(rest) = path.strip_prefix("/v1beta/models/") {
        let (model, op) = rest.rsplit_once(':')?;
        let stream = match op {
            "generateContent" => false,
            "streamGenerateContent" => true,
            _ => return None,
        };
        return Some(Native::Gemini {
            model: decode(model),
            stream,
        });
    }
    if let Some(rest) = path.strip_prefix("/model/") {
        let (model, op) = rest.rsplit_once('/')?;
        let stream = match op {
            "converse" => false,
            "converse-stream" => true,
            _ => return None,
        };
        return Some(Native::Bedrock {
            model: decode(model),
            stream,
        });
    }
    if path.starts_with("/openai/deployments/") && path.ends_with("/chat/completions") {
        return Some(Native::Azure);
    }
    if path == "/models/chat/completions" {
        return Some(Native::Foundry);
    }
    if path == "/mistral/v1/chat/completions" {
        return Some(Native::Mistral);
    }
    None
}

/// An error in the protocol's own envelope.
pub(crate) fn native_error(native: &Native, status: StatusCode, message: &str) -> Reply {
    let code = status.as_u16();
    let (body, extra): (Value, Option<(&str, &str)>) = match native {
        Native::Anthropic => {
            let kind = match code {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            (
                json!({"type": "error", "error": {"type": kind, "message": message}}),
                Some(("request-id", "req_mock")),
            )
        }
        Native::Gemini { .. } => {
            let s = match code {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            (
                json!({"error": {"code": code, "message": message, "status": s}}),
                None,
            )
        }
        Native::Bedrock { .. } => {
            let t = match code {
                400 => "ValidationException",
                403 => "InvalidSignatureException",
                404 => "ResourceNotFoundException",
                429 => "ThrottlingException",
                503 => "ServiceUnavailableException",
                _ => "InternalServerException",
            };
            (json!({"message": message}), Some(("x-amzn-errortype", t)))
        }
        Native::Azure | Native::Foundry => (
            json!({"error": {"code": code.to_string(), "message": message}}),
            None,
        ),
        Native::Mistral => (
            json!({"object": "error", "message": message, "type": "invalid_request_error", "param": null, "code": null}),
            None,
        ),
    };
    let mut resp = Response::new(MockBody::full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some((n, v)) = extra {
        resp.headers_mut().insert(n, HeaderValue::from_static(v));
    }
    if *native == Native::Anthropic && code == 429 {
        // Anthropic's rate-limit answers say when to come back.
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    resp
}

/// Serves one native request (faults already read; latency already applied).
pub(crate) fn handle(
    shared: &Arc<Shared>,
    native: &Native,
    parts: &Parts,
    body: &Bytes,
    faults: &Faults,
    stream_error_after: Option<u64>,
) -> Result<Reply, io::Error> {
    if let Some(reply) = authenticate(shared, native, parts, body) {
        return Ok(reply);
    }
    if let Some(status) = faults.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match status.as_u16() {
            429 => "Rate limit exceeded (weir-mock-upstream fault)",
            529 => "Overloaded",
            _ => "Injected failure (weir-mock-upstream fault)",
        };
        return Ok(native_error(native, status, message));
    }
    if *native == Native::Mistral {
        let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(body) else {
            return Ok(native_error(
                native,
                StatusCode::BAD_REQUEST,
                "Invalid JSON body",
            ));
        };
        if req.contains_key("stream_options") {
            return Ok(native_error(
                native,
                StatusCode::UNPROCESSABLE_ENTITY,
                "body.stream_options: Extra inputs are not permitted",
            ));
        }
        if req.get("stream") == Some(&json!(true)) {
            // Mistral's streams always end with usage.
            req.insert("stream_options".into(), json!({"include_usage": true}));
        }
        let body = serde_json::to_vec(&Value::Object(req)).unwrap_or_default();
        return Ok(crate::service::openai_chat(shared, &body, faults));
    }
    if matches!(native, Native::Azure | Native::Foundry) {
        let has_version = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .any(|kv| kv.starts_with("api-version=") && kv.len() > "api-version=".len());
        if !has_version {
            return Ok(native_error(
                native,
                StatusCode::NOT_FOUND,
                "Resource not found",
            ));
        }
        // Otherwise the OpenAI protocol.
        return Ok(crate::service::openai_chat(shared, body, faults));
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(native_error(
                native,
                StatusCode::BAD_REQUEST,
                &format!("The request body is not valid JSON: {e}"),
            ));
        }
    };
    let chat = match parse(native, &req) {
        Ok(c) => c,
        Err(m) => return Ok(native_error(native, StatusCode::BAD_REQUEST, &m)),
    };
    if let Some((name, input)) = tool_call(native, &req) {
        return Ok(tool_reply(shared, native, &chat, &name, &input, faults));
    }
    let usage = (chat.prompt_tokens, chat.words);
    if !chat.stream {
        let text = chat.text();
        let id = protocol::next_id("");
        let body = match native {
            Native::Anthropic => json!({
                "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": chat.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": usage.0, "output_tokens": usage.1}}),
            Native::Gemini { .. } => json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": usage.0, "candidatesTokenCount": usage.1, "totalTokenCount": usage.0 + usage.1},
                "modelVersion": chat.model, "responseId": id}),
            _ => json!({
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": usage.0, "outputTokens": usage.1, "totalTokens": usage.0 + usage.1},
                "metrics": {"latencyMs": 1}}),
        };
        let body = Bytes::from(body.to_string());
        if faults.cut_after.is_some() {
            let mut resp = Response::new(MockBody::Truncated(crate::body::Truncated::new(
                &body,
                Arc::clone(shared),
            )));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(resp);
        }
        shared.prompt_tokens.fetch_add(usage.0, Ordering::Relaxed);
        shared
            .completion_tokens
            .fetch_add(usage.1, Ordering::Relaxed);
        let mut resp = Response::new(MockBody::full(body));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(resp);
    }
    let (frames, content_type) = stream_frames(native, &chat);
    let error_frame = stream_error_after.map(|n| (n as usize, error_frame(native)));
    let stream = Frames {
        frames,
        next: 0,
        usage,
        billed: false,
        cut_after: faults.cut_after.map(|n| n as usize),
        error_frame,
        delay: shared.opts.chunk_delay,
        sleep: None,
        flushed: false,
        shared: Arc::clone(shared),
    };
    let mut resp = Response::new(MockBody::Frames(Box::new(stream)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// The tool-call rule: when the request offers tools and its last message is the user's own
/// text (not a tool result), the answer calls the first tool with `{"input": <that text>}`.
fn tool_call(native: &Native, req: &Value) -> Option<(String, Value)> {
    let (first_tool, last, result_key) = match native {
        Native::Anthropic => (
            req.pointer("/tools/0/name"),
            req.get("messages")?.as_array()?.last()?,
            "tool_result",
        ),
        Native::Gemini { .. } => (
            req.pointer("/tools/0/functionDeclarations/0/name"),
            req.get("contents")?.as_array()?.last()?,
            "functionResponse",
        ),
        _ => (
            req.pointer("/toolConfig/tools/0/toolSpec/name"),
            req.get("messages")?.as_array()?.last()?,
            "toolResult",
        ),
    };
    let name = first_tool?.as_str()?.to_owned();
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let items = last.get("content").or_else(|| last.get("parts"))?;
    let mut text = String::new();
    match items {
        Value::String(s) => text.push_str(s),
        Value::Array(items) => {
            for item in items {
                if item.get(result_key).is_some()
                    || item.get("type").and_then(Value::as_str) == Some(result_key)
                {
                    return None;
                }
                if let Some(t) = item.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
        }
        _ => return None,
    }
    Some((name, json!({"input": text})))
}

fn tool_reply(
    shared: &Arc<Shared>,
    native: &Native,
    chat: &Chat,
    name: &str,
    input: &Value,
    faults: &Faults,
) -> Reply {
    let args = input.to_string();
    let usage = (
        chat.prompt_tokens,
        3 + (args.chars().count() as u64).div_ceil(4),
    );
    let (p, c) = usage;
    let (half_a, half_b) = args.split_at(args.len() / 2);
    let mut frames = Vec::new();
    let content_type = if chat.stream {
        match native {
            Native::Anthropic => {
                frames.push(sse(Some("message_start"), &json!({"type": "message_start", "message": {
                    "id": protocol::next_id("msg_"), "type": "message", "role": "assistant", "model": chat.model,
                    "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": p, "output_tokens": 1}}})));
                frames.push(sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": "toolu_mock_0", "name": name, "input": {}}})));
                for part in [half_a, half_b] {
                    frames.push(sse(
                        Some("content_block_delta"),
                        &json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": part}}),
                    ));
                }
                frames.push(sse(
                    Some("content_block_stop"),
                    &json!({"type": "content_block_stop", "index": 0}),
                ));
                frames.push(sse(Some("message_delta"), &json!({"type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": c}})));
                frames.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
                "text/event-stream; charset=utf-8"
            }
            Native::Gemini { .. } => {
                frames.push(sse(None, &json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": input}}]},
                    "finishReason": "STOP", "index": 0}], "modelVersion": chat.model,
                    "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c}})));
                "text/event-stream"
            }
            _ => {
                frames.push(event_stream("messageStart", &json!({"role": "assistant"})));
                frames.push(event_stream(
                    "contentBlockStart",
                    &json!({"contentBlockIndex": 0,
                    "start": {"toolUse": {"toolUseId": "tooluse_mock_0", "name": name}}}),
                ));
                for part in [half_a, half_b] {
                    frames.push(event_stream(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": part}}}),
                    ));
                }
                frames.push(event_stream(
                    "contentBlockStop",
                    &json!({"contentBlockIndex": 0}),
                ));
                frames.push(event_stream(
                    "messageStop",
                    &json!({"stopReason": "tool_use"}),
                ));
                frames.push(event_stream("metadata", &json!({"usage": {"inputTokens": p, "outputTokens": c, "totalTokens": p + c}, "metrics": {"latencyMs": 1}})));
                "application/vnd.amazon.eventstream"
            }
        }
    } else {
        let body = match native {
            Native::Anthropic => {
                json!({"id": protocol::next_id("msg_"), "type": "message", "role": "assistant", "model": chat.model,
                "content": [{"type": "tool_use", "id": "toolu_mock_0", "name": name, "input": input}],
                "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": p, "output_tokens": c}})
            }
            Native::Gemini { .. } => {
                json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": input}}]},
                "finishReason": "STOP", "index": 0}], "modelVersion": chat.model,
                "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c}})
            }
            _ => {
                json!({"output": {"message": {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_mock_0", "name": name, "input": input}}]}},
                "stopReason": "tool_use", "usage": {"inputTokens": p, "outputTokens": c, "totalTokens": p + c}, "metrics": {"latencyMs": 1}})
            }
        };
        frames.push(Bytes::from(body.to_string()));
        "application/json"
    };
    let stream = Frames {
        frames,
        next: 0,
        usage,
        billed: false,
        cut_after: faults.cut_after.map(|n| n as usize),
        error_frame: None,
        delay: shared.opts.chunk_delay,
        sleep: None,
        flushed: false,
        shared: Arc::clone(shared),
    };
    let mut resp = Response::new(MockBody::Frames(Box::new(stream)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    Bytes::from(match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\r\n\r\n"),
    })
}

fn event_stream(kind: &str, data: &Value) -> Bytes {
    Bytes::from(weir_llm::eventstream::encode(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        data.to_string().as_bytes(),
    ))
}

fn error_frame(native: &Native) -> Bytes {
    match native {
        Native::Anthropic => sse(
            Some("error"),
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        Native::Gemini { .. } => sse(
            None,
            &json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        ),
        _ => Bytes::from(weir_llm::eventstream::encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
            ],
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        )),
    }
}

/// The frames of a streamed answer; the last one carries the usage.
fn stream_frames(native: &Native, chat: &Chat) -> (Vec<Bytes>, &'static str) {
    let (p, c) = (chat.prompt_tokens, chat.words);
    let mut f = Vec::new();
    match native {
        Native::Anthropic => {
            let id = protocol::next_id("msg_");
            f.push(sse(Some("message_start"), &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": chat.model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": p, "output_tokens": 1}}})));
            f.push(sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            f.push(sse(Some("ping"), &json!({"type": "ping"})));
            for i in 0..c {
                f.push(sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": chat.piece(i)}})));
            }
            f.push(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            f.push(sse(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": c}})));
            f.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
            (f, "text/event-stream; charset=utf-8")
        }
        Native::Gemini { .. } => {
            let id = protocol::next_id("");
            for i in 0..c {
                let mut chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": chat.piece(i)}]}, "index": 0}],
                    "modelVersion": chat.model, "responseId": id});
                if i + 1 == c {
                    chunk["candidates"][0]["finishReason"] = json!("STOP");
                    chunk["usageMetadata"] = json!({"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c});
                }
                f.push(sse(None, &chunk));
            }
            if c == 0 {
                f.push(sse(None, &json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": 0, "totalTokenCount": p}, "modelVersion": chat.model})));
            }
            (f, "text/event-stream")
        }
        _ => {
            f.push(event_stream("messageStart", &json!({"role": "assistant"})));
            for i in 0..c {
                f.push(event_stream(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"text": chat.piece(i)}}),
                ));
            }
            f.push(event_stream(
                "contentBlockStop",
                &json!({"contentBlockIndex": 0}),
            ));
            f.push(event_stream(
                "messageStop",
                &json!({"stopReason": "end_turn"}),
            ));
            f.push(event_stream("metadata", &json!({"usage": {"inputTokens": p, "outputTokens": c, "totalTokens": p + c}, "metrics": {"latencyMs": 1}})));
            (f, "application/vnd.amazon.eventstream")
        }
    }
}

/// A stream of prepared frames. The usage (carried by the last frame) is billed once hyper has
/// taken that frame, i.e. when it polls for the next one.
#[derive(Debug)]
pub(crate) struct Frames {
    frames: Vec<Bytes>,
    next: usize,
    usage: (u64, u64),
    billed: bool,
    cut_after: Option<usize>,
    error_frame: Option<(usize, Bytes)>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    flushed: bool,
    shared: Arc<Shared>,
}

impl Frames {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.next == self.frames.len() {
            if !self.billed {
                self.billed = true;
                self.shared
                    .prompt_tokens
                    .fetch_add(self.usage.0, Ordering::Relaxed);
                self.shared
                    .completion_tokens
                    .fetch_add(self.usage.1, Ordering::Relaxed);
                self.shared
                    .completed_streams
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Poll::Ready(None);
        }
        if self.next > self.frames.len() {
            return Poll::Ready(None);
        }
        if self.cut_after == Some(self.next) {
            if !self.flushed {
                // Pending once so hyper flushes the frames already taken before the abort.
                self.flushed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.next = usize::MAX;
            self.shared.cut_streams.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "weir-mock-upstream: injected cut",
            ))));
        }
        if let Some((n, frame)) = &self.error_frame
            && *n == self.next
        {
            let frame = frame.clone();
            self.next = usize::MAX;
            self.shared.cut_streams.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if self.next > 0 && !self.delay.is_zero() {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.delay)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        let frame = self.frames[self.next].clone();
        self.next += 1;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

use std::future::Future as _;
