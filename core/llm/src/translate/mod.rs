//! Translation between the OpenAI chat-completions format (what clients send, what policies see)
//! and each provider's native API, requests, responses, errors and streams.
//!
//! Everything here is a pure function or a push-based state machine over bytes: no I/O, no clock
//! (callers pass `created`), so the same code runs in the `weir` host and in the edge apps.
//!
//! - [`ProviderKind`] names the provider families and how each authenticates;
//! - [`request`] builds the native request (path, headers, body) from an OpenAI-format body;
//! - [`response`] turns a native answer into a `chat.completion`;
//! - [`error`] reads the provider's error message out of a native error body;
//! - [`StreamDecoder`] turns a native stream (Anthropic SSE, Gemini SSE, Bedrock event-stream)
//!   into OpenAI `chat.completion.chunk` SSE bytes, event by event;
//! - [`anthropic::inbound`] serves the other direction for `/v1/messages` clients.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
mod openai;

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// The API family of a provider: how requests, answers, streams and credentials look. The
/// configuration's `kind` (`kind: anthropic`), with these names.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// OpenAI and OpenAI-compatible servers (vLLM, Ollama, LiteLLM...): passed through.
    #[default]
    Openai,
    /// Azure OpenAI: deployments in the path, `api-version` query, `api-key` header.
    AzureOpenai,
    /// Azure AI Foundry model inference: `/models/...?api-version=`, `api-key` header.
    AzureAiFoundry,
    /// Mistral La Plateforme (OpenAI-compatible; streams always end with usage).
    Mistral,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini `generateContent` / `streamGenerateContent`.
    Gemini,
    /// AWS Bedrock Converse / ConverseStream, SigV4-signed.
    AwsBedrock,
}

impl ProviderKind {
    /// Every kind, for tables and validation messages.
    pub const ALL: [ProviderKind; 7] = [
        Self::Openai,
        Self::AzureOpenai,
        Self::AzureAiFoundry,
        Self::Mistral,
        Self::Anthropic,
        Self::Gemini,
        Self::AwsBedrock,
    ];

    /// The name configuration uses (`kind: anthropic`), also the built-in template's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::AzureOpenai => "azure-openai",
            Self::AzureAiFoundry => "azure-ai-foundry",
            Self::Mistral => "mistral",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::AwsBedrock => "aws-bedrock",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether request and answer bodies are OpenAI's own (only URL and credentials differ).
    pub const fn is_openai_compatible(self) -> bool {
        matches!(
            self,
            Self::Openai | Self::AzureOpenai | Self::AzureAiFoundry | Self::Mistral
        )
    }

    /// The endpoints (OpenAI names) the dialect can serve.
    pub fn supports(self, endpoint: &str) -> bool {
        match self {
            Self::Openai | Self::AzureOpenai | Self::Mistral => true,
            Self::AzureAiFoundry => endpoint != "completions",
            Self::Anthropic | Self::Gemini | Self::AwsBedrock => endpoint == "chat/completions",
        }
    }
}

/// What a native request is made of, before credentials are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeRequest {
    /// Path and query, appended to the provider's base URL (starts with `/`).
    pub path: String,
    /// Headers besides credentials (content type, API version...).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Where a request goes within a provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    /// Azure: the `api-version` query parameter (a default applies when `None`).
    pub api_version: Option<&'a str>,
    /// Azure OpenAI: the deployment serving the requested model (the model name when `None`).
    pub deployment: Option<&'a str>,
}

/// Default `api-version` for Azure OpenAI.
pub const AZURE_OPENAI_API_VERSION: &str = "2024-10-21";
/// Default `api-version` for Azure AI Foundry model inference.
pub const AZURE_AI_FOUNDRY_API_VERSION: &str = "2024-05-01-preview";
/// The `anthropic-version` header weir speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Why a request cannot be translated: the client's error (400), naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid value for `{field}`: {message}")]
pub struct TranslateError {
    pub field: String,
    pub message: String,
}

