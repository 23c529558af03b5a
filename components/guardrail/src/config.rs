//! The guardrail's configuration: its rules, and the checks that name the field that is wrong.

use std::cell::OnceCell;
use std::collections::BTreeMap;

use regex_lite::{Regex, RegexBuilder};
use serde::Deserialize;
use weir_policy_sdk::ConfigError;

use crate::prefilter::Required;
use weir_jsonschema::Schema;

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
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Regex => "regex",
            Kind::Length => "length",
            Kind::JsonSchema => "json-schema",
            Kind::Url => "url",
            Kind::Injection => "injection",
            Kind::Classifier => "classifier",
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Kind::Regex => "content_blocked",
            Kind::Length => "content_length",
            Kind::JsonSchema => "response_schema_mismatch",
            Kind::Url => "url_not_allowed",
            Kind::Injection => "prompt_injection",
            Kind::Classifier => "content_flagged",
        }
    }

    pub(crate) fn default_side(self) -> AppliesTo {
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

/// A compiled pattern and its literal prefilter.
#[derive(Debug)]
pub(crate) struct Pattern {
    regex: Regex,
    required: Option<Required>,
}

impl Pattern {
    /// Whether the pattern matches `text`; `lower` is `text` with ASCII letters lower-cased,
    /// made on first use and shared by the rule's patterns.
    pub(crate) fn is_match(&self, text: &str, lower: &OnceCell<String>) -> bool {
        self.required
            .as_ref()
            .is_none_or(|r| r.may_match(text, lower.get_or_init(|| text.to_ascii_lowercase())))
            && self.regex.is_match(text)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub(crate) regexes: Vec<Pattern>,
    pub(crate) schema: Option<Schema>,
}

impl Rule {
    pub(crate) fn side(&self) -> AppliesTo {
        self.applies_to.unwrap_or(self.kind.default_side())
    }

    pub(crate) fn on_request(&self) -> bool {
        matches!(self.side(), AppliesTo::Request | AppliesTo::Both)
    }

    pub(crate) fn on_response(&self) -> bool {
        matches!(self.side(), AppliesTo::Response | AppliesTo::Both)
    }

    fn regex(&self, p: &str) -> Result<Pattern, regex_lite::Error> {
        let regex = RegexBuilder::new(p)
            .case_insensitive(self.case_insensitive)
            .size_limit(1 << 20)
            .build()?;
        Ok(Pattern {
            regex,
            required: Required::of(p, self.case_insensitive),
        })
    }

    pub(crate) fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(|| Compiled {
            regexes: self
                .patterns
                .iter()
                .filter_map(|p| self.regex(p).ok())
                .collect(),
            schema: self.schema.as_ref().and_then(|s| Schema::compile(s).ok()),
        })
    }

    pub(crate) fn roles_match(&self, role: &str) -> bool {
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

impl Config {
    /// Checks every rule and compiles their patterns and schemas (once, for all the requests this
    /// parsed configuration serves).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::at("rules", "add at least one rule"));
        }
        let mut ids: Vec<&str> = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            check_rule(i, r)?;
            if ids.contains(&r.id.as_str()) {
                return Err(ConfigError::at(
                    format!("rules[{i}].id"),
                    format!("the rule id `{}` is used twice", r.id),
                ));
            }
            ids.push(&r.id);
        }
        if !(16..=65_536).contains(&self.stream_window) {
            return Err(ConfigError::at(
                "stream-window",
                "the stream window is 16 to 65536 bytes",
            ));
        }
        Ok(())
    }
}

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
            let mut regexes = Vec::with_capacity(r.patterns.len());
            for (k, p) in r.patterns.iter().enumerate() {
                match r.regex(p) {
                    Ok(re) => regexes.push(re),
                    Err(e) => {
                        return at(
                            &format!("patterns[{k}]"),
                            format!(
                                "not a valid regex (regex-lite syntax: no look-around, no Unicode classes): {e}"
                            ),
                        );
                    }
                }
            }
            // Compiled once, here, for every request this parsed configuration serves.
            let _ = r.compiled.set(Compiled {
                regexes,
                schema: None,
            });
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
                (Some(s), _) => match Schema::compile(s) {
                    Ok(schema) => {
                        let _ = r.compiled.set(Compiled {
                            regexes: Vec::new(),
                            schema: Some(schema),
                        });
                    }
                    Err(e) => {
                        return at("schema", format!("not a schema this policy can check: {e}"));
                    }
                },
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
