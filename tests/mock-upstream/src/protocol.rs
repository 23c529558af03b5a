//! OpenAI wire format for chat completions and models: request validation, response bodies,
//! error bodies and the deterministic token/text helpers that tests use to compute expected results.

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Completion tokens when the request sets neither `max_completion_tokens` nor `max_tokens`.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 16;
/// Upper bound on completion tokens (words) of one reply.
pub const MAX_COMPLETION_TOKENS: u64 = 4096;
/// Model ids listed by `GET /v1/models`.
pub const MODEL_IDS: [&str; 4] = [
    "mock-gpt",
    "mock-gpt-mini",
    "mock-reasoner",
    "mock-embedding",
];

/// Prompt tokens of a chat `messages` array: for each message, `3 + ceil(chars / 4)` where
/// `chars` counts the characters of its text content (a string, or the `text` of every
/// `{"type":"text"}` part of an array). Anything that is not an array counts 0.
pub fn count_prompt_tokens(messages: &Value) -> u64 {
    messages.as_array().map_or(0, |msgs| {
        msgs.iter()
            .map(|m| 3 + content_chars(m.get("content")).div_ceil(4))
            .sum()
    })
}

/// Tokens of one text input (embeddings): `ceil(chars / 4)`.
pub fn count_text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn content_chars(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(s)) => s.chars().count() as u64,
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|s| s.chars().count() as u64)
            .sum(),
        _ => 0,
    }
}

/// Models whose name starts with this answer with the text of the last user message, streamed
/// in pieces of [`ECHO_PIECE_CHARS`] characters (one completion token each), so tests can see
/// what the provider received come back, split across events.
pub const ECHO_MODEL_PREFIX: &str = "mock-echo";
/// Characters per streamed piece of an echo answer.
pub const ECHO_PIECE_CHARS: usize = 3;

/// The echo answer of a chat request: the last user message's text, in pieces.
pub fn echo_pieces(messages: &Value) -> Vec<String> {
    let text = messages
        .as_array()
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            _ => String::new(),
        })
        .unwrap_or_default();
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(ECHO_PIECE_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

/// The `i`-th streamed content piece: `"mock0"`, then `" mock1"`, `" mock2"`, …
pub fn reply_piece(i: u64) -> String {
    if i == 0 {
        "mock0".to_owned()
    } else {
        format!(" mock{i}")
    }
}

/// The full reply text of `words` words: `"mock0 mock1 … mock{words-1}"`. The streamed pieces
/// ([`reply_piece`]) concatenate to exactly this.
pub fn reply_text(words: u64) -> String {
    let mut s = String::with_capacity(words as usize * 8);
    for i in 0..words {
        s.push_str(&reply_piece(i));
    }
    s
}

/// A fresh, process-unique response id with the given prefix (`chatcmpl-`).
pub(crate) fn next_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}mock{:012x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An OpenAI-style error response.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn invalid(
        message: impl Into<String>,
        param: Option<&'static str>,
        code: Option<&'static str>,
    ) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code,
        }
    }

    pub(crate) fn invalid_json() -> Self {
        Self::invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your \
             HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            None,
            None,
        )
    }

    pub(crate) fn bad_api_key() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect API key provided".to_owned(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    pub(crate) fn not_found(method: &str, path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("Invalid URL ({method} {path})"),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// The error for an injected `status-NNN` fault.
    pub(crate) fn injected(status: StatusCode) -> Self {
        let (message, kind, code) = match status.as_u16() {
            429 => (
                "Rate limit reached for mock-gpt in organization org-mock on requests per min (RPM): Limit 1, \
                 Used 1, Requested 1. Please try again in 1s.",
                "requests",
                Some("rate_limit_exceeded"),
            ),
            500 => (
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
            502 => ("Bad gateway.", "server_error", None),
            503 => (
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            ),
            s if s >= 500 => (
                "The server had an error while processing your request.",
                "server_error",
                None,
            ),
            _ => ("Injected mock error.", "invalid_request_error", None),
        };
        Self {
            status,
            message: message.to_owned(),
            kind,
            param: None,
            code,
        }
    }

    /// Whether the response carries `retry-after: 1`.
    pub(crate) fn retry_after(&self) -> bool {
        matches!(self.status.as_u16(), 429 | 503)
    }

    pub(crate) fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let e = Outer {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        serde_json::to_vec(&e).map(Bytes::from).unwrap_or_default()
    }
}

/// Token usage of one response.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The validated parameters of a chat completion request.
#[derive(Debug)]
pub(crate) struct ChatParams<'a> {
    pub model: &'a str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `max_completion_tokens`/`max_tokens` was set, so the reply ends with `finish_reason: "length"`.
    pub limited: bool,
    pub stream: bool,
    pub include_usage: bool,
    /// The pieces of an echo answer ([`ECHO_MODEL_PREFIX`]).
    pub echo: Option<std::sync::Arc<[String]>>,
}

