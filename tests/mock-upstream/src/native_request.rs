//! What the mock reads from a native chat request: each protocol's body validated the way the
//! provider validates it (its own field names and limits), its model, stream flag, prompt size
//! and answer length.

use serde_json::{Value, json};

use crate::native::Native;
use crate::protocol::{
    self, DEFAULT_COMPLETION_TOKENS, MAX_COMPLETION_TOKENS, reply_piece, reply_text,
};

/// What the mock needs from a native chat request.
pub(crate) struct Chat {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) prompt_tokens: u64,
    pub(crate) words: u64,
    /// The pieces of an echo answer (a `mock-echo*` model): the last user message's text.
    echo: Option<Vec<String>>,
}

impl Chat {
    /// `messages` in the `role`/`content` shape (Gemini's `contents` converted by the caller).
    fn echoing(mut self, messages: &Value) -> Self {
        if self.model.starts_with(protocol::ECHO_MODEL_PREFIX) {
            let pieces = protocol::echo_pieces(messages);
            self.words = pieces.len() as u64;
            self.echo = Some(pieces);
        }
        self
    }

    /// The `i`-th streamed piece of the answer.
    pub(crate) fn piece(&self, i: u64) -> String {
        match &self.echo {
            Some(pieces) => pieces.get(i as usize).cloned().unwrap_or_default(),
            None => reply_piece(i),
        }
    }

    /// The whole answer; the pieces concatenate to it.
    pub(crate) fn text(&self) -> String {
        match &self.echo {
            Some(pieces) => pieces.concat(),
            None => reply_text(self.words),
        }
    }
}

fn text_chars(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(items) => items.iter().map(text_chars).sum(),
        Value::Object(o) => {
            o.get("text").map(text_chars).unwrap_or(0)
                + o.get("content").map(text_chars).unwrap_or(0)
        }
        _ => 0,
    }
}

fn message_tokens(chars: u64) -> u64 {
    3 + chars.div_ceil(4)
}

fn invalid(m: impl Into<String>) -> String {
    m.into()
}

/// Validates a native body and reads what the answer depends on.
pub(crate) fn parse(native: &Native, req: &Value) -> Result<Chat, String> {
    let words = |n: Option<u64>| {
        n.unwrap_or(DEFAULT_COMPLETION_TOKENS)
            .min(MAX_COMPLETION_TOKENS)
    };
    match native {
        Native::Anthropic => {
            let model = req
                .get("model")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("model: Field required"))?;
            let max = req
                .get("max_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| invalid("max_tokens: Field required"))?;
            let messages = req
                .get("messages")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("messages: Field required"))?;
            let mut prompt = 0;
            if let Some(system) = req.get("system") {
                prompt += message_tokens(text_chars(system));
            }
            for (i, m) in messages.iter().enumerate() {
                match m.get("role").and_then(Value::as_str) {
                    Some("user" | "assistant") => {}
                    _ => {
                        return Err(format!(
                            "messages.{i}.role: Input should be 'user' or 'assistant'"
                        ));
                    }
                }
                let content = m
                    .get("content")
                    .ok_or_else(|| format!("messages.{i}.content: Field required"))?;
                if let Some(blocks) = content.as_array() {
                    for (k, b) in blocks.iter().enumerate() {
                        match b.get("type").and_then(Value::as_str) {
                            Some("text" | "image" | "tool_use" | "tool_result") => {}
                            _ => {
                                return Err(format!(
                                    "messages.{i}.content.{k}.type: Input tag is invalid"
                                ));
                            }
                        }
                    }
                } else if !content.is_string() {
                    return Err(format!(
                        "messages.{i}.content: Input should be a valid list"
                    ));
                }
                prompt += message_tokens(text_chars(content));
            }
            Ok(Chat {
                model: model.to_owned(),
                stream: req.get("stream") == Some(&json!(true)),
                prompt_tokens: prompt,
                words: words(Some(max)),
                echo: None,
            }
            .echoing(&Value::Array(messages.clone())))
        }
        Native::Gemini { model, stream } => {
            let contents = req
                .get("contents")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    invalid("* GenerateContentRequest.contents: contents is not specified")
                })?;
            let mut prompt = 0;
            if let Some(s) = req.pointer("/systemInstruction/parts") {
                prompt += message_tokens(text_chars(s));
            }
            for (i, c) in contents.iter().enumerate() {
                match c.get("role").and_then(Value::as_str) {
                    Some("user" | "model") | None => {}
                    Some(r) => {
                        return Err(format!(
                            "Please use a valid role: user, model. (contents[{i}].role = {r})"
                        ));
                    }
                }
                let parts = c
                    .get("parts")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."))?;
                prompt += message_tokens(text_chars(&Value::Array(parts.clone())));
            }
            // The `role`/`content` shape of the conversation, for the echo models.
            let messages: Vec<Value> = contents
                .iter()
                .map(|c| json!({"role": c.get("role").cloned().unwrap_or(json!("user")), "content": c.get("parts").cloned().unwrap_or_default()}))
                .collect();
            Ok(Chat {
                model: model.clone(),
                stream: *stream,
                prompt_tokens: prompt,
                words: words(
                    req.pointer("/generationConfig/maxOutputTokens")
                        .and_then(Value::as_u64),
                ),
                echo: None,
            }
            .echoing(&Value::Array(messages)))
        }
        Native::Bedrock { model, stream } => {
            let messages = req
                .get("messages")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null"))?;
            let mut prompt = 0;
            if let Some(s) = req.get("system") {
                prompt += message_tokens(text_chars(s));
            }
            for (i, m) in messages.iter().enumerate() {
                match m.get("role").and_then(Value::as_str) {
                    Some("user" | "assistant") => {}
                    _ => {
                        return Err(format!(
                            "Value at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                            i + 1
                        ));
                    }
                }
                let content = m.get("content").and_then(Value::as_array).ok_or_else(|| {
                    format!(
                        "Value null at 'messages.{}.member.content' failed to satisfy constraint",
                        i + 1
                    )
                })?;
                prompt += message_tokens(text_chars(&Value::Array(content.clone())));
            }
            Ok(Chat {
                model: model.clone(),
                stream: *stream,
                prompt_tokens: prompt,
                words: words(
                    req.pointer("/inferenceConfig/maxTokens")
                        .and_then(Value::as_u64),
                ),
                echo: None,
            }
            .echoing(&Value::Array(messages.clone())))
        }
        Native::Azure | Native::Foundry | Native::Mistral => Err(invalid("not a native chat")),
    }
}
