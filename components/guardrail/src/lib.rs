//! `guardrail`: content rules on requests and answers, streamed answers included.
//!
//! A list of rules, each of a `kind` (`regex`, `length`, `json-schema`, `url`, `injection`,
//! `classifier`), applied to the request, the answer, or both (`applies-to`), with an `action`:
//! `deny` (the client gets an error in its own API format with the rule's code, or a stream ends
//! with an error event where the rule fired) or `flag` (the request goes on; the usage record
//! lists `guardrail.<rule id>` and the metric `weir_policy_rule_matches_total` counts it).
//! Matched text is never echoed: messages name the rule and what was wrong.
//!
//! ```json
//! {"rules": [
//!   {"id": "no-secrets", "kind": "regex", "patterns": ["(?i)api[_-]?key\\s*[:=]"]},
//!   {"id": "injection", "kind": "injection", "threshold": 0.5},
//!   {"id": "answer-shape", "kind": "json-schema", "from-request": true},
//!   {"id": "links", "kind": "url", "allowed-hosts": ["docs.example.com", "*.example.org"]}
//! ]}
//! ```

mod classifier;
mod config;
pub mod injection;
pub mod prefilter;
pub mod text;
mod typos;

use std::cell::{OnceCell, RefCell};

use weir_policy_sdk::{
    ChunkVerdict, ConfigError, Context, Denial, Message, Phase, Policy, StreamEvent, Verdict,
    metrics,
};

use classifier::classify;
pub use config::{Action, AppliesTo, ClassifierFormat, Config, Kind, OnError, RegexMode, Rule};
use weir_jsonschema::Schema;

/// Why a rule fired: the explanation for the client (never the matched text).
struct Fired {
    reason: String,
}

fn fired(reason: impl Into<String>) -> Option<Fired> {
    Some(Fired {
        reason: reason.into(),
    })
}

/// What one request keeps between its phases (one instance serves one request).
#[derive(Default)]
struct State {
    /// The schema of the request's `response_format`, for `from-request` rules.
    request_schema: Option<Result<Schema, String>>,
    /// The request asked for `{"type": "json_object"}`.
    json_object: bool,
    /// The streamed answer so far (up to `MAX_ANSWER` bytes).
    answer: String,
    /// What the streamed answer counts, all of it.
    counts: text::Counts,
    /// Rules already flagged on this request.
    flagged: Vec<String>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Most answer text a stream keeps for end-of-stream rules (JSON schema, minimums).
const MAX_ANSWER: usize = 4 << 20;

fn url_host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| match a.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => host.eq_ignore_ascii_case(a),
    })
}

/// Evaluates the text rules (everything but the classifier and schema) on a text.
fn evaluate_text(rule: &Rule, text: &str, whole: bool) -> Option<Fired> {
    evaluate_shared(rule, text, &OnceCell::new(), whole)
}