impl TranslateError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Builds the native request for an OpenAI-format `endpoint` (`chat/completions`...) body.
///
/// OpenAI-compatible dialects keep the body as it is (byte for byte); the others translate chat
/// completions and refuse other endpoints.
pub fn request(
    dialect: ProviderKind,
    endpoint: &str,
    target: Target<'_>,
    body: &[u8],
    stream: bool,
) -> Result<NativeRequest, TranslateError> {
    let json_type = || vec![("content-type".to_owned(), "application/json".to_owned())];
    match dialect {
        ProviderKind::Openai => Ok(NativeRequest {
            path: format!("/{endpoint}"),
            headers: json_type(),
            body: body.to_vec(),
        }),
        ProviderKind::Mistral => Ok(NativeRequest {
            path: format!("/{endpoint}"),
            headers: json_type(),
            body: without_stream_options(body),
        }),
        ProviderKind::AzureOpenai => {
            let model = || {
                serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("model")?.as_str().map(str::to_owned))
            };
            let deployment = match target.deployment {
                Some(d) => d.to_owned(),
                None => model().ok_or_else(|| {
                    TranslateError::new("model", "Azure OpenAI needs a model to pick a deployment")
                })?,
            };
            Ok(NativeRequest {
                path: format!(
                    "/openai/deployments/{}/{endpoint}?api-version={}",
                    encode_path_segment(&deployment),
                    target.api_version.unwrap_or(AZURE_OPENAI_API_VERSION)
                ),
                headers: json_type(),
                body: body.to_vec(),
            })
        }
        ProviderKind::AzureAiFoundry => Ok(NativeRequest {
            path: format!(
                "/models/{endpoint}?api-version={}",
                target.api_version.unwrap_or(AZURE_AI_FOUNDRY_API_VERSION)
            ),
            headers: json_type(),
            body: body.to_vec(),
        }),
        ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::AwsBedrock => {
            if endpoint != "chat/completions" {
                return Err(TranslateError::new(
                    "endpoint",
                    format!(
                        "`{endpoint}` is not available for {} providers",
                        dialect.name()
                    ),
                ));
            }
            let req: Value = serde_json::from_slice(body)
                .map_err(|e| TranslateError::new("body", e.to_string()))?;
            let chat = openai::ChatRequest::parse(&req)?;
            match dialect {
                ProviderKind::Anthropic => {
                    let body = anthropic::request(&chat, stream)?;
                    Ok(NativeRequest {
                        path: "/messages".into(),
                        headers: vec![
                            ("content-type".into(), "application/json".into()),
                            ("anthropic-version".into(), ANTHROPIC_VERSION.into()),
                        ],
                        body: to_vec(&body),
                    })
                }
                ProviderKind::Gemini => {
                    let body = gemini::request(&chat)?;
                    let model = encode_path_segment(chat.model);
                    let path = if stream {
                        format!("/models/{model}:streamGenerateContent?alt=sse")
                    } else {
                        format!("/models/{model}:generateContent")
                    };
                    Ok(NativeRequest {
                        path,
                        headers: json_type(),
                        body: to_vec(&body),
                    })
                }
                _ => {
                    let body = bedrock::request(&chat)?;
                    let model = encode_path_segment(chat.model);
                    let op = if stream {
                        "converse-stream"
                    } else {
                        "converse"
                    };
                    Ok(NativeRequest {
                        path: format!("/model/{model}/{op}"),
                        headers: json_type(),
                        body: to_vec(&body),
                    })
                }
            }
        }
    }
}

/// Mistral refuses `stream_options` (422 "Extra inputs are not permitted") and always ends a
/// stream with usage: the field is removed.
fn without_stream_options(body: &[u8]) -> Vec<u8> {
    let needle: &[u8] = b"\"stream_options\"";
    if !body.windows(needle.len()).any(|w| w == needle) {
        return body.to_vec();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            m.remove("stream_options");
            to_vec(&Value::Object(m))
        }
        _ => body.to_vec(),
    }
}

