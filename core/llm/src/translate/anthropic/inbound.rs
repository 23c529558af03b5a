//! Weir's own `/v1/messages`: Anthropic-format clients in front of any provider.

use serde_json::{Map, Value, json};

use crate::translate::TranslateError;

fn text_blocks(v: &Value, field: &str) -> Result<String, TranslateError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, b) in items.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(
                        b.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                TranslateError::new(
                                    format!("{field}[{i}].text"),
                                    "expected a string",
                                )
                            })?
                            .to_owned(),
                    ),
                    // Images inside tool results have no OpenAI equivalent: a marker keeps
                    // the turn well-formed.
                    Some("image") => out.push("[image]".to_owned()),
                    _ => {
                        return Err(TranslateError::new(
                            format!("{field}[{i}].type"),
                            "expected a text block",
                        ));
                    }
                }
            }
            Ok(out.join("\n"))
        }
        Value::Null => Ok(String::new()),
        _ => Err(TranslateError::new(
            field,
            "expected a string or an array of blocks",
        )),
    }
}

fn image_part(block: &Value, field: &str) -> Result<Value, TranslateError> {
    let source = &block["source"];
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    TranslateError::new(format!("{field}.source.media_type"), "missing")
                })?,
            source.get("data").and_then(Value::as_str).ok_or_else(|| {
                TranslateError::new(format!("{field}.source.data"), "missing")
            })?
        ),
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::new(format!("{field}.source.url"), "missing"))?
            .to_owned(),
        _ => {
            return Err(TranslateError::new(
                format!("{field}.source.type"),
                "expected `base64` or `url`",
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// The OpenAI chat request for a Messages API request.
pub fn request(req: &Value) -> Result<Value, TranslateError> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new("model", "a model name is required"))?;
    let max_tokens = req
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| TranslateError::new("max_tokens", "a positive integer is required"))?;
    let raw = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::new("messages", "expected an array"))?;
    let mut messages = Vec::new();
    if let Some(system) = req.get("system") {
        let text = text_blocks(system, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    for (i, m) in raw.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str);
        let content = m.get("content").unwrap_or(&Value::Null);
        let blocks: Vec<Value> = match content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(TranslateError::new(
                    format!("{field}.content"),
                    "expected a string or an array of blocks",
                ));
            }
        };
        match role {
            Some("user") => {
                let mut parts = Vec::new();
                for (k, b) in blocks.iter().enumerate() {
                    let f = format!("{field}.content[{k}]");
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => parts.push(json!({"type": "text",
                            "text": b.get("text").and_then(Value::as_str).unwrap_or("")})),
                        Some("image") => parts.push(image_part(b, &f)?),
                        Some("tool_result") => messages.push(json!({
                            "role": "tool",
                            "tool_call_id": b.get("tool_use_id").and_then(Value::as_str)
                                .ok_or_else(|| TranslateError::new(format!("{f}.tool_use_id"), "missing"))?,
                            "content": text_blocks(b.get("content").unwrap_or(&Value::Null), &format!("{f}.content"))?,
                        })),
                        Some("document") => {
                            return Err(TranslateError::new(
                                format!("{f}.type"),
                                "document blocks are not supported through weir yet",
                            ));
                        }
                        _ => {
                            return Err(TranslateError::new(
                                format!("{f}.type"),
                                "expected text, image or tool_result",
                            ));
                        }
                    }
                }
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            Some("assistant") => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for (k, b) in blocks.iter().enumerate() {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            text.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""));
                        }
                        Some("tool_use") => calls.push(json!({
                            "id": b.get("id").and_then(Value::as_str).unwrap_or(""),
                            "type": "function",
                            "function": {
                                "name": b.get("name").and_then(Value::as_str).ok_or_else(|| {
                                    TranslateError::new(format!("{field}.content[{k}].name"), "missing")
                                })?,
                                "arguments": b.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
                            },
                        })),
                        // Thinking blocks are the provider's own; other providers cannot use them.
                        Some("thinking" | "redacted_thinking") => {}
                        _ => {
                            return Err(TranslateError::new(
                                format!("{field}.content[{k}].type"),
                                "expected text or tool_use",
                            ));
                        }
                    }
                }
                let mut msg = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            _ => {
                return Err(TranslateError::new(
                    format!("{field}.role"),
                    "expected `user` or `assistant`",
                ));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens));
    for (from, to) in [("temperature", "temperature"), ("top_p", "top_p")] {
        if let Some(v) = req.get(from).filter(|v| v.is_number()) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(stops) = req.get("stop_sequences").and_then(Value::as_array)
        && !stops.is_empty()
    {
        out.insert("stop".into(), Value::Array(stops.clone()));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let mut list = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(format!("tools[{i}].name"), "missing"))?;
            let mut f = json!({"name": name,
                "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
            if let Some(d) = t.get("description") {
                f["description"] = d.clone();
            }
            list.push(json!({"type": "function", "function": f}));
        }
        out.insert("tools".into(), Value::Array(list));
    }
    if let Some(choice) = req.get("tool_choice") {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name":
                choice.get("name").and_then(Value::as_str).ok_or_else(|| TranslateError::new("tool_choice.name", "missing"))?}}),
            _ => {
                return Err(TranslateError::new(
                    "tool_choice.type",
                    "expected auto, any, tool or none",
                ));
            }
        };
        out.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&json!(true)) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(user) = req.pointer("/metadata/user_id").and_then(Value::as_str) {
        out.insert("user".into(), json!(user));
    }
    if req.get("stream") == Some(&json!(true)) {
        out.insert("stream".into(), json!(true));
    }
    // The gateway's own fields (`weir_template`...) are for the policies, which see the OpenAI
    // form of the request: they come along (a policy that reads one removes it).
    if let Some(fields) = req.as_object() {
        for (k, v) in fields.iter().filter(|(k, _)| k.starts_with("weir_")) {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

/// Anthropic's stop reason for an OpenAI finish reason.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn usage(prompt: u64, completion: u64, cached: u64) -> Value {
    let mut u = json!({"input_tokens": prompt.saturating_sub(cached), "output_tokens": completion});
    if cached > 0 {
        u["cache_read_input_tokens"] = json!(cached);
    }
    u
}

/// The Messages API answer for a `chat.completion`.
pub fn response(completion: &Value) -> Result<Value, TranslateError> {
    let choice = completion
        .pointer("/choices/0")
        .ok_or_else(|| TranslateError::new("response.choices", "empty"))?;
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str)
        && !text.is_empty()
    {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let args = c
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            content.push(json!({
                "type": "tool_use",
                "id": c.get("id").and_then(Value::as_str).unwrap_or(""),
                "name": c.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
                "input": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({})),
            }));
        }
    }
    let n = |p: &str| completion.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let id = completion.get("id").and_then(Value::as_str).unwrap_or("");
    Ok(json!({
        "id": if id.starts_with("msg_") { id.to_owned() } else { format!("msg_{id}") },
        "type": "message",
        "role": "assistant",
        "model": completion.get("model").and_then(Value::as_str).unwrap_or(""),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": usage(
            n("/usage/prompt_tokens"),
            n("/usage/completion_tokens"),
            n("/usage/prompt_tokens_details/cached_tokens"),
        ),
    }))
}

