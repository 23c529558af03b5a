//! The structured LLM view policies get (`weir:policy/types` `chat-message`, `llm-answer`,
//! `stream-event`) and the structured edits they make (`llm-edit`), on OpenAI-format JSON.
//!
//! One implementation for every target: the wasmtime runtime and the edge apps serve the
//! policies' accessors from here, and the portable loop applies their edits with it.
//!
//! ```
//! use weir_llm::view::{self, ContentPart, LlmEdit};
//! let body = br#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#;
//! let edited = view::apply_edits(body, &[
//!     LlmEdit::SetModel("b".into()),
//!     LlmEdit::PrependMessages(vec![view::ChatMessage::text("system", "Be brief.")]),
//! ]).unwrap();
//! let messages = view::chat_messages(&edited);
//! assert_eq!(messages[0].content, vec![ContentPart::Text("Be brief.".into())]);
//! assert_eq!(messages.len(), 2);
//! ```

use serde_json::{Map, Value, json};

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
    /// A part that is not text, as its JSON object.
    Other(String),
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: Vec<ContentPart>,
    /// Every other field of the message, as a JSON object.
    pub extra: Option<String>,
}

impl ChatMessage {
    /// A message with one text part.
    pub fn text(role: &str, text: &str) -> Self {
        Self {
            role: role.to_owned(),
            content: vec![ContentPart::Text(text.to_owned())],
            extra: None,
        }
    }

    /// The text parts joined (no separator).
    pub fn joined_text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text(t) => Some(t.as_str()),
                ContentPart::Other(_) => None,
            })
            .collect()
    }
}

/// A structured change to a request or an answer (`weir:policy/types.llm-edit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmEdit {
    SetModel(String),
    SetMaxTokens(u64),
    SetMessages(Vec<ChatMessage>),
    PrependMessages(Vec<ChatMessage>),
    AppendMessages(Vec<ChatMessage>),
    ReplaceMessage {
        index: u32,
        message: ChatMessage,
    },
    RemoveMessage(u32),
    /// A top-level field and its JSON value (`null` removes it).
    SetParameter {
        name: String,
        value: String,
    },
    SetAnswerText {
        choice: u32,
        text: String,
    },
}

/// Why an edit could not be applied (a policy bug: reported naming the policy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EditError(pub String);

/// One choice of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerChoice {
    pub index: u32,
    pub text: Option<String>,
    pub finish_reason: Option<String>,
    pub tool_calls: Option<String>,
}

/// The view of a chat completion answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmAnswer {
    pub model: Option<String>,
    pub choices: Vec<AnswerChoice>,
    pub usage: Option<crate::Usage>,
}

/// Fields the gateway owns: a policy cannot set them as plain parameters.
const OWNED: &[&str] = &["messages", "stream", "stream_options"];

fn parse_object(body: &[u8]) -> Option<Map<String, Value>> {
    serde_json::from_slice(body).ok()
}

fn message_from_json(v: &Value) -> Option<ChatMessage> {
    let obj = v.as_object()?;
    let role = obj.get("role")?.as_str()?.to_owned();
    let content = match obj.get("content") {
        Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .map(
                |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => ContentPart::Text(t.clone()),
                    _ => ContentPart::Other(p.to_string()),
                },
            )
            .collect(),
        _ => Vec::new(),
    };
    let extra: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| *k != "role" && *k != "content")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(ChatMessage {
        role,
        content,
        extra: (!extra.is_empty()).then(|| Value::Object(extra).to_string()),
    })
}