/// Turns a native success body into a `chat.completion` body; OpenAI-compatible bodies are kept.
/// `created` is the Unix time in seconds; `fallback_model` the requested model.
pub fn response(
    dialect: ProviderKind,
    body: Bytes,
    created: u64,
    fallback_model: &str,
) -> Result<Bytes, TranslateError> {
    if dialect.is_openai_compatible() {
        return Ok(body);
    }
    let native: Value = serde_json::from_slice(&body)
        .map_err(|e| TranslateError::new("response", format!("not JSON: {e}")))?;
    let out = match dialect {
        ProviderKind::Anthropic => anthropic::response(&native, created)?,
        ProviderKind::Gemini => gemini::response(&native, created, fallback_model)?,
        _ => bedrock::response(&native, created, fallback_model)?,
    };
    Ok(Bytes::from(to_vec(&out)))
}

/// A provider's error, read from its native error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// The provider's own message (never contains our credentials: providers do not echo them).
    pub message: String,
    /// The provider's error type/code (`rate_limit_error`, `RESOURCE_EXHAUSTED`...), if any.
    pub kind: Option<String>,
}

/// Reads the message of a native error answer (any dialect), with `headers` for Bedrock's
/// `x-amzn-errortype`. Falls back to a generic message naming the status.
pub fn error(
    dialect: ProviderKind,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let (message, kind) = match dialect {
        ProviderKind::Anthropic => (s(v.pointer("/error/message")), s(v.pointer("/error/type"))),
        ProviderKind::Gemini => (
            s(v.pointer("/error/message")),
            s(v.pointer("/error/status")),
        ),
        ProviderKind::AwsBedrock => (
            s(v.get("message")).or_else(|| s(v.get("Message"))),
            headers
                .iter()
                .find(|(n, _)| n == "x-amzn-errortype")
                .map(|(_, t)| t.split(':').next().unwrap_or(t).to_owned()),
        ),
        // OpenAI's envelope; Mistral's `{"object":"error","message":..,"type":..}` too.
        _ => (
            s(v.pointer("/error/message")).or_else(|| s(v.get("message"))),
            s(v.pointer("/error/code"))
                .or_else(|| s(v.get("type")))
                .or_else(|| s(v.pointer("/error/type")))
                .or_else(|| v.pointer("/error/code").map(|c| c.to_string())),
        ),
    };
    ProviderError {
        message: message.unwrap_or_else(|| format!("The provider answered with status {status}.")),
        kind,
    }
}

/// The status a client sees for a provider's error status (Anthropic's 529 "overloaded" is a 503).
pub fn client_status(status: u16) -> u16 {
    match status {
        529 => 503,
        s if (400..600).contains(&s) => s,
        _ => 502,
    }
}

/// Decodes a native stream into OpenAI `chat.completion.chunk` SSE bytes (`data: {...}\n\n`,
/// ending with the usage chunk and `data: [DONE]` once the provider finished the answer).
#[derive(Debug)]
pub enum StreamDecoder {
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
    Bedrock(bedrock::StreamDecoder),
}

impl StreamDecoder {
    /// The decoder for a dialect's streams; `None` when its streams already are OpenAI's.
    pub fn new(dialect: ProviderKind, created: u64, model: &str) -> Option<Self> {
        let chunks = ChunkWriter::new(created, model);
        match dialect {
            ProviderKind::Anthropic => Some(Self::Anthropic(anthropic::StreamDecoder::new(chunks))),
            ProviderKind::Gemini => Some(Self::Gemini(gemini::StreamDecoder::new(chunks))),
            ProviderKind::AwsBedrock => Some(Self::Bedrock(bedrock::StreamDecoder::new(chunks))),
            _ => None,
        }
    }

    /// Feeds received bytes; returns the OpenAI SSE bytes completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Self::Anthropic(d) => d.push(bytes),
            Self::Gemini(d) => d.push(bytes),
            Self::Bedrock(d) => d.push(bytes),
        }
    }
}

/// Writes OpenAI chunks for the stream decoders.
#[derive(Debug)]
pub struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
    out: Vec<u8>,
    finish_reason: Option<&'static str>,
    done: bool,
}