impl<'a> ChatParams<'a> {
    pub(crate) fn parse(req: &'a Value) -> Result<Self, ApiError> {
        let model = required_str(req, "model")?;
        let messages = match req.get("messages") {
            None | Some(Value::Null) => return Err(missing("messages")),
            Some(m @ Value::Array(_)) => m,
            Some(_) => return Err(invalid_type("messages", "an array of objects")),
        };
        let max = match opt_positive(req, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => opt_positive(req, "max_tokens")?,
        };
        let stream = opt_bool(req, "stream")?;
        let include_usage = match req.get("stream_options") {
            Some(opts @ Value::Object(_)) => opt_bool(opts, "include_usage")?,
            None | Some(Value::Null) => false,
            Some(_) => return Err(invalid_type("stream_options", "an object")),
        };
        let echo = model
            .starts_with(ECHO_MODEL_PREFIX)
            .then(|| std::sync::Arc::from(echo_pieces(messages)));
        Ok(Self {
            model,
            prompt_tokens: count_prompt_tokens(messages),
            completion_tokens: max
                .unwrap_or(DEFAULT_COMPLETION_TOKENS)
                .min(MAX_COMPLETION_TOKENS),
            limited: max.is_some(),
            stream,
            include_usage,
            echo,
        }
        .echoing())
    }

    /// An echo answer is as long as its pieces and ends with `stop`.
    fn echoing(mut self) -> Self {
        if let Some(pieces) = &self.echo {
            self.completion_tokens = pieces.len() as u64;
            self.limited = false;
        }
        self
    }

    pub(crate) fn finish_reason(&self) -> &'static str {
        if self.limited { "length" } else { "stop" }
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.completion_tokens)
    }

    /// The non-streamed `chat.completion` body.
    pub(crate) fn completion_body(&self, id: &str, created: u64) -> Bytes {
        #[derive(Serialize)]
        struct Completion<'a> {
            id: &'a str,
            object: &'static str,
            created: u64,
            model: &'a str,
            choices: [Choice<'a>; 1],
            usage: Usage,
            system_fingerprint: &'static str,
        }
        #[derive(Serialize)]
        struct Choice<'a> {
            index: u32,
            message: Message<'a>,
            logprobs: Option<()>,
            finish_reason: &'static str,
        }
        #[derive(Serialize)]
        struct Message<'a> {
            role: &'static str,
            content: &'a str,
            refusal: Option<()>,
        }
        let text = match &self.echo {
            Some(pieces) => pieces.concat(),
            None => reply_text(self.completion_tokens),
        };
        let body = Completion {
            id,
            object: "chat.completion",
            created,
            model: self.model,
            choices: [Choice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: &text,
                    refusal: None,
                },
                logprobs: None,
                finish_reason: self.finish_reason(),
            }],
            usage: self.usage(),
            system_fingerprint: "fp_mock",
        };
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// `GET /v1/models` body.
pub(crate) fn models_body() -> Bytes {
    let data: Vec<Value> = MODEL_IDS.iter().map(|id| model_object(id)).collect();
    Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
}

/// `GET /v1/models/{id}` body, if the model exists.
pub(crate) fn model_body(id: &str) -> Option<Bytes> {
    MODEL_IDS
        .contains(&id)
        .then(|| Bytes::from(model_object(id).to_string()))
}

fn model_object(id: &str) -> Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "weir-mock"})
}

pub(crate) fn missing(param: &'static str) -> ApiError {
    ApiError::invalid(
        format!("Missing required parameter: '{param}'."),
        Some(param),
        Some("missing_required_parameter"),
    )
}

pub(crate) fn invalid_type(param: &'static str, expected: &str) -> ApiError {
    ApiError::invalid(
        format!("Invalid type for '{param}': expected {expected}."),
        Some(param),
        Some("invalid_type"),
    )
}

pub(crate) fn required_str<'a>(req: &'a Value, param: &'static str) -> Result<&'a str, ApiError> {
    match req.get(param) {
        None | Some(Value::Null) => Err(missing(param)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid_type(param, "a string")),
    }
}

fn opt_bool(req: &Value, param: &'static str) -> Result<bool, ApiError> {
    match req.get(param) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid_type(param, "a boolean")),
    }
}

fn opt_positive(req: &Value, param: &'static str) -> Result<Option<u64>, ApiError> {
    match req.get(param) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(0) => Err(ApiError::invalid(
                format!(
                    "Invalid '{param}': integer below minimum value. Expected a value >= 1, but got 0 instead."
                ),
                Some(param),
                Some("integer_below_min_value"),
            )),
            Some(n) => Ok(Some(n)),
            None => Err(invalid_type(param, "an integer")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_tokens_follow_the_documented_formula() {
        let msgs = json!([
            {"role": "system", "content": "abcd"},                      // 3 + 1
            {"role": "user", "content": "hello"},                       // 3 + 2
            {"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "image_url"}, {"type": "text", "text": "cde"}]}, // 3 + 2
            {"role": "assistant", "content": null},                    // 3 + 0
        ]);
        assert_eq!(count_prompt_tokens(&msgs), 4 + 5 + 5 + 3);
        assert_eq!(count_prompt_tokens(&json!("x")), 0);
        assert_eq!(count_text_tokens("héllo"), 2);
    }

    #[test]
    fn pieces_concatenate_to_text() {
        let joined: String = (0..5).map(reply_piece).collect();
        assert_eq!(joined, reply_text(5));
        assert_eq!(reply_text(3), "mock0 mock1 mock2");
    }
}
