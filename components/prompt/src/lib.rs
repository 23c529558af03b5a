//! `prompt`: named prompt templates chosen by the client, and decorators the operator puts
//! around every conversation.
//!
//! A client picks a template with the body field `weir_template` (the OpenAI and Anthropic
//! SDKs send it with `extra_body`), or with the header `x-weir-template` for a template without
//! variables:
//!
//! ```json
//! {"model": "gpt-4o", "messages": [],
//!  "weir_template": {"name": "summarize", "variables": {"words": 50, "text": "..."}}}
//! ```
//!
//! The template's messages, with `{{variable}}` filled in, come before the client's messages;
//! a variable without a value or a default is refused with a 400 naming it. The field is removed
//! before the request goes upstream. Decorators prepend and append messages to every request of
//! the proxy, and `client-system-prompt` says what happens to a system prompt the client sends:
//! `allow`, `deny` (400) or `remove`.

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_policy_sdk::{
    ChatMessage, ConfigError, Context, Edits, LlmEdit, Message, Parameter, Phase, Policy, Verdict,
};

/// The body field that selects a template.
pub const FIELD: &str = "weir_template";
/// The header that selects a template without variables.
pub const HEADER: &str = "x-weir-template";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub name: String,
    pub messages: Vec<TemplateMessage>,
    /// Values of variables the client may leave out.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientSystem {
    #[default]
    Allow,
    Deny,
    Remove,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub templates: Vec<Template>,
    /// Messages put before every conversation (e.g. the company's system prompt).
    #[serde(default)]
    pub prepend: Vec<TemplateMessage>,
    /// Messages put after every conversation.
    #[serde(default)]
    pub append: Vec<TemplateMessage>,
    #[serde(default)]
    pub client_system_prompt: ClientSystem,
    /// Refuse requests that name no template.
    #[serde(default)]
    pub require_template: bool,
}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// The `{{name}}` variables of a text, in order of appearance (with duplicates).
pub fn variables(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err("a `{{` without its `}}`".into());
        };
        let name = after[..close].trim();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid {
            return Err(format!(
                "`{{{{{}}}}}` is not a variable: names are 1 to 64 characters of letters, digits, `_`, `-` and `.`",
                &after[..close]
            ));
        }
        out.push(name);
        rest = &after[close + 2..];
    }
    Ok(out)
}

/// `text` with its variables replaced; the error is the first variable without a value.
pub fn fill(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            break;
        };
        let name = after[..close].trim();
        match values.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(name.to_owned()),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn check_messages(path: &str, messages: &[TemplateMessage]) -> Result<(), ConfigError> {
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(ConfigError::at(
                format!("{path}[{i}].role"),
                format!(
                    "`{}` is not a role: use one of {}",
                    m.role,
                    ROLES.join(", ")
                ),
            ));
        }
        if let Err(e) = variables(&m.content) {
            return Err(ConfigError::at(format!("{path}[{i}].content"), e));
        }
    }
    Ok(())
}

fn chat(m: &TemplateMessage, text: String) -> ChatMessage {
    ChatMessage::text(&m.role, &text)
}

/// What the client asked for: a template name and its variables.
struct Selection {
    name: String,
    values: BTreeMap<String, String>,
    /// The body carried the field (it must be removed before the request goes upstream).
    in_body: bool,
}

fn bad(code: &str, message: String) -> Verdict {
    Verdict::deny(400, code, message)
}