impl ChunkWriter {
    fn new(created: u64, model: &str) -> Self {
        Self {
            id: String::from("chatcmpl-weir"),
            created,
            model: model.to_owned(),
            out: Vec::new(),
            finish_reason: None,
            done: false,
        }
    }

    fn set_id(&mut self, id: &str) {
        id.clone_into(&mut self.id);
    }

    fn set_model(&mut self, model: &str) {
        if !model.is_empty() {
            model.clone_into(&mut self.model);
        }
    }

    fn event(&mut self, value: &Value) {
        self.out.extend_from_slice(b"data: ");
        self.out.extend_from_slice(&to_vec(value));
        self.out.extend_from_slice(b"\n\n");
    }

    /// A chunk with one choice delta.
    fn delta(&mut self, delta: &Value, finish_reason: Option<&str>) {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        self.event(&chunk);
    }

    fn role(&mut self) {
        self.delta(&json!({"role": "assistant", "content": ""}), None);
    }

    fn text(&mut self, text: &str) {
        if !text.is_empty() {
            self.delta(&json!({"content": text}), None);
        }
    }

    fn tool_start(&mut self, index: usize, id: &str, name: &str) {
        self.delta(
            &json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            None,
        );
    }

    fn tool_arguments(&mut self, index: usize, arguments: &str) {
        if !arguments.is_empty() {
            self.delta(
                &json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                None,
            );
        }
    }

    fn finish(&mut self, reason: &'static str) {
        if self.finish_reason.is_none() {
            self.finish_reason = Some(reason);
            self.delta(&json!({}), Some(reason));
        }
    }

    /// The usage chunk and `[DONE]`: the answer is complete.
    fn done(&mut self, usage: &Value) {
        if self.done {
            return;
        }
        self.done = true;
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        });
        self.event(&chunk);
        self.out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// An error reported inside the stream by the provider: an OpenAI error event. No `[DONE]`
    /// follows, so the gateway ends the stream as failed.
    fn error(&mut self, message: &str, kind: &str) {
        let body =
            json!({"error": {"message": message, "type": kind, "param": null, "code": kind}});
        self.event(&body);
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// Appends a turn `{"role": role, key: items}`, merging it into the previous one when the role
/// is the same (providers want the tool results of parallel calls in one turn).
pub(crate) fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, mut items: Vec<Value>) {
    if let Some(last) = turns.last_mut()
        && last["role"] == role
        && let Some(existing) = last[key].as_array_mut()
    {
        existing.append(&mut items);
        return;
    }
    let mut turn = Map::new();
    turn.insert("role".into(), json!(role));
    turn.insert(key.into(), Value::Array(items));
    turns.push(Value::Object(turn));
}

/// Feeds bytes to an SSE framer; returns the complete JSON `data:` events, parsed.
pub(crate) fn json_events(framer: &mut crate::sse::SseFramer, bytes: &[u8]) -> Vec<Value> {
    framer.push(bytes);
    std::iter::from_fn(|| framer.next_event())
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .collect()
}

/// OpenAI usage JSON.
pub(crate) fn usage_json(prompt: u64, completion: u64, cached: u64) -> Value {
    let mut u = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    });
    if cached > 0 {
        u["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    u
}

/// A `chat.completion` body.
pub(crate) fn completion(
    id: &str,
    created: u64,
    model: &str,
    message: &Value,
    finish_reason: &str,
    usage: &Value,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": usage,
    })
}

/// The assistant message of a completion from text and tool calls.
pub(crate) fn assistant_message(text: &str, tool_calls: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    m.insert(
        "content".into(),
        if text.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !tool_calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    m.insert("refusal".into(), Value::Null);
    Value::Object(m)
}

/// One OpenAI tool call of a completion.
pub(crate) fn tool_call(id: &str, name: &str, arguments: &Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments.to_string()}})
}

pub(crate) fn to_vec(v: &Value) -> Vec<u8> {
    // Serialising a Value cannot fail (keys are strings).
    serde_json::to_vec(v).unwrap_or_default()
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters stay).
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits a `data:` URL into its media type and base64 data.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

#[cfg(test)]
mod tests;
