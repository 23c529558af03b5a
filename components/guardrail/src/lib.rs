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

pub mod injection;
pub mod schema;
pub mod text;

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;

use regex_lite::{Regex, RegexBuilder};
use serde::Deserialize;
use weir_policy_sdk::{
    ChunkVerdict, ConfigError, Context, Denial, Message, Phase, Policy, StreamEvent, Verdict,
    http_client, metrics,
};

use schema::Schema;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Regex,
    Length,
    JsonSchema,
    Url,
    Injection,
    Classifier,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Regex => "regex",
            Kind::Length => "length",
            Kind::JsonSchema => "json-schema",
            Kind::Url => "url",
            Kind::Injection => "injection",
            Kind::Classifier => "classifier",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Kind::Regex => "content_blocked",
            Kind::Length => "content_length",
            Kind::JsonSchema => "response_schema_mismatch",
            Kind::Url => "url_not_allowed",
            Kind::Injection => "prompt_injection",
            Kind::Classifier => "content_flagged",
        }
    }

    fn default_side(self) -> AppliesTo {
        match self {
            Kind::JsonSchema | Kind::Url => AppliesTo::Response,
            Kind::Regex | Kind::Length | Kind::Injection | Kind::Classifier => AppliesTo::Request,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AppliesTo {
    Request,
    Response,
    Both,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    #[default]
    Deny,
    Flag,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RegexMode {
    /// The rule fires when any pattern matches.
    #[default]
    DenyList,
    /// The rule fires when no pattern matches.
    AllowList,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierFormat {
    /// OpenAI's `/v1/moderations`: `{"input": …}` → `results[0].flagged` and `categories`.
    #[default]
    OpenaiModeration,
    /// Any endpoint: `{"input": …}` → a boolean at the JSON pointer `flagged-at`.
    JsonPointer,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Fail open: the request goes on, flagged `guardrail.<id>.unavailable`.
    Allow,
    /// Fail closed: 503 `guardrail_unavailable`.
    #[default]
    Deny,
}

/// One rule. The fields after `message` belong to one kind each (checked).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rule {
    pub id: String,
    pub kind: Kind,
    pub applies_to: Option<AppliesTo>,
    #[serde(default)]
    pub action: Action,
    /// Request side: the roles whose text is checked (default `user`).
    pub roles: Option<Vec<String>>,
    pub status: Option<u16>,
    pub code: Option<String>,
    /// Replaces the explanation in the client's error.
    pub message: Option<String>,
    // regex
    #[serde(default)]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub mode: RegexMode,
    #[serde(default)]
    pub case_insensitive: bool,
    // length
    pub min_chars: Option<u64>,
    pub max_chars: Option<u64>,
    pub min_words: Option<u64>,
    pub max_words: Option<u64>,
    pub min_sentences: Option<u64>,
    pub max_sentences: Option<u64>,
    // json-schema
    pub schema: Option<serde_json::Value>,
    #[serde(default)]
    pub from_request: bool,
    // url
    pub allowed_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub require_https: bool,
    // injection
    pub threshold: Option<f64>,
    #[serde(default)]
    pub known_attacks: Vec<String>,
    // classifier
    pub url: Option<String>,
    #[serde(default)]
    pub format: ClassifierFormat,
    pub flagged_at: Option<String>,
    pub model: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: Option<u32>,
    #[serde(default)]
    pub on_error: OnError,
    /// openai-moderation: only these categories count (default: `flagged`).
    pub categories: Option<Vec<String>>,
    #[serde(skip)]
    compiled: OnceCell<Compiled>,
}

#[derive(Debug, Default)]
struct Compiled {
    regexes: Vec<Regex>,
    schema: Option<Schema>,
}

impl Rule {
    fn side(&self) -> AppliesTo {
        self.applies_to.unwrap_or(self.kind.default_side())
    }

    fn on_request(&self) -> bool {
        matches!(self.side(), AppliesTo::Request | AppliesTo::Both)
    }

    fn on_response(&self) -> bool {
        matches!(self.side(), AppliesTo::Response | AppliesTo::Both)
    }

    fn regex(&self, p: &str) -> Result<Regex, regex_lite::Error> {
        RegexBuilder::new(p)
            .case_insensitive(self.case_insensitive)
            .size_limit(1 << 20)
            .build()
    }

    fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(|| Compiled {
            regexes: self
                .patterns
                .iter()
                .filter_map(|p| self.regex(p).ok())
                .collect(),
            schema: self.schema.as_ref().and_then(|s| Schema::compile(s).ok()),
        })
    }

    fn roles_match(&self, role: &str) -> bool {
        match &self.roles {
            Some(roles) => roles.iter().any(|r| r == role),
            None => role == "user",
        }
    }

    /// The fields set that do not belong to this rule's kind.
    fn foreign_field(&self) -> Option<&'static str> {
        let k = self.kind;
        let set: [(&'static str, bool, &[Kind]); 13] = [
            ("patterns", !self.patterns.is_empty(), &[Kind::Regex]),
            ("case-insensitive", self.case_insensitive, &[Kind::Regex]),
            ("min-chars", self.min_chars.is_some(), &[Kind::Length]),
            ("max-chars", self.max_chars.is_some(), &[Kind::Length]),
            ("min-words", self.min_words.is_some(), &[Kind::Length]),
            ("max-words", self.max_words.is_some(), &[Kind::Length]),
            ("schema", self.schema.is_some(), &[Kind::JsonSchema]),
            ("from-request", self.from_request, &[Kind::JsonSchema]),
            ("allowed-hosts", self.allowed_hosts.is_some(), &[Kind::Url]),
            (
                "threshold",
                self.threshold.is_some(),
                &[Kind::Injection, Kind::Classifier],
            ),
            (
                "known-attacks",
                !self.known_attacks.is_empty(),
                &[Kind::Injection],
            ),
            ("url", self.url.is_some(), &[Kind::Classifier]),
            ("flagged-at", self.flagged_at.is_some(), &[Kind::Classifier]),
        ];
        set.iter()
            .find(|(_, present, kinds)| *present && !kinds.contains(&k))
            .map(|(name, _, _)| *name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub rules: Vec<Rule>,
    /// On streams, how far back (bytes) a pattern may start before the newest text: a match up
    /// to this long is caught however the answer is split into events.
    #[serde(default = "default_window")]
    pub stream_window: usize,
}

fn default_window() -> usize {
    256
}

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
    /// The streamed answer so far.
    answer: String,
    /// Rules already flagged on this request.
    flagged: Vec<String>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Most answer text a stream keeps for end-of-stream rules (JSON schema, minimums).
const MAX_ANSWER: usize = 4 << 20;

fn check_rule(i: usize, r: &Rule) -> Result<(), ConfigError> {
    let at = |field: &str, m: String| Err(ConfigError::at(format!("rules[{i}].{field}"), m));
    let valid_id = !r.id.is_empty()
        && r.id.len() <= 48
        && r.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_id {
        return at("id", "a rule id is 1 to 48 characters of a-z, 0-9 and `-` (it names the rule in errors, metrics and usage records)".into());
    }
    if let Some(field) = r.foreign_field() {
        return at(
            field,
            format!("`{field}` does not apply to a `{}` rule", r.kind.name()),
        );
    }
    if let Some(s) = r.status
        && !(400..=599).contains(&s)
    {
        return at("status", "a refusal's status is 400 to 599".into());
    }
    match r.kind {
        Kind::Regex => {
            if r.patterns.is_empty() {
                return at("patterns", "a regex rule needs at least one pattern".into());
            }
            for (k, p) in r.patterns.iter().enumerate() {
                if let Err(e) = r.regex(p) {
                    return at(
                        &format!("patterns[{k}]"),
                        format!(
                            "not a valid regex (regex-lite syntax: no look-around, no Unicode classes): {e}"
                        ),
                    );
                }
            }
        }
        Kind::Length => {
            let b = [
                r.min_chars,
                r.max_chars,
                r.min_words,
                r.max_words,
                r.min_sentences,
                r.max_sentences,
            ];
            if b.iter().all(Option::is_none) {
                return at(
                    "max-chars",
                    "a length rule needs at least one bound: min-/max-chars, -words or -sentences"
                        .into(),
                );
            }
            for (lo, hi, name) in [
                (r.min_chars, r.max_chars, "chars"),
                (r.min_words, r.max_words, "words"),
                (r.min_sentences, r.max_sentences, "sentences"),
            ] {
                if let (Some(lo), Some(hi)) = (lo, hi)
                    && lo > hi
                {
                    return at(
                        &format!("min-{name}"),
                        format!("min-{name} ({lo}) is above max-{name} ({hi})"),
                    );
                }
            }
        }
        Kind::JsonSchema => {
            match (&r.schema, r.from_request) {
                (None, false) => return at("schema", "give a `schema`, or `from-request: true` to check answers against the client's `response_format`".into()),
                (Some(s), _) => {
                    if let Err(e) = Schema::compile(s) {
                        return at("schema", format!("not a schema this policy can check: {e}"));
                    }
                }
                _ => {}
            }
            if r.on_request() {
                return at(
                    "applies-to",
                    "a json-schema rule checks answers: `applies-to: response`".into(),
                );
            }
        }
        Kind::Url => {
            for (k, h) in r.allowed_hosts.iter().flatten().enumerate() {
                let bare = h.strip_prefix("*.").unwrap_or(h);
                if bare.is_empty() || bare.contains(['/', ':', ' ', '*']) {
                    return at(
                        &format!("allowed-hosts[{k}]"),
                        format!(
                            "`{h}` is not a host name: write `example.com` or `*.example.com`, without scheme or port"
                        ),
                    );
                }
            }
        }
        Kind::Injection => {
            if let Some(t) = r.threshold
                && (!(0.0..=1.0).contains(&t) || t == 0.0)
            {
                return at(
                    "threshold",
                    "the injection score threshold is above 0 and at most 1 (default 0.5)".into(),
                );
            }
        }
        Kind::Classifier => {
            let Some(url) = &r.url else {
                return at(
                    "url",
                    "a classifier rule needs the `url` of the moderation endpoint".into(),
                );
            };
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return at(
                    "url",
                    "the classifier's url starts with https:// (or http://)".into(),
                );
            }
            if r.format == ClassifierFormat::JsonPointer
                && r.flagged_at.as_deref().is_none_or(|p| !p.starts_with('/'))
            {
                return at("flagged-at", "a json-pointer classifier needs `flagged-at`, the JSON pointer of its boolean verdict (e.g. `/flagged`)".into());
            }
            if let Some(t) = r.threshold
                && !(0.0..=1.0).contains(&t)
            {
                return at(
                    "threshold",
                    "a category score threshold is between 0 and 1".into(),
                );
            }
            if r.timeout_ms.is_some_and(|t| t == 0 || t > 30_000) {
                return at(
                    "timeout-ms",
                    "the classifier's timeout is 1 to 30000 ms".into(),
                );
            }
        }
    }
    Ok(())
}

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
    match rule.kind {
        Kind::Regex => {
            let regexes = &rule.compiled().regexes;
            match rule.mode {
                RegexMode::DenyList => regexes.iter().any(|r| r.is_match(text)).then(|| Fired {
                    reason: "it matches a forbidden pattern".into(),
                }),
                RegexMode::AllowList if whole => {
                    (!regexes.iter().any(|r| r.is_match(text))).then(|| Fired {
                        reason: "it matches none of the allowed patterns".into(),
                    })
                }
                RegexMode::AllowList => None,
            }
        }
        Kind::Length => {
            let counts = [
                (
                    "characters",
                    text::chars(text),
                    rule.min_chars,
                    rule.max_chars,
                ),
                ("words", text::words(text), rule.min_words, rule.max_words),
                (
                    "sentences",
                    text::sentences(text),
                    rule.min_sentences,
                    rule.max_sentences,
                ),
            ];
            for (name, n, lo, hi) in counts {
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

/// The classifier's verdict on `text`: `Ok(None)` passes.
fn classify(rule: &Rule, text: &str) -> Result<Option<Fired>, String> {
    let url = rule.url.clone().unwrap_or_default();
    let mut body = serde_json::json!({ "input": text });
    if let Some(model) = &rule.model {
        body["model"] = serde_json::Value::String(model.clone());
    }
    let mut headers: Vec<(String, String)> =
        vec![("content-type".into(), "application/json".into())];
    headers.extend(
        rule.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    let response = http_client::send(&http_client::OutgoingRequest {
        method: "POST".into(),
        url,
        headers,
        body: Some(body.to_string().into_bytes()),
        timeout_ms: rule.timeout_ms.unwrap_or(2000),
    })
    .map_err(|e| match e {
        http_client::HttpError::Denied(m) => format!("the gateway does not let this policy reach the classifier ({m}): add its host to the entry's `allow-hosts`"),
        http_client::HttpError::Timeout => "the classifier did not answer in time".into(),
        http_client::HttpError::Failed(m) => format!("the classifier could not be reached: {m}"),
    })?;
    if !(200..300).contains(&response.status) {
        return Err(format!("the classifier answered HTTP {}", response.status));
    }
    let doc: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|_| "the classifier's answer is not JSON".to_owned())?;
    match rule.format {
        ClassifierFormat::OpenaiModeration => {
            let result = doc
                .pointer("/results/0")
                .ok_or("the classifier's answer has no `results[0]` (OpenAI moderation format)")?;
            let scores = result.get("category_scores").and_then(|s| s.as_object());
            let categories = result.get("categories").and_then(|s| s.as_object());
            let mut hits: Vec<String> = Vec::new();
            match (&rule.categories, rule.threshold) {
                (wanted, Some(t)) => {
                    for (name, score) in scores.into_iter().flatten() {
                        let counted = wanted.as_ref().is_none_or(|w| w.iter().any(|c| c == name));
                        if counted && score.as_f64().is_some_and(|s| s >= t) {
                            hits.push(name.clone());
                        }
                    }
                }
                (Some(wanted), None) => {
                    for (name, on) in categories.into_iter().flatten() {
                        if on.as_bool() == Some(true) && wanted.iter().any(|c| c == name) {
                            hits.push(name.clone());
                        }
                    }
                }
                (None, None) => {
                    if result.get("flagged").and_then(serde_json::Value::as_bool) == Some(true) {
                        for (name, on) in categories.into_iter().flatten() {
                            if on.as_bool() == Some(true) {
                                hits.push(name.clone());
                            }
                        }
                        if hits.is_empty() {
                            hits.push("flagged".into());
                        }
                    }
                }
            }
            // Category names come from the endpoint: keep only plain ones in messages.
            hits.retain(|h| {
                h.len() <= 64
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b))
            });
            Ok((!hits.is_empty()).then(|| Fired {
                reason: format!("the moderation endpoint flagged it ({})", hits.join(", ")),
            }))
        }
        ClassifierFormat::JsonPointer => {
            let pointer = rule.flagged_at.as_deref().unwrap_or("/flagged");
            match doc.pointer(pointer) {
                Some(serde_json::Value::Bool(flagged)) => Ok(flagged.then(|| Fired {
                    reason: "the classifier flagged it".into(),
                })),
                _ => Err(format!(
                    "the classifier's answer has no boolean at `{pointer}`"
                )),
            }
        }
    }
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

/// Runs every answer rule on a complete text; `Some` denies.
fn check_answer(cx: &Context, config: &Config, text: &str) -> Option<Denial> {
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
            _ => evaluate_text(rule, text, true),
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

    fn check(config: &Config) -> Result<(), ConfigError> {
        if config.rules.is_empty() {
            return Err(ConfigError::at("rules", "add at least one rule"));
        }
        let mut ids: Vec<&str> = Vec::new();
        for (i, r) in config.rules.iter().enumerate() {
            check_rule(i, r)?;
            if ids.contains(&r.id.as_str()) {
                return Err(ConfigError::at(
                    format!("rules[{i}].id"),
                    format!("the rule id `{}` is used twice", r.id),
                ));
            }
            ids.push(&r.id);
        }
        if !(16..=65_536).contains(&config.stream_window) {
            return Err(ConfigError::at(
                "stream-window",
                "the stream window is 16 to 65536 bytes",
            ));
        }
        Ok(())
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
        for rule in config.rules.iter().filter(|r| r.on_request()) {
            let text: String = messages
                .iter()
                .filter(|m| rule.roles_match(&m.role))
                .map(|m| m.joined_text())
                .collect::<Vec<_>>()
                .join("\n");
            if text.is_empty() && rule.kind != Kind::Length {
                continue;
            }
            let why = match rule.kind {
                Kind::Classifier => match classify(rule, &text) {
                    Ok(f) => f,
                    Err(e) => match unavailable(cx, rule, &e) {
                        Some(d) => return Verdict::Deny(d),
                        None => None,
                    },
                },
                _ => evaluate_text(rule, &text, true),
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
        let (window, whole) = STATE.with_borrow_mut(|s| {
            let before = s.answer.len();
            if s.answer.len() + piece.len() <= MAX_ANSWER {
                s.answer.push_str(&piece);
            }
            let mut start = before.saturating_sub(config.stream_window);
            while !s.answer.is_char_boundary(start) {
                start -= 1;
            }
            (s.answer[start..].to_owned(), s.answer.clone())
        });
        for rule in config.rules.iter().filter(|r| r.on_response()) {
            let why = match rule.kind {
                Kind::Regex | Kind::Url => evaluate_text(rule, &window, false),
                // Maximums can only grow: check them on the whole answer so far.
                Kind::Length => evaluate_text(rule, &whole, false),
                _ => None,
            };
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
