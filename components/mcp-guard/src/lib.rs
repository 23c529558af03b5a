//! The `mcp-guard` policy, for MCP proxies: what a server says about its tools is remembered,
//! and calls are checked against it.
//!
//! - **Arguments**: a `tools/call` whose arguments do not match the tool's `inputSchema` (as the
//!   server's last `tools/list` answer gave it) is answered by the gateway with a tool error
//!   (`isError: true`, the reason in its text, as MCP asks servers to report invalid input so
//!   that a model can correct itself); the server never sees it. A tool not listed yet, or whose
//!   schema uses keywords the validator does not implement, is not checked.
//! - **Definitions**: each tool's definition (its whole `tools/list` entry) is hashed; when a
//!   later answer carries another definition under the same name (a "rug pull": a tool
//!   approved for what it said it did, then changed), the policy logs it, counts
//!   `tool_definition_changes{tool}` and flags the request `mcp.tool_changed`; with
//!   `on-definition-change: block` calls of the tool are refused until its definition is the
//!   first one seen again or the remembered one expires.
//!
//! State: one key-value entry per tool in the policy instance's namespace, so every replica
//! (with `kv: redis`) and every edge target shares it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use weir_jsonschema::Schema;
use weir_policy_sdk::{
    ConfigError, Context, Message, Phase, Policy, RpcMessage, Verdict, kv, log, metrics,
};

/// The policy's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "yes")]
    pub validate_arguments: bool,
    #[serde(default = "yes")]
    pub watch_definitions: bool,
    #[serde(default)]
    pub on_definition_change: OnChange,
    #[serde(default = "week")]
    pub definitions_ttl_s: u64,
}

/// What a changed tool definition does.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnChange {
    /// Log, count and flag it.
    #[default]
    Report,
    /// Also refuse calls of the tool while it differs from the first definition seen.
    Block,
}

fn yes() -> bool {
    true
}

fn week() -> u64 {
    7 * 24 * 3600
}

/// What is remembered about a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Known {
    /// The hash of the first definition seen (the one clients approved).
    pub accepted: String,
    /// The hash of the definition of the last `tools/list` answer.
    pub current: String,
    /// The input schema of the last `tools/list` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