fn selection(request: &Message) -> Result<Option<Selection>, Verdict> {
    let body = request.body();
    let needle = FIELD.as_bytes();
    let mentioned = body.windows(needle.len()).any(|w| w == needle);
    if mentioned {
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Some(field) = doc.get(FIELD) {
            let invalid = || {
                bad(
                    "invalid_template_request",
                    format!(
                        "`{FIELD}` must be an object {{\"name\": \"...\", \"variables\": {{...}}}} or a template name"
                    ),
                )
            };
            let (name, vars) = match field {
                serde_json::Value::String(name) => (name.clone(), None),
                serde_json::Value::Object(o) => match o.get("name") {
                    Some(serde_json::Value::String(name)) => (name.clone(), o.get("variables")),
                    _ => return Err(invalid()),
                },
                _ => return Err(invalid()),
            };
            let mut values = BTreeMap::new();
            match vars {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Object(vars)) => {
                    for (k, v) in vars {
                        let v = match v {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                                v.to_string()
                            }
                            _ => {
                                return Err(bad(
                                    "invalid_template_request",
                                    format!(
                                        "`{FIELD}.variables.{k}` must be a string, a number or a boolean"
                                    ),
                                ));
                            }
                        };
                        values.insert(k.clone(), v);
                    }
                }
                Some(_) => return Err(invalid()),
            }
            return Ok(Some(Selection {
                name,
                values,
                in_body: true,
            }));
        }
    }
    Ok(request.header(HEADER).map(|name| Selection {
        name: name.trim().to_owned(),
        values: BTreeMap::new(),
        in_body: false,
    }))
}

pub struct Prompt;

impl Policy for Prompt {
    type Config = Config;
    const NAME: &'static str = "prompt";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    // Instances start from a snapshot with the configuration already parsed (the host
    // pre-initialises): no parsing on the request path.
    const PREINITIALISE: bool = true;
    const PHASES: &'static [Phase] = &[Phase::Request];

    fn check(config: &Config) -> Result<(), ConfigError> {
        let mut seen: Vec<&str> = Vec::new();
        for (i, t) in config.templates.iter().enumerate() {
            if t.name.is_empty() || seen.contains(&t.name.as_str()) {
                return Err(ConfigError::at(
                    format!("templates[{i}].name"),
                    format!("template names must be non-empty and unique (`{}`)", t.name),
                ));
            }
            seen.push(&t.name);
            if t.messages.is_empty() {
                return Err(ConfigError::at(
                    format!("templates[{i}].messages"),
                    "a template needs at least one message",
                ));
            }
            check_messages(&format!("templates[{i}].messages"), &t.messages)?;
        }
        check_messages("prepend", &config.prepend)?;
        check_messages("append", &config.append)?;
        for (path, list) in [("prepend", &config.prepend), ("append", &config.append)] {
            for (i, m) in list.iter().enumerate() {
                if variables(&m.content).is_ok_and(|v| !v.is_empty()) {
                    return Err(ConfigError::at(
                        format!("{path}[{i}].content"),
                        "decorators have no variables: use a template for text the client fills in",
                    ));
                }
            }
        }
        if config.require_template && config.templates.is_empty() {
            return Err(ConfigError::at(
                "require-template",
                "no templates are configured, so every request would be refused",
            ));
        }
        Ok(())
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        if cx.llm().is_none() {
            return Verdict::proceed();
        }
        let selected = match selection(request) {
            Ok(s) => s,
            Err(refusal) => return refusal,
        };
        let mut edits = Edits::none();
        let client = request.chat_messages();
        if config.client_system_prompt != ClientSystem::Allow {
            let system: Vec<usize> = client
                .iter()
                .enumerate()
                .filter(|(_, m)| m.role == "system" || m.role == "developer")
                .map(|(i, _)| i)
                .collect();
            if !system.is_empty() {
                if config.client_system_prompt == ClientSystem::Deny {
                    return Verdict::deny(
                        400,
                        "system_prompt_not_allowed",
                        "this endpoint does not accept a system (or developer) message: the gateway sets it; send only user and assistant messages",
                    );
                }
                // Highest index first, so the earlier indexes stay valid.
                for i in system.into_iter().rev() {
                    edits = edits.llm(LlmEdit::RemoveMessage(i as u32));
                }
            }
        }
        let mut before: Vec<ChatMessage> = config
            .prepend
            .iter()
            .map(|m| chat(m, m.content.clone()))
            .collect();
        match &selected {
            None if config.require_template => {
                return Verdict::deny(
                    400,
                    "template_required",
                    format!(
                        "this endpoint answers through templates only: name one with the body field `{FIELD}` (one of: {})",
                        names(config)
                    ),
                );
            }
            None => {}
            Some(sel) => {
                let Some(template) = config.templates.iter().find(|t| t.name == sel.name) else {
                    return Verdict::deny(
                        404,
                        "template_not_found",
                        format!(
                            "no template `{}` here; the templates are: {}",
                            sel.name,
                            names(config)
                        ),
                    );
                };
                let mut values = template.defaults.clone();
                values.extend(sel.values.clone());
                for m in &template.messages {
                    match fill(&m.content, &values) {
                        Ok(text) => before.push(chat(m, text)),
                        Err(missing) => {
                            return Verdict::deny(
                                400,
                                "template_variable_missing",
                                format!(
                                    "template `{}` needs the variable `{missing}`: send it in `{FIELD}.variables`",
                                    template.name
                                ),
                            );
                        }
                    }
                }
                weir_policy_sdk::flag(cx, "prompt.template");
                if sel.in_body {
                    edits = edits.llm(LlmEdit::SetParameter(Parameter {
                        name: FIELD.into(),
                        value: "null".into(),
                    }));
                }
            }
        }
        if !before.is_empty() {
            edits = edits.llm(LlmEdit::PrependMessages(before));
        }
        if !config.append.is_empty() {
            edits = edits.llm(LlmEdit::AppendMessages(
                config
                    .append
                    .iter()
                    .map(|m| chat(m, m.content.clone()))
                    .collect(),
            ));
        }
        Verdict::edit(edits)
    }
}

