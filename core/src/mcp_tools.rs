//! Tool access control on MCP proxies: which consumer may see and call which tool.
//!
//! Rules are checked in order and the first whose `name` pattern matches the tool decides: the
//! consumers its `deny` patterns match may not use the tool; otherwise those its `allow`
//! patterns match may (everyone when `allow` is empty). A tool no rule matches is allowed, so
//! a last rule `{name: "*", deny: ["*"]}` turns the list into an allow-list. Patterns are
//! globs: `*` any run of characters, `?` one character. A request without an authenticated
//! consumer is the consumer `""` (matched by `*` only).
//!
//! Enforced by the gateway, not by a policy, so it holds on every target: a `tools/call` of a
//! tool the consumer may not use is refused with a JSON-RPC error before the server sees it,
//! and `tools/list` answers (JSON or an event stream) lose the tools the consumer may not use.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One rule of an MCP proxy's `tools` list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ToolRule {
    /// The tool's name, or a glob (`github_*`).
    pub name: String,
    /// Consumers (globs) who may use the tool; everyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Consumers (globs) who may not, whatever `allow` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Whether `text` matches the glob `pattern` (`*`: any run of characters, `?`: one).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c == t[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again.
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Whether `consumer` may see and call `tool` under `rules`.
pub fn allowed(rules: &[ToolRule], tool: &str, consumer: Option<&str>) -> bool {
    let Some(rule) = rules.iter().find(|r| glob(&r.name, tool)) else {
        return true;
    };
    let who = consumer.unwrap_or_default();
    if rule.deny.iter().any(|p| glob(p, who)) {
        return false;
    }
    rule.allow.is_empty() || rule.allow.iter().any(|p| glob(p, who))
}

/// Drops from a JSON-RPC answer (one message or a batch) the tools of `result.tools` that
/// `consumer` may not use; whether any was dropped.
fn filter_message(message: &mut Value, rules: &[ToolRule], consumer: Option<&str>) -> bool {
    if let Value::Array(batch) = message {
        let mut changed = false;
        for m in batch {
            changed |= filter_message(m, rules, consumer);
        }
        return changed;
    }
    let Some(tools) = message
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = tools.len();
    tools.retain(|tool| {
        tool.get("name")
            .and_then(Value::as_str)
            .is_none_or(|name| allowed(rules, name, consumer))
    });
    tools.len() != before
}

/// A `tools/list` answer without the tools `consumer` may not use: a JSON body, or an event
/// stream whose `data` fields are JSON-RPC messages. `None` when nothing changed.
pub fn filter_list(
    body: &[u8],
    event_stream: bool,
    rules: &[ToolRule],
    consumer: Option<&str>,
) -> Option<Vec<u8>> {
    if !event_stream {
        let mut message: Value = serde_json::from_slice(body).ok()?;
        return filter_message(&mut message, rules, consumer)
            .then(|| serde_json::to_vec(&message).ok())
            .flatten();
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    // Events end with a blank line; `data` lines of one event join with `\n`.
    for event in split_events(text) {
        let rewritten = event_data(event)
            .and_then(|data| serde_json::from_str::<Value>(&data).ok())
            .and_then(|mut message| {
                filter_message(&mut message, rules, consumer)
                    .then(|| serde_json::to_string(&message).ok())
                    .flatten()
            });
        match rewritten {
            Some(json) => {
                changed = true;
                for line in event
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with("data:"))
                {
                    out.push_str(line);
                    out.push('\n');
                }
                out.push_str("data: ");
                out.push_str(&json);
                out.push_str("\n\n");
            }
            None => out.push_str(event),
        }
    }
    changed.then(|| out.into_bytes())
}

/// The `data` of one event (its `data` lines joined with `\n`); `None` when it has none.
pub fn event_data(event: &str) -> Option<String> {
    let data: Vec<&str> = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    (!data.is_empty()).then(|| data.join("\n"))
}

/// The events of an event stream, each with the blank line that ends it.
pub fn split_events(text: &str) -> Vec<&str> {
    let mut events = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let end = if bytes[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if bytes[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        };
        match end {
            Some(e) => {
                events.push(&text[start..e]);
                start = e;
                i = e;
            }
            None => i += 1,
        }
    }
    if start < text.len() {
        events.push(&text[start..]);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(name: &str, allow: &[&str], deny: &[&str]) -> ToolRule {
        ToolRule {
            name: name.into(),
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("add", "add", true),
            ("add", "adds", false),
            ("github_*", "github_create_issue", true),
            ("github_*", "gitlab_create_issue", false),
            ("*_issue", "github_create_issue", true),
            ("*issue*", "list_issues_now", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = [
            rule("delete_*", &["admin"], &[]),
            rule("echo", &[], &["mallory"]),
            rule("*", &[], &["*"]),
        ];
        assert!(allowed(&rules, "delete_all", Some("admin")));
        assert!(!allowed(&rules, "delete_all", Some("alice")));
        assert!(allowed(&rules, "echo", Some("alice")));
        assert!(!allowed(&rules, "echo", Some("mallory")));
        assert!(allowed(&rules, "echo", None));
        assert!(!allowed(&rules, "anything_else", Some("admin")));
        // No rules, or no rule for the tool: allowed.
        assert!(allowed(&[], "x", None));
        assert!(allowed(&rules[..2], "add", Some("bob")));
        // Without a consumer, only `*` matches.
        assert!(!allowed(&[rule("add", &["alice"], &[])], "add", None));
    }

    #[test]
    fn lists_lose_the_tools_the_consumer_may_not_use() {
        let rules = [rule("add", &["alice"], &[])];
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "add", "inputSchema": {}}, {"name": "echo", "inputSchema": {}}
        ]}});
        let body = serde_json::to_vec(&answer).unwrap();
        let names = |b: &[u8]| -> Vec<String> {
            let v: Value = serde_json::from_slice(b).unwrap();
            v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(filter_list(&body, false, &rules, Some("alice")), None);
        let bob = filter_list(&body, false, &rules, Some("bob")).unwrap();
        assert_eq!(names(&bob), ["echo"]);

        let stream = format!(
            "event: message\r\nid: 7\r\ndata: {}\r\n\r\n: keep-alive\n\n",
            serde_json::to_string(&answer).unwrap()
        );
        let filtered = filter_list(stream.as_bytes(), true, &rules, Some("bob")).unwrap();
        let text = String::from_utf8(filtered).unwrap();
        assert!(text.starts_with("event: message\nid: 7\ndata: "), "{text}");
        assert!(text.ends_with("\n\n: keep-alive\n\n"), "{text}");
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        assert_eq!(names(data.as_bytes()), ["echo"]);
        assert_eq!(
            filter_list(stream.as_bytes(), true, &rules, Some("alice")),
            None
        );
    }
}