/// Anthropic's error `type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"},"request_id"}`.
pub fn error(status: u16, message: &str, request_id: &str) -> Vec<u8> {
    super::super::to_vec(&json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
        "request_id": request_id,
    }))
}

fn sse(out: &mut Vec<u8>, event: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&super::super::to_vec(data));
    out.extend_from_slice(b"\n\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Text(u64),
    Tool { block: u64, openai: u64 },
}

/// Turns the OpenAI chunks of a stream into Anthropic's SSE events.
#[derive(Debug)]
pub struct StreamEncoder {
    started: bool,
    id: String,
    model: String,
    block: Block,
    next_block: u64,
    stop_reason: Option<&'static str>,
}

impl StreamEncoder {
    pub fn new(model: &str, request_id: &str) -> Self {
        Self {
            started: false,
            id: format!("msg_{request_id}"),
            model: model.to_owned(),
            block: Block::None,
            next_block: 0,
            stop_reason: None,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        sse(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        );
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        let index = match self.block {
            Block::None => return,
            Block::Text(i) | Block::Tool { block: i, .. } => i,
        };
        sse(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        self.block = Block::None;
    }

    fn open(&mut self, out: &mut Vec<u8>, block: &Value) -> u64 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        sse(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    /// One OpenAI chunk (the JSON of a `data:` event); returns the Anthropic events.
    pub fn chunk(&mut self, data: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return out;
        };
        if let Some(err) = chunk.get("error") {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The stream failed.");
            self.error(&mut out, message);
            return out;
        }
        if let Some(m) = chunk.get("model").and_then(Value::as_str)
            && !self.started
            && !m.is_empty()
        {
            m.clone_into(&mut self.model);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return out;
        };
        self.start(&mut out);
        let delta = &choice["delta"];
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            let index = match self.block {
                Block::Text(i) => i,
                _ => self.open(&mut out, &json!({"type": "text", "text": ""})),
            };
            self.block = Block::Text(index);
            sse(
                &mut out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
            );
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                let openai = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let same = matches!(self.block, Block::Tool { openai: o, .. } if o == openai);
                if !same || call.get("id").is_some_and(Value::is_string) {
                    let index = self.open(
                        &mut out,
                        &json!({"type": "tool_use",
                            "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
                            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
                            "input": {}}),
                    );
                    self.block = Block::Tool {
                        block: index,
                        openai,
                    };
                }
                if let Block::Tool { block, .. } = self.block
                    && let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str)
                    && !args.is_empty()
                {
                    sse(
                        &mut out,
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": block,
                            "delta": {"type": "input_json_delta", "partial_json": args}}),
                    );
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason(Some(reason)));
        }
        out
    }

    /// The end of a complete answer: the last block closed, the stop reason and usage, and
    /// `message_stop`.
    pub fn done(&mut self, prompt: u64, completion: u64, cached: u64) -> Vec<u8> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close_block(&mut out);
        sse(
            &mut out,
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage(prompt, completion, cached)}),
        );
        sse(&mut out, "message_stop", &json!({"type": "message_stop"}));
        out
    }

    fn error(&mut self, out: &mut Vec<u8>, message: &str) {
        sse(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
    }

    /// An error event (the stream failed or a policy stopped it).
    pub fn error_event(&mut self, status: u16, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        sse(
            &mut out,
            "error",
            &json!({"type": "error", "error": {"type": error_type(status), "message": message}}),
        );
        out
    }
}
