//! An OpenAI chat-completions request, read once into the shape every translation needs.

use serde_json::Value;

use super::TranslateError;

/// A chat request, borrowed from its JSON.
#[derive(Debug)]
pub(crate) struct ChatRequest<'a> {
    pub model: &'a str,
    /// System and developer messages, in order.
    pub system: Vec<&'a str>,
    pub messages: Vec<ChatMessage<'a>>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<&'a str>,
    pub tools: Vec<Tool<'a>>,
    pub tool_choice: ToolChoice<'a>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: ResponseFormat<'a>,
    pub user: Option<&'a str>,
}

/// A non-system message.
#[derive(Debug)]
pub enum ChatMessage<'a> {
    User(Vec<Part<'a>>),
    Assistant {
        content: Vec<Part<'a>>,
        tool_calls: Vec<ToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: String,
    },
}

/// A content part.
#[derive(Debug)]
pub enum Part<'a> {
    Text(&'a str),
    /// An image: a `data:` URL or an http(s) URL.
    Image(&'a str),
}

/// A tool call of an assistant message.
#[derive(Debug)]
pub struct ToolCall<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// The arguments, parsed.
    pub arguments: Value,
}

#[derive(Debug)]
pub(crate) struct Tool<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub parameters: Option<&'a Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolChoice<'a> {
    Unset,
    Auto,
    None,
    Required,
    Function(&'a str),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema(&'a Value),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

/// The text of a `content` that must be text (system, tool): a string or text parts.
fn text_of(content: Option<&Value>, field: &str) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => out.push_str(t),
                    None => return Err(invalid(format!("{field}[{i}]"), "expected a text part")),
                }
            }
            Ok(out)
        }
        Some(_) => Err(invalid(field, "expected a string or an array of parts")),
    }
}

fn parts<'a>(content: Option<&'a Value>, field: &str) -> Result<Vec<Part<'a>>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text(s)]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, p)| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .map(Part::Text)
                    .ok_or_else(|| invalid(format!("{field}[{i}].text"), "expected a string")),
                Some("image_url") => p
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .map(Part::Image)
                    .ok_or_else(|| {
                        invalid(format!("{field}[{i}].image_url.url"), "expected a string")
                    }),
                Some(other) => Err(invalid(
                    format!("{field}[{i}].type"),
                    format!("content parts of type `{other}` cannot be sent to this provider"),
                )),
                None => Err(invalid(format!("{field}[{i}].type"), "missing")),
            })
            .collect(),
        Some(_) => Err(invalid(field, "expected a string or an array of parts")),
    }
}

