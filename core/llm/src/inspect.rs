//! Reading OpenAI-format requests.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The facts about an LLM request that policies and the data plane need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmRequestInfo {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub stream: bool,
    /// Whether the client itself asked for a usage chunk (`stream_options.include_usage`).
    pub client_wants_stream_usage: bool,
    /// About one token per three bytes of prompt JSON: an over-estimate for English text, so a
    /// reservation based on it rarely needs to grow at settlement.
    pub estimated_prompt_tokens: u64,
    /// The names of the tools the request offers the model.
    pub tools: Vec<String>,
    /// How many messages the request has (chat requests).
    pub message_count: u32,
}

/// Why a request body was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// Not JSON, or not valid UTF-8.
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    /// JSON, but a field has the wrong shape.
    #[error("Invalid value for `{field}`: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
}

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<&'a RawValue>,
    #[serde(default)]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    messages: Option<&'a RawValue>,
    #[serde(default)]
    input: Option<&'a RawValue>,
    #[serde(default)]
    prompt: Option<&'a RawValue>,
    #[serde(default)]
    tools: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(default, borrow)]
    function: Option<ToolFunction<'a>>,
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolFunction<'a> {
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn field<T: for<'de> Deserialize<'de>>(
    raw: Option<&RawValue>,
    name: &'static str,
    expected: &str,
) -> Result<Option<T>, RequestError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => {
            serde_json::from_str(r.get())
                .map(Some)
                .map_err(|_| RequestError::InvalidField {
                    field: name,
                    message: format!("expected {expected}, got {}", truncate(r.get(), 40)),
                })
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Reads a chat-completions, completions or embeddings request body.
pub fn chat_request(body: &[u8]) -> Result<LlmRequestInfo, RequestError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| RequestError::InvalidJson(format!("invalid UTF-8: {e}")))?;
    if !text.trim_start().starts_with('{') {
        return Err(RequestError::InvalidJson(
            "the body must be a JSON object".into(),
        ));
    }
    let req: ChatRequest<'_> =
        serde_json::from_str(text).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let model: Option<String> = field(req.model, "model", "a string")?;
    let max_completion: Option<u64> = field(
        req.max_completion_tokens,
        "max_completion_tokens",
        "a non-negative integer",
    )?;
    let max: Option<u64> = field(req.max_tokens, "max_tokens", "a non-negative integer")?;
    let stream: Option<bool> = field(req.stream, "stream", "a boolean")?;
    let options: Option<StreamOptions> = field(req.stream_options, "stream_options", "an object")?;
    let tools: Option<Vec<Tool<'_>>> = match req.tools {
        Some(r) if r.get() != "null" => {
            Some(
                serde_json::from_str(r.get()).map_err(|_| RequestError::InvalidField {
                    field: "tools",
                    message: "expected a list of tools".into(),
                })?,
            )
        }
        _ => None,
    };
    let tools = tools
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| t.function.and_then(|f| f.name).or(t.name))
        .map(|n| n.into_owned())
        .collect();
    let message_count = match req.messages {
        Some(r) if r.get().starts_with('[') => {
            serde_json::from_str::<Vec<&RawValue>>(r.get()).map_or(0, |v| v.len() as u32)
        }
        _ => 0,
    };
    let prompt_bytes = [req.messages, req.input, req.prompt]
        .into_iter()
        .flatten()
        .map(|r| r.get().len() as u64)
        .sum::<u64>();
    Ok(LlmRequestInfo {
        model,
        max_tokens: max_completion.or(max),
        stream: stream.unwrap_or(false),
        client_wants_stream_usage: options.and_then(|o| o.include_usage).unwrap_or(false),
        estimated_prompt_tokens: prompt_bytes.div_ceil(3),
        tools,
        message_count,
    })
}

/// The body to send upstream for a streaming request: the same JSON with
/// `stream_options.include_usage` set, so the final chunk carries usage. `None` when the body
/// already asks for it (send it unchanged).
pub fn with_stream_usage(body: &[u8]) -> Result<Option<Vec<u8>>, RequestError> {
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let options = value
        .entry("stream_options")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    let Some(options) = options.as_object_mut() else {
        return Err(RequestError::InvalidField {
            field: "stream_options",
            message: "expected an object".into(),
        });
    };
    if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return Ok(None);
    }
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&value)
        .map(Some)
        .map_err(|e| RequestError::InvalidJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_facts() {
        let info = chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"hello world"}],"max_completion_tokens":7,"max_tokens":9,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(info.model.as_deref(), Some("m"));
        assert_eq!(info.max_tokens, Some(7));
        assert!(info.stream && info.client_wants_stream_usage);
        let messages_len = r#"[{"role":"user","content":"hello world"}]"#.len() as u64;
        assert_eq!(info.estimated_prompt_tokens, messages_len.div_ceil(3));
    }

    #[test]
    fn nulls_are_absent() {
        let info = chat_request(br#"{"model":null,"max_tokens":null,"stream":null}"#).unwrap();
        assert_eq!(info, LlmRequestInfo::default());
    }

    #[test]
    fn rejects_bad_json_and_bad_fields() {
        assert!(matches!(
            chat_request(b"{\"model\":"),
            Err(RequestError::InvalidJson(_))
        ));
        assert!(matches!(
            chat_request(b"\xff\xfe"),
            Err(RequestError::InvalidJson(_))
        ));
        assert!(matches!(
            chat_request(b"[1,2]"),
            Err(RequestError::InvalidJson(_))
        ));
        assert_eq!(
            chat_request(br#"{"max_tokens":"lots"}"#),
            Err(RequestError::InvalidField {
                field: "max_tokens",
                message: "expected a non-negative integer, got \"lots\"".into()
            })
        );
        assert!(matches!(
            chat_request(br#"{"stream":"yes"}"#),
            Err(RequestError::InvalidField {
                field: "stream",
                ..
            })
        ));
    }

    #[test]
    fn adds_stream_usage_once() {
        let out = with_stream_usage(br#"{"model":"m","stream":true}"#)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        assert_eq!(with_stream_usage(&out).unwrap(), None);
        let keep = with_stream_usage(br#"{"stream_options":{"include_usage":false,"x":1}}"#)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&keep).unwrap();
        assert_eq!(v["stream_options"]["x"], 1);
        assert!(with_stream_usage(br#"{"stream_options":3}"#).is_err());
    }
}