fn names(config: &Config) -> String {
    if config.templates.is_empty() {
        return "none".into();
    }
    config
        .templates
        .iter()
        .map(|t| format!("`{}`", t.name))
        .collect::<Vec<_>>()
        .join(", ")
}

weir_policy_sdk::export_policy!(Prompt);
weir_policy_sdk::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_found_and_filled() {
        assert_eq!(
            variables("a {{x}} b {{ y.z }} {{x}}"),
            Ok(vec!["x", "y.z", "x"])
        );
        assert!(variables("a {{x").is_err());
        assert!(variables("a {{two words}}").is_err());
        let values = BTreeMap::from([("x".to_owned(), "1".to_owned())]);
        assert_eq!(fill("a {{ x }}!", &values), Ok("a 1!".into()));
        assert_eq!(fill("a {{y}}", &values), Err("y".into()));
        assert_eq!(fill("no variables", &values), Ok("no variables".into()));
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let err = |json: &str| {
            weir_policy_sdk::parse_config::<Prompt>(json)
                .err()
                .map(|e| e.path)
        };
        assert_eq!(
            err(r#"{"templates":[{"name":"a","messages":[{"role":"boss","content":"x"}]}]}"#),
            Some("templates[0].messages[0].role".into())
        );
        assert_eq!(
            err(r#"{"templates":[{"name":"a","messages":[{"role":"user","content":"{{x"}]}]}"#),
            Some("templates[0].messages[0].content".into())
        );
        assert_eq!(
            err(
                r#"{"templates":[{"name":"a","messages":[{"role":"user","content":"x"}]},{"name":"a","messages":[{"role":"user","content":"y"}]}]}"#
            ),
            Some("templates[1].name".into())
        );
        assert_eq!(
            err(r#"{"prepend":[{"role":"system","content":"{{x}}"}]}"#),
            Some("prepend[0].content".into())
        );
        assert_eq!(
            err(r#"{"require-template":true}"#),
            Some("require-template".into())
        );
        assert_eq!(
            err(
                r#"{"prepend":[{"role":"system","content":"Be brief."}],"client-system-prompt":"remove"}"#
            ),
            None
        );
    }
}