/// [`evaluate_text`] with `lower`, the text lower-cased once for all the rules that need it.
fn evaluate_shared(
    rule: &Rule,
    text: &str,
    lower: &OnceCell<String>,
    whole: bool,
) -> Option<Fired> {
    match rule.kind {
        Kind::Regex => {
            let regexes = &rule.compiled().regexes;
            let any = || regexes.iter().any(|r| r.is_match(text, lower));
            match rule.mode {
                RegexMode::DenyList => any().then(|| Fired {
                    reason: "it matches a forbidden pattern".into(),
                }),
                RegexMode::AllowList if whole => (!any()).then(|| Fired {
                    reason: "it matches none of the allowed patterns".into(),
                }),
                RegexMode::AllowList => None,
            }
        }
        Kind::Length => check_length(rule, &text::Counts::of(text), whole),
        Kind::Url => {
            for u in text::urls(text) {
                if !whole && u.end == text.len() {
                    continue; // may still grow
                }
                let Some(url) = text::parse_url(&text[u.start..u.end]) else {
                    return fired("it contains a link that is not a valid URL");
                };
                if rule.require_https && url.scheme != "https" {
                    return fired("it contains a link that is not https");
                }
                if let Some(allowed) = &rule.allowed_hosts
                    && !url_host_allowed(&url.host, allowed)
                {
                    return fired("it links to a host outside the allowed hosts");
                }
            }
            None
        }
        Kind::Injection => {
            let signals = injection::signals(text, &rule.known_attacks);
            let score = injection::score(&signals);
            (score >= rule.threshold.unwrap_or(0.5)).then(|| Fired {
                reason: format!(
                    "it looks like a prompt injection (score {score:.2}: {})",
                    signals
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
        Kind::JsonSchema | Kind::Classifier => None,
    }
}

/// A `length` rule on counted text; minimums only on a `whole` text.
fn check_length(rule: &Rule, counts: &text::Counts, whole: bool) -> Option<Fired> {
    let bounds = [
        ("characters", counts.chars, rule.min_chars, rule.max_chars),
        ("words", counts.words, rule.min_words, rule.max_words),
        (
            "sentences",
            counts.sentences(),
            rule.min_sentences,
            rule.max_sentences,
        ),
    ];
    for (name, n, lo, hi) in bounds {
        if let Some(hi) = hi
            && n > hi
        {
            return fired(format!("it has {n} {name}, more than the {hi} allowed"));
        }
        if let Some(lo) = lo
            && whole
            && n < lo
        {
            return fired(format!("it has {n} {name}, fewer than the {lo} required"));
        }
    }
    None
}

fn side_name(response: bool) -> &'static str {
    if response { "response" } else { "request" }
}

/// Records a rule that fired; `Some(denial)` when it denies.
fn act(cx: &Context, rule: &Rule, why: Fired, response: bool) -> Option<Denial> {
    let action = match rule.action {
        Action::Deny => "deny",
        Action::Flag => "flag",
    };
    let first = STATE.with_borrow_mut(|s| {
        if s.flagged.contains(&rule.id) {
            false
        } else {
            s.flagged.push(rule.id.clone());
            true
        }
    });
    if first {
        metrics::counter_add(
            "rule_matches",
            1,
            &[
                ("rule".into(), rule.id.clone()),
                ("action".into(), action.into()),
                ("side".into(), side_name(response).into()),
            ],
        );
        weir_policy_sdk::flag(cx, &format!("guardrail.{}", rule.id));
    }
    if rule.action == Action::Flag {
        return None;
    }
    let what = if response {
        "the answer"
    } else {
        "the request"
    };
    let reason = rule.message.clone().unwrap_or(why.reason);
    Some(Denial {
        status: rule.status.unwrap_or(if response { 422 } else { 400 }),
        code: rule.code.clone().unwrap_or_else(|| rule.kind.code().into()),
        message: format!("guardrail rule `{}` refused {what}: {reason}", rule.id),
        headers: Vec::new(),
    })
}

fn unavailable(cx: &Context, rule: &Rule, error: &str) -> Option<Denial> {
    weir_policy_sdk::emit(
        weir_policy_sdk::log::Level::Warn,
        &format!("guardrail rule `{}`: {error}", rule.id),
    );
    if rule.on_error == OnError::Allow {
        weir_policy_sdk::flag(cx, &format!("guardrail.{}.unavailable", rule.id));
        return None;
    }
    Some(Denial {
        status: 503,
        code: "guardrail_unavailable".into(),
        message: format!(
            "guardrail rule `{}` could not check the content: {error}",
            rule.id
        ),
        headers: Vec::new(),
    })
}

/// The text of the messages of some roles (`None`: the rule's default, the user's), and that
/// text lower-cased once a rule needs it.
type RolesText<'a> = (&'a Option<Vec<String>>, String, OnceCell<String>);

/// Runs every answer rule on a complete text; `Some` denies.
fn check_answer(cx: &Context, config: &Config, text: &str) -> Option<Denial> {
    let lower = OnceCell::new();
    for rule in config.rules.iter().filter(|r| r.on_response()) {
        let why = match rule.kind {
            Kind::JsonSchema => check_schema(rule, text),
            Kind::Classifier => match classify(rule, text) {
                Ok(f) => f,
                Err(e) => match unavailable(cx, rule, &e) {
                    Some(d) => return Some(d),
                    None => None,
                },
            },
            _ => evaluate_shared(rule, text, &lower, true),
        };
        if let Some(why) = why
            && let Some(d) = act(cx, rule, why, true)
        {
            return Some(d);
        }
    }
    None
}

fn check_schema(rule: &Rule, text: &str) -> Option<Fired> {
    STATE.with_borrow(|s| {
        let schema = match (
            &rule.compiled().schema,
            rule.from_request,
            &s.request_schema,
        ) {
            (Some(schema), _, _) => Ok(Some(schema)),
            (None, true, Some(Ok(schema))) => Ok(Some(schema)),
            (None, true, Some(Err(e))) => Err(e.clone()),
            _ => Ok(None),
        };
        let schema = match schema {
            Ok(s) => s,
            Err(e) => {
                // The client's schema uses what this validator does not support: the answer is
                // not refused for it; the log says why it went unchecked.
                weir_policy_sdk::emit(
                    weir_policy_sdk::log::Level::Warn,
                    &format!(
                        "guardrail rule `{}`: the request's response_format schema is not checked: {e}",
                        rule.id
                    ),
                );
                return None;
            }
        };
        if schema.is_none() && !(rule.from_request && s.json_object) {
            return None;
        }
        let doc: serde_json::Value = match serde_json::from_str(text.trim()) {
            Ok(d) => d,
            Err(_) => return fired("the answer is not valid JSON"),
        };
        match schema {
            Some(schema) => schema.validate(&doc).err().and_then(|e| {
                fired(format!(
                    "the answer does not match the response schema: {e}"
                ))
            }),
            None => (!doc.is_object()).then(|| Fired {
                reason: "the answer is not a JSON object".into(),
            }),
        }
    })
}

pub struct Guardrail;

impl Policy for Guardrail {
    type Config = Config;
    const NAME: &'static str = "guardrail";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const PHASES: &'static [Phase] = &[
        Phase::Request,
        Phase::Response,
        Phase::StreamChunk,
        Phase::StreamEnd,
    ];
    // Its patterns compiled once per configuration, not in every request's instance.
    const PREINITIALISE: bool = true;

    fn check(config: &Config) -> Result<(), ConfigError> {
        config.check()
    }

    fn prepare(config: &Config) {
        if config.rules.iter().any(|r| r.kind == Kind::Injection) {
            injection::prepare();
        }
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        let messages = request.chat_messages();
        if config
            .rules
            .iter()
            .any(|r| r.kind == Kind::JsonSchema && r.from_request)
        {
            remember_response_format(request);
        }
        // The text of the roles a rule reads (most rules read the same roles: made once), and
        // that text lower-cased when a rule needs it.
        let mut texts: Vec<RolesText> = Vec::new();
        for rule in config.rules.iter().filter(|r| r.on_request()) {
            let at = match texts.iter().position(|(roles, ..)| **roles == rule.roles) {
                Some(at) => at,
                None => {
                    let text = messages
                        .iter()
                        .filter(|m| rule.roles_match(&m.role))
                        .map(|m| m.joined_text())
                        .collect::<Vec<_>>()
                        .join("\n");
                    texts.push((&rule.roles, text, OnceCell::new()));
                    texts.len() - 1
                }
            };
            let (_, text, lower) = &texts[at];
            if text.is_empty() && rule.kind != Kind::Length {
                continue;
            }
            let why = match rule.kind {
                Kind::Classifier => match classify(rule, text) {
                    Ok(f) => f,
                    Err(e) => match unavailable(cx, rule, &e) {
                        Some(d) => return Verdict::Deny(d),
                        None => None,
                    },
                },
                _ => evaluate_shared(rule, text, lower, true),
            };
            if let Some(why) = why
                && let Some(d) = act(cx, rule, why, false)
            {
                return Verdict::Deny(d);
            }
        }
        Verdict::proceed()
    }

    fn on_response(config: &Config, cx: &Context, response: &Message) -> Verdict {
        if !config.rules.iter().any(Rule::on_response) {
            return Verdict::proceed();
        }
        let Some(answer) = response.answer() else {
            return Verdict::proceed();
        };
        for choice in answer.choices {
            let Some(text) = choice.text else { continue };
            if let Some(d) = check_answer(cx, config, &text) {
                return Verdict::Deny(d);
            }
        }
        Verdict::proceed()
    }

    fn on_stream_chunk(config: &Config, cx: &Context, event: StreamEvent) -> ChunkVerdict {
        let Some(piece) = event.text else {
            return ChunkVerdict::Pass;
        };
        if piece.is_empty() || !config.rules.iter().any(Rule::on_response) {
            return ChunkVerdict::Pass;
        }
        let start = STATE.with_borrow_mut(|s| {
            let before = s.answer.len();
            if s.answer.len() + piece.len() <= MAX_ANSWER {
                s.answer.push_str(&piece);
            }
            s.counts.feed(&piece);
            let mut start = before.saturating_sub(config.stream_window);
            while !s.answer.is_char_boundary(start) {
                start -= 1;
            }
            start
        });
        for rule in config.rules.iter().filter(|r| r.on_response()) {
            let why = STATE.with_borrow(|s| match rule.kind {
                Kind::Regex | Kind::Url => evaluate_text(rule, &s.answer[start..], false),
                // Maximums can only grow: check them on the whole answer so far.
                Kind::Length => check_length(rule, &s.counts, false),
                _ => None,
            });
            if let Some(why) = why
                && let Some(d) = act(cx, rule, why, true)
            {
                return ChunkVerdict::Abort(d);
            }
        }
        ChunkVerdict::Pass
    }

    fn on_stream_end(config: &Config, cx: &Context) -> ChunkVerdict {
        if !config.rules.iter().any(Rule::on_response) {
            return ChunkVerdict::Pass;
        }
        let text = STATE.with_borrow(|s| s.answer.clone());
        match check_answer(cx, config, &text) {
            Some(d) => ChunkVerdict::Abort(d),
            None => ChunkVerdict::Pass,
        }
    }
}

fn remember_response_format(request: &Message) {
    let body = request.body();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let format = doc.get("response_format");
    let kind = format.and_then(|f| f.get("type")).and_then(|t| t.as_str());
    STATE.with_borrow_mut(|s| match kind {
        Some("json_schema") => {
            s.request_schema = format
                .and_then(|f| f.pointer("/json_schema/schema"))
                .map(Schema::compile);
        }
        Some("json_object") => s.json_object = true,
        _ => {}
    });
}

weir_policy_sdk::export_policy!(Guardrail);
weir_policy_sdk::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        weir_policy_sdk::parse_config::<Guardrail>(json)
    }

    fn rule(json: &str) -> Rule {
        let c = parse(&format!(r#"{{"rules":[{json}]}}"#))
            .unwrap_or_else(|e| unreachable!("{}: {}", e.path, e.message));
        c.rules.into_iter().next().unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let path = |json: &str| parse(json).err().map(|e| e.path);
        assert_eq!(path(r#"{"rules":[]}"#), Some("rules".into()));
        assert_eq!(
            path(r#"{"rules":[{"id":"Bad","kind":"regex","patterns":["x"]}]}"#),
            Some("rules[0].id".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"regex","patterns":["("]}]}"#),
            Some("rules[0].patterns[0]".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"regex","patterns":["x"],"max-words":3}]}"#),
            Some("rules[0].max-words".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"length","min-words":5,"max-words":3}]}"#),
            Some("rules[0].min-words".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"json-schema"}]}"#),
            Some("rules[0].schema".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"url","allowed-hosts":["https://x.com"]}]}"#),
            Some("rules[0].allowed-hosts[0]".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"classifier"}]}"#),
            Some("rules[0].url".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"injection","threshold":2}]}"#),
            Some("rules[0].threshold".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"injection"},{"id":"a","kind":"injection"}]}"#),
            Some("rules[1].id".into())
        );
        assert_eq!(
            path(r#"{"rules":[{"id":"a","kind":"nope"}]}"#),
            Some("rules[0].kind".into())
        );
    }

    #[test]
    fn regex_lists_and_case() {
        let deny =
            rule(r#"{"id":"a","kind":"regex","patterns":["secret"],"case-insensitive":true}"#);
        assert!(evaluate_text(&deny, "my SECRET plan", true).is_some());
        assert!(evaluate_text(&deny, "my plan", true).is_none());
        let allow =
            rule(r#"{"id":"a","kind":"regex","mode":"allow-list","patterns":["^[a-z ]+$"]}"#);
        assert!(evaluate_text(&allow, "only letters", true).is_none());
        assert!(evaluate_text(&allow, "digits 123", true).is_some());
        assert!(
            evaluate_text(&allow, "digits 123", false).is_none(),
            "allow-lists wait for the whole text"
        );
    }

    #[test]
    fn length_bounds() {
        let r = rule(r#"{"id":"a","kind":"length","max-words":3,"min-sentences":2}"#);
        let why = evaluate_text(&r, "one two three four", true).map(|f| f.reason);
        assert_eq!(
            why.as_deref(),
            Some("it has 4 words, more than the 3 allowed")
        );
        assert!(evaluate_text(&r, "One. Two.", true).is_none());
        assert!(evaluate_text(&r, "One two.", true).is_some());
        assert!(
            evaluate_text(&r, "One two.", false).is_none(),
            "minimums wait for the end"
        );
    }

    #[test]
    fn urls_and_hosts() {
        let r = rule(
            r#"{"id":"a","kind":"url","allowed-hosts":["docs.example.com","*.example.org"],"require-https":true}"#,
        );
        assert!(
            evaluate_text(
                &r,
                "see https://docs.example.com/a?b=1 and https://x.example.org.",
                true
            )
            .is_none()
        );
        assert!(evaluate_text(&r, "see https://evil.test/x", true).is_some());
        assert!(
            evaluate_text(&r, "see https://example.org/x", true).is_some(),
            "*. is for subdomains"
        );
        assert!(evaluate_text(&r, "see http://docs.example.com/", true).is_some());
        assert!(
            evaluate_text(&r, "see https://evil.te", false).is_none(),
            "a link at the end may still grow"
        );
        let any = rule(r#"{"id":"a","kind":"url"}"#);
        assert!(evaluate_text(&any, "broken https://:80/x here", true).is_some());
        assert!(
            evaluate_text(&any, "see https://exa mple", true).is_none(),
            "a host alone is a valid link"
        );
    }

    #[test]
    fn host_patterns() {
        let allowed = vec!["*.example.com".to_owned(), "api.test".to_owned()];
        assert!(url_host_allowed("a.example.com", &allowed));
        assert!(url_host_allowed("API.test", &allowed));
        assert!(!url_host_allowed("example.com", &allowed));
        assert!(!url_host_allowed("badexample.com", &allowed));
    }
}