impl<'a> ChatRequest<'a> {
    pub(crate) fn parse(req: &'a Value) -> Result<Self, TranslateError> {
        let model = req
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("model", "a model name is required"))?;
        let Some(raw) = req.get("messages").and_then(Value::as_array) else {
            return Err(invalid("messages", "expected an array"));
        };
        if req.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
            return Err(invalid("n", "this provider returns one choice only"));
        }
        let mut system = Vec::new();
        let mut messages = Vec::new();
        for (i, m) in raw.iter().enumerate() {
            let field = format!("messages[{i}]");
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{field}.role"), "missing"))?;
            let content = m.get("content");
            match role {
                "system" | "developer" => match content {
                    Some(Value::String(s)) => system.push(s.as_str()),
                    Some(Value::Array(items)) => {
                        for (k, p) in items.iter().enumerate() {
                            system.push(p.get("text").and_then(Value::as_str).ok_or_else(
                                || invalid(format!("{field}.content[{k}]"), "expected a text part"),
                            )?);
                        }
                    }
                    _ => return Err(invalid(format!("{field}.content"), "expected text")),
                },
                "user" => messages.push(ChatMessage::User(parts(
                    content,
                    &format!("{field}.content"),
                )?)),
                "assistant" => {
                    let content = parts(content, &format!("{field}.content"))?;
                    let mut tool_calls = Vec::new();
                    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                        for (k, c) in calls.iter().enumerate() {
                            let f = format!("{field}.tool_calls[{k}]");
                            let id = c
                                .get("id")
                                .and_then(Value::as_str)
                                .ok_or_else(|| invalid(format!("{f}.id"), "missing"))?;
                            let name = c
                                .pointer("/function/name")
                                .and_then(Value::as_str)
                                .ok_or_else(|| invalid(format!("{f}.function.name"), "missing"))?;
                            let args = c
                                .pointer("/function/arguments")
                                .and_then(Value::as_str)
                                .unwrap_or("{}");
                            let arguments = if args.trim().is_empty() {
                                Value::Object(Default::default())
                            } else {
                                serde_json::from_str(args).map_err(|e| {
                                    invalid(
                                        format!("{f}.function.arguments"),
                                        format!("not a JSON object: {e}"),
                                    )
                                })?
                            };
                            tool_calls.push(ToolCall {
                                id,
                                name,
                                arguments,
                            });
                        }
                    }
                    messages.push(ChatMessage::Assistant {
                        content,
                        tool_calls,
                    });
                }
                "tool" => {
                    let tool_call_id = m
                        .get("tool_call_id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{field}.tool_call_id"), "missing"))?;
                    messages.push(ChatMessage::Tool {
                        tool_call_id,
                        content: text_of(content, &format!("{field}.content"))?,
                    });
                }
                other => {
                    return Err(invalid(
                        format!("{field}.role"),
                        format!("unknown role `{other}`"),
                    ));
                }
            }
        }
        let number = |name: &str| req.get(name).and_then(Value::as_f64);
        let max_tokens = req
            .get("max_completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| req.get("max_tokens").and_then(Value::as_u64));
        let stop = match req.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|s| {
                    s.as_str()
                        .ok_or_else(|| invalid("stop", "expected strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("stop", "expected a string or an array")),
        };
        let mut tools = Vec::new();
        if let Some(list) = req.get("tools").and_then(Value::as_array) {
            for (i, t) in list.iter().enumerate() {
                let name = t
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("tools[{i}].function.name"), "missing"))?;
                tools.push(Tool {
                    name,
                    description: t.pointer("/function/description").and_then(Value::as_str),
                    parameters: t.pointer("/function/parameters"),
                });
            }
        }
        let tool_choice = match req.get("tool_choice") {
            None | Some(Value::Null) => ToolChoice::Unset,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(invalid("tool_choice", format!("unknown value `{other}`")));
                }
            },
            Some(v) => ToolChoice::Function(
                v.pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool_choice.function.name", "missing"))?,
            ),
        };
        let response_format = match req.get("response_format") {
            None | Some(Value::Null) => ResponseFormat::Text,
            Some(f) => match f.get("type").and_then(Value::as_str) {
                Some("text") => ResponseFormat::Text,
                Some("json_object") => ResponseFormat::JsonObject,
                Some("json_schema") => ResponseFormat::JsonSchema(
                    f.pointer("/json_schema/schema")
                        .ok_or_else(|| invalid("response_format.json_schema.schema", "missing"))?,
                ),
                _ => return Err(invalid("response_format.type", "unknown response format")),
            },
        };
        Ok(Self {
            model,
            system,
            messages,
            max_tokens,
            temperature: number("temperature"),
            top_p: number("top_p"),
            stop,
            tools,
            tool_choice,
            parallel_tool_calls: req.get("parallel_tool_calls").and_then(Value::as_bool),
            response_format,
            user: req.get("user").and_then(Value::as_str),
        })
    }

    /// The system prompt, with the JSON instruction for providers without a JSON mode.
    pub(crate) fn system_with_json_instruction(&self) -> String {
        let mut s = self.system.join("\n\n");
        let instruction = match self.response_format {
            ResponseFormat::Text => return s,
            ResponseFormat::JsonObject => {
                "Respond with a single JSON object and nothing else.".to_owned()
            }
            ResponseFormat::JsonSchema(schema) => format!(
                "Respond with a single JSON object and nothing else. It must validate against this JSON Schema: {schema}"
            ),
        };
        if !s.is_empty() {
            s.push_str("\n\n");
        }
        s.push_str(&instruction);
        s
    }

    /// The name of the tool a tool call id belongs to (for providers whose tool results carry the
    /// function name rather than the call id).
    pub(crate) fn tool_name(&self, call_id: &str) -> Option<&'a str> {
        self.messages.iter().find_map(|m| match m {
            ChatMessage::Assistant { tool_calls, .. } => {
                tool_calls.iter().find(|c| c.id == call_id).map(|c| c.name)
            }
            _ => None,
        })
    }
}