/// The SHA-256 (hex) of a tool definition, independent of key order and whitespace.
pub fn definition_hash(tool: &Value) -> String {
    // serde_json's maps are sorted by key, so this is a canonical form.
    let canonical = serde_json::to_string(tool).unwrap_or_default();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The remembered state after a `tools/list` entry with hash `hash`; whether it changed.
pub fn observe(known: Option<Known>, hash: &str, schema: Option<Value>) -> (Known, bool) {
    match known {
        None => (
            Known {
                accepted: hash.to_owned(),
                current: hash.to_owned(),
                schema,
            },
            false,
        ),
        Some(k) => {
            let changed = k.current != hash;
            (
                Known {
                    accepted: k.accepted,
                    current: hash.to_owned(),
                    schema,
                },
                changed,
            )
        }
    }
}

/// Why a call's arguments do not fit the tool's schema; `None` when they do, or cannot be
/// checked (no schema, or one the validator does not implement).
pub fn argument_error(schema: &Value, arguments: Option<&str>) -> Option<String> {
    let schema = Schema::compile(schema).ok()?;
    let arguments: Value = match arguments {
        None => json!({}),
        Some(a) => match serde_json::from_str(a) {
            Ok(v) => v,
            Err(e) => return Some(format!("the arguments are not JSON: {e}")),
        },
    };
    schema.validate(&arguments).err()
}

fn key(tool: &str) -> String {
    format!("tool/{tool}")
}

fn load(tool: &str) -> Option<Known> {
    let bytes = kv::get(&key(tool)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// The first protocol revision whose results say `resultType`.
const RESULT_TYPE_SINCE: &str = "2026-07-28";

/// A tool error answering the call `call` (a JSON-RPC result with `isError: true`) in the
/// protocol revision the client speaks (`version`, from its `MCP-Protocol-Version` header).
pub fn tool_error_body(call: &RpcMessage, text: &str, version: Option<&str>) -> String {
    let id = call
        .id
        .as_deref()
        .and_then(|i| serde_json::from_str::<Value>(i).ok())
        .unwrap_or(Value::Null);
    let mut result = json!({"content": [{"type": "text", "text": text}], "isError": true});
    // Revisions are dates, so they compare as strings.
    if version.is_some_and(|v| v >= RESULT_TYPE_SINCE) {
        result["resultType"] = json!("complete");
    }
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

fn tool_error(call: &RpcMessage, request: &Message, text: &str) -> Verdict {
    let version = request.header("mcp-protocol-version");
    Verdict::answer(tool_error_body(call, text, version.as_deref()), Vec::new())
}

fn count(name: &str, tool: &str) {
    metrics::counter_add(name, 1, &[("tool".to_owned(), tool.to_owned())]);
}

pub struct McpGuard;

impl Policy for McpGuard {
    type Config = Config;
    const NAME: &'static str = "mcp-guard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const PHASES: &'static [Phase] = &[Phase::Request, Phase::Response];

    fn check(config: &Config) -> Result<(), ConfigError> {
        if config.definitions_ttl_s == 0 {
            return Err(ConfigError::at("definitions-ttl-s", "must be at least 1"));
        }
        Ok(())
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        for call in request.rpc() {
            if call.method.as_deref() != Some("tools/call") {
                continue;
            }
            let Some(tool) = call.tool_name.clone() else {
                continue;
            };
            let Some(known) = load(&tool) else { continue };
            if config.on_definition_change == OnChange::Block && known.current != known.accepted {
                count("tool_calls_blocked", &tool);
                weir_policy_sdk::flag(cx, "mcp.tool_changed");
                return tool_error(
                    &call,
                    request,
                    &format!(
                        "Tool `{tool}` is unavailable: its definition changed since it was \
                         first listed, and the gateway's operator has not accepted the change."
                    ),
                );
            }
            if config.validate_arguments
                && let Some(schema) = &known.schema
                && let Some(error) = argument_error(schema, call.tool_arguments.as_deref())
            {
                count("invalid_tool_arguments", &tool);
                weir_policy_sdk::flag(cx, "mcp.invalid_arguments");
                return tool_error(
                    &call,
                    request,
                    &format!("Invalid arguments for tool `{tool}`: {error}"),
                );
            }
        }
        Verdict::proceed()
    }

    fn on_response(config: &Config, cx: &Context, response: &Message) -> Verdict {
        if !config.watch_definitions && !config.validate_arguments {
            return Verdict::proceed();
        }
        let ttl_ms = Some(config.definitions_ttl_s.saturating_mul(1000));
        for message in response.rpc() {
            let Some(tools) = message
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str::<Value>(r).ok())
                .and_then(|r| r.get("tools").and_then(Value::as_array).cloned())
            else {
                continue;
            };
            for tool in &tools {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let hash = definition_hash(tool);
                let previous = load(name);
                let before = previous
                    .as_ref()
                    .map(|k| k.current.get(..12).unwrap_or_default().to_owned())
                    .unwrap_or_default();
                let (known, changed) = observe(previous, &hash, tool.get("inputSchema").cloned());
                if changed && config.watch_definitions {
                    count("tool_definition_changes", name);
                    weir_policy_sdk::flag(cx, "mcp.tool_changed");
                    weir_policy_sdk::emit(
                        log::Level::Warn,
                        &format!(
                            "mcp-guard: tool `{name}` on `{}` changed its definition (sha256 \
                             {before}… -> {}…; first seen {}…): clients approved what it said \
                             before",
                            cx.route(),
                            hash.get(..12).unwrap_or_default(),
                            known.accepted.get(..12).unwrap_or_default(),
                        ),
                    );
                }
                if let Ok(bytes) = serde_json::to_vec(&known) {
                    let _ = kv::set(&key(name), &bytes, ttl_ms);
                }
            }
        }
        Verdict::proceed()
    }
}

weir_policy_sdk::export_policy!(McpGuard);
weir_policy_sdk::config_schema!("../config.schema.json");

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_key_order_and_whitespace_only() {
        let a: Value = serde_json::from_str(
            r#"{"name":"add","description":"Adds","inputSchema":{"type":"object"}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{ "inputSchema": {"type": "object"}, "description": "Adds", "name": "add" }"#,
        )
        .unwrap();
        let c: Value = serde_json::from_str(
            r#"{"name":"add","description":"Adds, and sends your files away","inputSchema":{"type":"object"}}"#,
        )
        .unwrap();
        assert_eq!(definition_hash(&a), definition_hash(&b));
        assert_ne!(definition_hash(&a), definition_hash(&c));
    }

    #[test]
    fn a_change_is_reported_and_the_first_definition_stays_accepted() {
        let (k, changed) = observe(None, "h1", None);
        assert!(!changed);
        let (k, changed) = observe(Some(k), "h1", None);
        assert!(!changed);
        let (k, changed) = observe(Some(k), "h2", None);
        assert!(changed);
        assert_eq!((k.accepted.as_str(), k.current.as_str()), ("h1", "h2"));
        let (k, changed) = observe(Some(k), "h1", None);
        assert!(changed, "changing back is a change too");
        assert_eq!(k.accepted, k.current);
    }

    #[test]
    fn tool_errors_follow_the_clients_revision() {
        let call = RpcMessage {
            id: Some("7".into()),
            method: Some("tools/call".into()),
            params: None,
            tool_name: Some("add".into()),
            tool_arguments: None,
            result: None,
            error: None,
        };
        let old: Value =
            serde_json::from_str(&tool_error_body(&call, "no", Some("2025-11-25"))).unwrap();
        assert_eq!(old["id"], 7);
        assert_eq!(old["result"]["isError"], true);
        assert_eq!(old["result"]["content"][0]["text"], "no");
        assert!(old["result"].get("resultType").is_none());
        let new: Value =
            serde_json::from_str(&tool_error_body(&call, "no", Some("2026-07-28"))).unwrap();
        assert_eq!(new["result"]["resultType"], "complete");
    }

    #[test]
    fn arguments_are_checked_against_the_input_schema() {
        let schema = json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        });
        assert_eq!(argument_error(&schema, Some(r#"{"a":1,"b":2}"#)), None);
        let missing = argument_error(&schema, Some(r#"{"a":1}"#)).unwrap();
        assert!(missing.contains('b'), "{missing}");
        assert!(argument_error(&schema, Some(r#"{"a":"one","b":2}"#)).is_some());
        assert!(
            argument_error(&schema, None).is_some(),
            "no arguments: none of the required"
        );
        assert!(argument_error(&schema, Some("{oops")).is_some());
        // A schema the validator cannot compile is not checked.
        assert_eq!(argument_error(&json!({"if": {}}), Some("{}")), None);
    }
}
