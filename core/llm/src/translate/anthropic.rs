//! Anthropic Messages API: OpenAI requests to `/v1/messages` and back ([`request`], [`response`],
//! [`StreamDecoder`]), and the other direction for clients of weir's own `/v1/messages`
//! ([`inbound`]).

use serde_json::{Map, Value, json};

use super::push_turn;

use super::openai::{ChatMessage, ChatRequest, Part, ToolChoice};
use super::{
    ChunkWriter, TranslateError, assistant_message, completion, data_url, tool_call, usage_json,
};
use crate::sse::SseFramer;

/// `max_tokens` is required by Anthropic: used when the client did not set one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn image_block(url: &str) -> Value {
    match data_url(url) {
        Some((media_type, data)) => json!({"type": "image", "source":
            {"type": "base64", "media_type": media_type, "data": data}}),
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

fn blocks(parts: &[Part<'_>]) -> Vec<Value> {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => json!({"type": "text", "text": t}),
            Part::Image(url) => image_block(url),
        })
        .collect()
}

/// The Messages API body for an OpenAI chat request.
pub(crate) fn request(chat: &ChatRequest<'_>, stream: bool) -> Result<Value, TranslateError> {
    let mut messages: Vec<Value> = Vec::new();
    for m in &chat.messages {
        match m {
            ChatMessage::User(parts) => push_turn(&mut messages, "user", "content", blocks(parts)),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut b: Vec<Value> = blocks(content)
                    .into_iter()
                    .filter(|b| b["type"] != "text" || b["text"] != "")
                    .collect();
                for c in tool_calls {
                    b.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
                }
                push_turn(&mut messages, "assistant", "content", b);
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => push_turn(
                &mut messages,
                "user",
                "content",
                vec![
                    json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content}),
                ],
            ),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(chat.model));
    body.insert(
        "max_tokens".into(),
        json!(chat.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    let system = chat.system_with_json_instruction();
    if !system.is_empty() {
        body.insert("system".into(), json!(system));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = chat.temperature {
        // OpenAI's range is 0..2, Anthropic's 0..1.
        body.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = chat.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !chat.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(chat.stop));
    }
    if !chat.tools.is_empty() && chat.tool_choice != ToolChoice::None {
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({"name": t.name,
                    "input_schema": t.parameters.cloned().unwrap_or_else(|| json!({"type": "object"}))});
                if let Some(d) = t.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let mut choice = match chat.tool_choice {
            ToolChoice::Unset | ToolChoice::Auto | ToolChoice::None => json!({"type": "auto"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
        };
        if chat.parallel_tool_calls == Some(false) {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        if chat.tool_choice != ToolChoice::Unset || chat.parallel_tool_calls == Some(false) {
            body.insert("tool_choice".into(), choice);
        }
    }
    if let Some(user) = chat.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// OpenAI's finish reason for an Anthropic stop reason.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Prompt tokens as OpenAI counts them (cache reads and writes included) and the cached part.
fn prompt_tokens(usage: &Value) -> (u64, u64) {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    (
        n("input_tokens") + cached + n("cache_creation_input_tokens"),
        cached,
    )
}

/// A `chat.completion` for a Messages API answer.
pub(crate) fn response(native: &Value, created: u64) -> Result<Value, TranslateError> {
    let content = native
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::new("response.content", "missing"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(tool_call(
                block.get("id").and_then(Value::as_str).unwrap_or(""),
                block.get("name").and_then(Value::as_str).unwrap_or(""),
                block.get("input").unwrap_or(&Value::Null),
            )),
            _ => {}
        }
    }
    let usage = native.get("usage").cloned().unwrap_or(Value::Null);
    let (prompt, cached) = prompt_tokens(&usage);
    let completion_tokens = usage
        .get("output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(completion(
        native.get("id").and_then(Value::as_str).unwrap_or("msg"),
        created,
        native.get("model").and_then(Value::as_str).unwrap_or(""),
        &assistant_message(&text, calls),
        finish_reason(native.get("stop_reason").and_then(Value::as_str)),
        &usage_json(prompt, completion_tokens, cached),
    ))
}

/// Anthropic's SSE events, translated one by one into OpenAI chunks.
#[derive(Debug)]
pub struct StreamDecoder {
    framer: SseFramer,
    out: ChunkWriter,
    prompt: u64,
    cached: u64,
    completion: u64,
    /// The OpenAI tool-call index of each Anthropic content block index (tool_use blocks).
    tools: Vec<(u64, usize)>,
}

impl StreamDecoder {
    pub(crate) fn new(out: ChunkWriter) -> Self {
        Self {
            framer: SseFramer::new(),
            out,
            prompt: 0,
            cached: 0,
            completion: 0,
            tools: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        for data in super::json_events(&mut self.framer, bytes) {
            self.event(&data);
        }
        self.out.take()
    }

    fn event(&mut self, data: &Value) {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let msg = &data["message"];
                if let Some(id) = msg.get("id").and_then(Value::as_str) {
                    self.out.set_id(id);
                }
                if let Some(m) = msg.get("model").and_then(Value::as_str) {
                    self.out.set_model(m);
                }
                (self.prompt, self.cached) = prompt_tokens(&msg["usage"]);
                self.completion = msg
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                self.out.role();
            }
            "content_block_start" => {
                let block = &data["content_block"];
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = self.tools.len();
                    let block_index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.tools.push((block_index, index));
                    self.out.tool_start(
                        index,
                        block.get("id").and_then(Value::as_str).unwrap_or(""),
                        block.get("name").and_then(Value::as_str).unwrap_or(""),
                    );
                } else if let Some(t) = block.get("text").and_then(Value::as_str) {
                    self.out.text(t);
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.out
                            .text(delta.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    Some("input_json_delta") => {
                        let block_index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(&(_, index)) =
                            self.tools.iter().find(|(b, _)| *b == block_index)
                        {
                            self.out.tool_arguments(
                                index,
                                delta
                                    .get("partial_json")
                                    .and_then(Value::as_str)
                                    .unwrap_or(""),
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(n) = data.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.completion = n;
                }
                if data.pointer("/usage/input_tokens").is_some() {
                    (self.prompt, self.cached) = prompt_tokens(&data["usage"]);
                }
                let reason = data.pointer("/delta/stop_reason").and_then(Value::as_str);
                self.out.finish(finish_reason(reason));
            }
            "message_stop" => {
                self.out.finish("stop");
                self.out
                    .done(&usage_json(self.prompt, self.completion, self.cached));
            }
            "error" => {
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("The provider reported an error in the stream.");
                let kind = data
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                self.out.error(message, kind);
            }
            _ => {}
        }
    }
}

/// Weir's own `/v1/messages`: Anthropic-format clients in front of any provider.
pub mod inbound;
