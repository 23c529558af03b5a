//! Google Gemini `generateContent` / `streamGenerateContent?alt=sse`.

use serde_json::{Map, Value, json};

use super::push_turn;

use super::openai::{ChatMessage, ChatRequest, Part, ResponseFormat, ToolChoice};
use super::{
    ChunkWriter, TranslateError, assistant_message, completion, data_url, tool_call, usage_json,
};
use crate::sse::SseFramer;

fn part(p: &Part<'_>) -> Value {
    match p {
        Part::Text(t) => json!({"text": t}),
        Part::Image(url) => match data_url(url) {
            Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
            None => json!({"fileData": {"mimeType": guess_mime(url), "fileUri": url}}),
        },
    }
}

fn guess_mime(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

/// The `generateContent` body for an OpenAI chat request.
pub(crate) fn request(chat: &ChatRequest<'_>) -> Result<Value, TranslateError> {
    let mut contents = Vec::new();
    for (i, m) in chat.messages.iter().enumerate() {
        match m {
            ChatMessage::User(parts) => {
                push_turn(
                    &mut contents,
                    "user",
                    "parts",
                    parts.iter().map(part).collect(),
                );
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut parts: Vec<Value> = content
                    .iter()
                    .filter(|p| !matches!(p, Part::Text("")))
                    .map(part)
                    .collect();
                for c in tool_calls {
                    parts.push(json!({"functionCall": {"name": c.name, "args": c.arguments}}));
                }
                push_turn(&mut contents, "model", "parts", parts);
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => {
                let name = chat.tool_name(tool_call_id).ok_or_else(|| {
                    TranslateError::new(
                        format!("messages[{i}].tool_call_id"),
                        format!("no earlier assistant tool call has the id `{tool_call_id}`"),
                    )
                })?;
                // Gemini wants an object: JSON results are passed as they are, text is wrapped.
                let response = match serde_json::from_str::<Value>(content) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": content}),
                };
                push_turn(
                    &mut contents,
                    "user",
                    "parts",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !chat.system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": chat.system.join("\n\n")}]}),
        );
    }
    let mut config = Map::new();
    if let Some(t) = chat.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = chat.top_p {
        config.insert("topP".into(), json!(p));
    }
    if let Some(n) = chat.max_tokens {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    if !chat.stop.is_empty() {
        config.insert("stopSequences".into(), json!(chat.stop));
    }
    match chat.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        ResponseFormat::JsonSchema(schema) => {
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if !chat.tools.is_empty() {
        let decls: Vec<Value> = chat
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name});
                if let Some(desc) = t.description {
                    d["description"] = json!(desc);
                }
                if let Some(p) = t.parameters {
                    d["parametersJsonSchema"] = p.clone();
                }
                d
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        let mode = match chat.tool_choice {
            ToolChoice::Unset => None,
            ToolChoice::Auto => Some(json!({"mode": "AUTO"})),
            ToolChoice::None => Some(json!({"mode": "NONE"})),
            ToolChoice::Required => Some(json!({"mode": "ANY"})),
            ToolChoice::Function(name) => {
                Some(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
            }
        };
        if let Some(mode) = mode {
            body.insert("toolConfig".into(), json!({"functionCallingConfig": mode}));
        }
    }
    Ok(Value::Object(body))
}

fn finish_reason(reason: Option<&str>, has_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

fn usage(meta: &Value) -> Value {
    let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    // Thinking tokens are billed as output.
    usage_json(
        n("promptTokenCount"),
        n("candidatesTokenCount") + n("thoughtsTokenCount"),
        n("cachedContentTokenCount"),
    )
}

/// A `chat.completion` for a `generateContent` answer.
pub(crate) fn response(native: &Value, created: u64, model: &str) -> Result<Value, TranslateError> {
    let candidate = native.pointer("/candidates/0");
    let mut text = String::new();
    let mut calls = Vec::new();
    if let Some(parts) = candidate
        .and_then(|c| c.pointer("/content/parts"))
        .and_then(Value::as_array)
    {
        for p in parts {
            if p.get("thought") == Some(&json!(true)) {
                continue;
            }
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                text.push_str(t);
            }
            if let Some(f) = p.get("functionCall") {
                calls.push(tool_call(
                    &format!("call_{}", calls.len()),
                    f.get("name").and_then(Value::as_str).unwrap_or(""),
                    f.get("args").unwrap_or(&json!({})),
                ));
            }
        }
    }
    let reason = match candidate {
        Some(c) => finish_reason(
            c.get("finishReason").and_then(Value::as_str),
            !calls.is_empty(),
        ),
        // A blocked prompt has no candidates.
        None if native.pointer("/promptFeedback/blockReason").is_some() => "content_filter",
        None => return Err(TranslateError::new("response.candidates", "empty")),
    };
    Ok(completion(
        native
            .get("responseId")
            .and_then(Value::as_str)
            .unwrap_or("gemini"),
        created,
        native
            .get("modelVersion")
            .and_then(Value::as_str)
            .unwrap_or(model),
        &assistant_message(&text, calls),
        reason,
        &usage(native.get("usageMetadata").unwrap_or(&Value::Null)),
    ))
}

/// Gemini's SSE stream (one `GenerateContentResponse` per event), translated event by event.
#[derive(Debug)]
pub struct StreamDecoder {
    framer: SseFramer,
    out: ChunkWriter,
    started: bool,
    calls: usize,
    usage: Value,
}

impl StreamDecoder {
    pub(crate) fn new(out: ChunkWriter) -> Self {
        Self {
            framer: SseFramer::new(),
            out,
            started: false,
            calls: 0,
            usage: Value::Null,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        for data in super::json_events(&mut self.framer, bytes) {
            self.event(&data);
        }
        self.out.take()
    }

    fn event(&mut self, data: &Value) {
        if let Some(err) = data.get("error") {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The provider reported an error in the stream.");
            let kind = err
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("INTERNAL");
            self.out.error(message, kind);
            return;
        }
        if !self.started {
            self.started = true;
            if let Some(id) = data.get("responseId").and_then(Value::as_str) {
                self.out.set_id(id);
            }
            if let Some(m) = data.get("modelVersion").and_then(Value::as_str) {
                self.out.set_model(m);
            }
            self.out.role();
        }
        if let Some(u) = data.get("usageMetadata") {
            self.usage = u.clone();
        }
        let candidate = data.pointer("/candidates/0");
        if let Some(parts) = candidate
            .and_then(|c| c.pointer("/content/parts"))
            .and_then(Value::as_array)
        {
            for p in parts {
                if p.get("thought") == Some(&json!(true)) {
                    continue;
                }
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    self.out.text(t);
                }
                if let Some(f) = p.get("functionCall") {
                    let index = self.calls;
                    self.calls += 1;
                    self.out.tool_start(
                        index,
                        &format!("call_{index}"),
                        f.get("name").and_then(Value::as_str).unwrap_or(""),
                    );
                    self.out
                        .tool_arguments(index, &f.get("args").unwrap_or(&json!({})).to_string());
                }
            }
        }
        let reason = candidate
            .and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str);
        let blocked = data.pointer("/promptFeedback/blockReason").is_some();
        if reason.is_some() || blocked {
            let r = if blocked && reason.is_none() {
                "content_filter"
            } else {
                finish_reason(reason, self.calls > 0)
            };
            self.out.finish(r);
            // The event with the finish reason also carries the final usage.
            self.out.done(&usage(&self.usage));
        }
    }
}