fn message_to_json(m: &ChatMessage) -> Result<Value, EditError> {
    let mut obj = match &m.extra {
        Some(extra) => match serde_json::from_str::<Value>(extra) {
            Ok(Value::Object(o)) => o,
            _ => {
                return Err(EditError(format!(
                    "the `extra` of a `{}` message is not a JSON object",
                    m.role
                )));
            }
        },
        None => Map::new(),
    };
    obj.insert("role".into(), Value::String(m.role.clone()));
    let content = match m.content.as_slice() {
        [] if obj.contains_key("tool_calls") => Value::Null,
        [] => Value::String(String::new()),
        [ContentPart::Text(t)] => Value::String(t.clone()),
        parts => Value::Array(
            parts
                .iter()
                .map(|p| match p {
                    ContentPart::Text(t) => Ok(json!({"type": "text", "text": t})),
                    ContentPart::Other(raw) => serde_json::from_str(raw)
                        .map_err(|e| EditError(format!("a content part is not valid JSON: {e}"))),
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    obj.insert("content".into(), content);
    Ok(Value::Object(obj))
}

/// The messages of a chat request body (empty when it has none).
pub fn chat_messages(body: &[u8]) -> Vec<ChatMessage> {
    let Some(obj) = parse_object(body) else {
        return Vec::new();
    };
    obj.get("messages")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().filter_map(message_from_json).collect())
        .unwrap_or_default()
}

/// The names of the tools a chat request offers.
pub fn tool_names(obj: &Map<String, Value>) -> Vec<String> {
    obj.get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| {
                    t.pointer("/function/name")
                        .or_else(|| t.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn messages_mut(obj: &mut Map<String, Value>) -> Result<&mut Vec<Value>, EditError> {
    match obj
        .entry("messages")
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(a) => Ok(a),
        _ => Err(EditError("the request's `messages` is not a list".into())),
    }
}

fn to_values(ms: &[ChatMessage]) -> Result<Vec<Value>, EditError> {
    ms.iter().map(message_to_json).collect()
}

/// Applies edits to a JSON body (a request, or an answer for `set-answer-text`), in order.
pub fn apply_edits(body: &[u8], edits: &[LlmEdit]) -> Result<Vec<u8>, EditError> {
    let mut obj = parse_object(body)
        .ok_or_else(|| EditError("the body is not a JSON object, so it has no LLM view".into()))?;
    for edit in edits {
        apply(&mut obj, edit)?;
    }
    serde_json::to_vec(&obj).map_err(|e| EditError(e.to_string()))
}

fn apply(obj: &mut Map<String, Value>, edit: &LlmEdit) -> Result<(), EditError> {
    match edit {
        LlmEdit::SetModel(m) => {
            obj.insert("model".into(), Value::String(m.clone()));
        }
        LlmEdit::SetMaxTokens(n) => {
            let field = if obj.contains_key("max_completion_tokens") {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            obj.insert(field.into(), json!(n));
        }
        LlmEdit::SetMessages(ms) => {
            *messages_mut(obj)? = to_values(ms)?;
        }
        LlmEdit::PrependMessages(ms) => {
            let new = to_values(ms)?;
            messages_mut(obj)?.splice(0..0, new);
        }
        LlmEdit::AppendMessages(ms) => {
            let new = to_values(ms)?;
            messages_mut(obj)?.extend(new);
        }
        LlmEdit::ReplaceMessage { index, message } => {
            let new = message_to_json(message)?;
            let ms = messages_mut(obj)?;
            let len = ms.len();
            let slot = ms.get_mut(*index as usize).ok_or_else(|| {
                EditError(format!(
                    "replace-message: no message at index {index} (the request has {len})"
                ))
            })?;
            *slot = new;
        }
        LlmEdit::RemoveMessage(index) => {
            let ms = messages_mut(obj)?;
            if (*index as usize) >= ms.len() {
                return Err(EditError(format!(
                    "remove-message: no message at index {index} (the request has {})",
                    ms.len()
                )));
            }
            ms.remove(*index as usize);
        }
        LlmEdit::SetParameter { name, value } => {
            if OWNED.contains(&name.as_str()) {
                return Err(EditError(format!(
                    "set-parameter cannot set `{name}`: use the message edits for `messages`; \
                     `stream` and `stream_options` belong to the client"
                )));
            }
            let v: Value = serde_json::from_str(value).map_err(|e| {
                EditError(format!(
                    "set-parameter `{name}`: the value is not JSON: {e}"
                ))
            })?;
            if v.is_null() {
                obj.remove(name);
            } else {
                obj.insert(name.clone(), v);
            }
        }
        LlmEdit::SetAnswerText { choice, text } => {
            let choices = obj
                .get_mut("choices")
                .and_then(Value::as_array_mut)
                .ok_or_else(|| EditError("set-answer-text: the body has no `choices`".into()))?;
            let c = choices
                .iter_mut()
                .find(|c| c.get("index").and_then(Value::as_u64) == Some(u64::from(*choice)))
                .ok_or_else(|| EditError(format!("set-answer-text: no choice {choice}")))?;
            match c.get_mut("message").and_then(Value::as_object_mut) {
                Some(m) => {
                    m.insert("content".into(), Value::String(text.clone()));
                }
                None => {
                    return Err(EditError(format!(
                        "set-answer-text: choice {choice} has no message"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The view of a chat completion answer body; `None` when it is not one.
pub fn answer(body: &[u8]) -> Option<LlmAnswer> {
    let obj = parse_object(body)?;
    let choices = obj.get("choices")?.as_array()?;
    let choices = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let message = c.get("message");
            let text = match message.and_then(|m| m.get("content")) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(parts)) => Some(
                    parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect(),
                ),
                _ => None,
            };
            AnswerChoice {
                index: c
                    .get("index")
                    .and_then(Value::as_u64)
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(i as u32),
                text,
                finish_reason: c
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                tool_calls: message
                    .and_then(|m| m.get("tool_calls"))
                    .filter(|t| !t.is_null())
                    .map(Value::to_string),
            }
        })
        .collect();
    let (usage, model) = crate::usage::from_json(body);
    Some(LlmAnswer {
        model,
        choices,
        usage,
    })
}

// === streams ===

/// What a policy sees of one `chat.completion.chunk`: the first choice's delta text and finish
/// reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkFacts {
    pub text: Option<String>,
    pub finish_reason: Option<String>,
}

/// The facts of a chunk's JSON (none for anything else).
pub fn chunk_facts(data: &str) -> ChunkFacts {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return ChunkFacts::default();
    };
    let choice = v.pointer("/choices/0");
    ChunkFacts {
        text: choice
            .and_then(|c| c.pointer("/delta/content"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// A chunk with the first choice's delta text replaced by `text`. `envelope` gives id, model
/// and creation time when `data` has no delta to rewrite (then a new content chunk is built).
pub fn with_text(data: &str, text: &str) -> Option<String> {
    let mut v: Value = serde_json::from_str(data).ok()?;
    let delta = v.pointer_mut("/choices/0/delta")?.as_object_mut()?;
    if !delta.contains_key("content") && delta.keys().any(|k| k != "role") {
        // A tool-call or other delta: not a text event.
        return None;
    }
    delta.insert("content".into(), Value::String(text.to_owned()));
    Some(v.to_string())
}

/// A new content chunk with `text`, taking id, created, model and system fingerprint from
/// `envelope` (another chunk of the same stream), or from the fallbacks.
pub fn content_chunk(
    envelope: Option<&str>,
    id: &str,
    model: &str,
    created: u64,
    text: &str,
) -> String {
    let env = envelope.and_then(|e| serde_json::from_str::<Value>(e).ok());
    let get = |k: &str| env.as_ref().and_then(|e| e.get(k)).cloned();
    let mut chunk = json!({
        "id": get("id").unwrap_or_else(|| Value::String(id.to_owned())),
        "object": "chat.completion.chunk",
        "created": get("created").unwrap_or_else(|| json!(created)),
        "model": get("model").unwrap_or_else(|| Value::String(model.to_owned())),
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
    });
    if let (Some(fp), Some(obj)) = (get("system_fingerprint"), chunk.as_object_mut()) {
        obj.insert("system_fingerprint".into(), fp);
    }
    chunk.to_string()
}

/// Splits a chunk that carries both delta text and a finish reason into a text chunk and a
/// finishing chunk (the latter keeps any `usage`), so that policies can release held text
/// before the answer finishes. `None` when the chunk is not such a chunk.
pub fn split_finish(data: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(data).ok()?;
    let choice = v.pointer("/choices/0")?;
    let text = choice.pointer("/delta/content")?.as_str()?;
    if text.is_empty() || choice.get("finish_reason").is_none_or(Value::is_null) {
        return None;
    }
    let mut head = v.clone();
    if let Some(obj) = head.as_object_mut() {
        obj.remove("usage");
    }
    if let Some(c) = head
        .pointer_mut("/choices/0")
        .and_then(Value::as_object_mut)
    {
        c.insert("finish_reason".into(), Value::Null);
    }
    let mut tail = v;
    if let Some(d) = tail
        .pointer_mut("/choices/0/delta")
        .and_then(Value::as_object_mut)
    {
        d.remove("content");
    }
    Some((head.to_string(), tail.to_string()))
}

/// The chunks of a streamed rendering of a chat completion answer (role, content, finish, and a
/// usage chunk when `usage_chunk` is set), without `[DONE]`.
pub fn completion_chunks(completion: &Value, usage_chunk: bool) -> Vec<String> {
    let id = completion
        .get("id")
        .cloned()
        .unwrap_or_else(|| json!("chatcmpl-weir"));
    let created = completion
        .get("created")
        .cloned()
        .unwrap_or_else(|| json!(0));
    let model = completion
        .get("model")
        .cloned()
        .unwrap_or_else(|| json!(""));
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
    let mut out = Vec::new();
    let choices = completion
        .get("choices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, c) in choices.iter().enumerate() {
        let index = c.get("index").cloned().unwrap_or_else(|| json!(i));
        let message = c.get("message").cloned().unwrap_or(Value::Null);
        let role = message
            .get("role")
            .cloned()
            .unwrap_or_else(|| json!("assistant"));
        out.push(chunk(json!([{"index": index, "delta": {"role": role, "content": ""}, "finish_reason": null}])).to_string());
        if let Some(text) = message
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            out.push(
                chunk(json!([{"index": index, "delta": {"content": text}, "finish_reason": null}]))
                    .to_string(),
            );
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let deltas: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(k, call)| {
                    let mut d = call.clone();
                    if let Some(o) = d.as_object_mut() {
                        o.insert("index".into(), json!(k));
                    }
                    d
                })
                .collect();
            out.push(chunk(json!([{"index": index, "delta": {"tool_calls": deltas}, "finish_reason": null}])).to_string());
        }
        let finish = c
            .get("finish_reason")
            .cloned()
            .unwrap_or_else(|| json!("stop"));
        out.push(
            chunk(json!([{"index": index, "delta": {}, "finish_reason": finish}])).to_string(),
        );
    }
    if usage_chunk {
        let mut last = chunk(json!([]));
        if let (Some(u), Some(o)) = (completion.get("usage"), last.as_object_mut()) {
            o.insert("usage".into(), u.clone());
        }
        out.push(last.to_string());
    }
    out
}
