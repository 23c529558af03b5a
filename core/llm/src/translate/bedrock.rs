//! AWS Bedrock Converse / ConverseStream (the event-stream framing is in
//! [`crate::eventstream`], the signing in [`crate::sigv4`]).

use serde_json::{Map, Value, json};

use super::push_turn;

use super::openai::{ChatMessage, ChatRequest, Part, ToolChoice};
use super::{
    ChunkWriter, TranslateError, assistant_message, completion, data_url, tool_call, usage_json,
};
use crate::eventstream::Decoder;

fn image(url: &str, field: &str) -> Result<Value, TranslateError> {
    let Some((media, data)) = data_url(url) else {
        return Err(TranslateError::new(
            field,
            "Bedrock accepts images as base64 `data:` URLs only",
        ));
    };
    let format = media.strip_prefix("image/").unwrap_or(media);
    let format = if format == "jpg" { "jpeg" } else { format };
    if !matches!(format, "png" | "jpeg" | "gif" | "webp") {
        return Err(TranslateError::new(
            field,
            format!("unsupported image type `{media}`"),
        ));
    }
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn blocks(parts: &[Part<'_>], field: &str) -> Result<Vec<Value>, TranslateError> {
    parts
        .iter()
        .filter(|p| !matches!(p, Part::Text("")))
        .enumerate()
        .map(|(k, p)| match p {
            Part::Text(t) => Ok(json!({"text": t})),
            Part::Image(url) => image(url, &format!("{field}[{k}]")),
        })
        .collect()
}

/// The Converse body for an OpenAI chat request.
pub(crate) fn request(chat: &ChatRequest<'_>) -> Result<Value, TranslateError> {
    let mut messages = Vec::new();
    for (i, m) in chat.messages.iter().enumerate() {
        let field = format!("messages[{i}].content");
        match m {
            ChatMessage::User(parts) => {
                push_turn(&mut messages, "user", "content", blocks(parts, &field)?);
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut b = blocks(content, &field)?;
                for c in tool_calls {
                    b.push(json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}}));
                }
                push_turn(&mut messages, "assistant", "content", b);
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => {
                let result = match serde_json::from_str::<Value>(content) {
                    Ok(v @ Value::Object(_)) => json!({"json": v}),
                    _ => json!({"text": content}),
                };
                push_turn(
                    &mut messages,
                    "user",
                    "content",
                    vec![json!({"toolResult": {"toolUseId": tool_call_id, "content": [result]}})],
                );
            }
        }
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    let system = chat.system_with_json_instruction();
    if !system.is_empty() {
        body.insert("system".into(), json!([{"text": system}]));
    }
    let mut config = Map::new();
    if let Some(n) = chat.max_tokens {
        config.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = chat.temperature {
        config.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = chat.top_p {
        config.insert("topP".into(), json!(p));
    }
    if !chat.stop.is_empty() {
        config.insert("stopSequences".into(), json!(chat.stop));
    }
    if !config.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(config));
    }
    if !chat.tools.is_empty() && chat.tool_choice != ToolChoice::None {
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .map(|t| {
                let mut spec = json!({"name": t.name, "inputSchema": {"json":
                    t.parameters.cloned().unwrap_or_else(|| json!({"type": "object"}))}});
                if let Some(d) = t.description {
                    spec["description"] = json!(d);
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut tool_config = json!({"tools": tools});
        match chat.tool_choice {
            ToolChoice::Auto => tool_config["toolChoice"] = json!({"auto": {}}),
            ToolChoice::Required => tool_config["toolChoice"] = json!({"any": {}}),
            ToolChoice::Function(name) => {
                tool_config["toolChoice"] = json!({"tool": {"name": name}});
            }
            ToolChoice::Unset | ToolChoice::None => {}
        }
        body.insert("toolConfig".into(), tool_config);
    }
    Ok(Value::Object(body))
}

fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cacheReadInputTokens");
    usage_json(
        n("inputTokens") + cached + n("cacheWriteInputTokens"),
        n("outputTokens"),
        cached,
    )
}

/// A `chat.completion` for a Converse answer.
pub(crate) fn response(native: &Value, created: u64, model: &str) -> Result<Value, TranslateError> {
    let content = native
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::new("response.output.message.content", "missing"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(t) = block.get("toolUse") {
            calls.push(tool_call(
                t.get("toolUseId").and_then(Value::as_str).unwrap_or(""),
                t.get("name").and_then(Value::as_str).unwrap_or(""),
                t.get("input").unwrap_or(&json!({})),
            ));
        }
    }
    Ok(completion(
        "bedrock",
        created,
        model,
        &assistant_message(&text, calls),
        finish_reason(native.get("stopReason").and_then(Value::as_str)),
        &usage(native.get("usage").unwrap_or(&Value::Null)),
    ))
}

/// ConverseStream's event-stream messages, translated one by one into OpenAI chunks.
#[derive(Debug)]
pub struct StreamDecoder {
    decoder: Decoder,
    out: ChunkWriter,
    /// The OpenAI tool-call index of each Bedrock content block index.
    tools: Vec<(u64, usize)>,
    failed: bool,
}

impl StreamDecoder {
    pub(crate) fn new(out: ChunkWriter) -> Self {
        Self {
            decoder: Decoder::new(),
            out,
            tools: Vec::new(),
            failed: false,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.decoder.push(bytes);
        loop {
            match self.decoder.next_message() {
                Ok(Some(m)) => {
                    let payload: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                    match m.header(":message-type") {
                        Some("event") => {
                            self.event(m.header(":event-type").unwrap_or(""), &payload);
                        }
                        _ => {
                            let kind = m
                                .header(":exception-type")
                                .or_else(|| m.header(":error-code"))
                                .unwrap_or("internalServerException");
                            let message = payload
                                .get("message")
                                .or_else(|| payload.get("Message"))
                                .and_then(Value::as_str)
                                .or_else(|| m.header(":error-message"))
                                .unwrap_or("The provider reported an error in the stream.");
                            self.out.error(message, kind);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if !self.failed {
                        self.failed = true;
                        self.out.error(&e.to_string(), "invalid_event_stream");
                    }
                    break;
                }
            }
        }
        self.out.take()
    }

    fn event(&mut self, kind: &str, p: &Value) {
        let block_index = p
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match kind {
            "messageStart" => self.out.role(),
            "contentBlockStart" => {
                if let Some(t) = p.pointer("/start/toolUse") {
                    let index = self.tools.len();
                    self.tools.push((block_index, index));
                    self.out.tool_start(
                        index,
                        t.get("toolUseId").and_then(Value::as_str).unwrap_or(""),
                        t.get("name").and_then(Value::as_str).unwrap_or(""),
                    );
                }
            }
            "contentBlockDelta" => {
                let delta = &p["delta"];
                if let Some(t) = delta.get("text").and_then(Value::as_str) {
                    self.out.text(t);
                }
                if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                    && let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block_index)
                {
                    self.out.tool_arguments(index, input);
                }
            }
            "messageStop" => {
                self.out
                    .finish(finish_reason(p.get("stopReason").and_then(Value::as_str)));
            }
            "metadata" => {
                self.out.finish("stop");
                self.out
                    .done(&usage(p.get("usage").unwrap_or(&Value::Null)));
            }
            _ => {}
        }
    }
}
