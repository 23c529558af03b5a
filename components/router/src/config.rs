//! The router's configuration: routes (conditions, a strategy, targets) and the circuit breaker,
//! with checks that name the field that is wrong.

use std::cell::OnceCell;

use regex_lite::Regex;
use serde::Deserialize;
use weir_policy_sdk::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Tried in order: the first route whose conditions hold decides the targets. When none
    /// does, the request goes to the proxy's own provider.
    pub routes: Vec<Route>,
    /// The proxy endpoints the router acts on (`chat/completions`, `messages`, `completions`,
    /// `embeddings`); requests to the others go to the proxy's own provider.
    #[serde(default = "chat_endpoints")]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub circuit_breaker: Breaker,
}

/// The endpoints a router acts on unless configured otherwise: the chat ones (a model alias
/// such as `fast` means a chat model, not an embedding model).
pub const CHAT_ENDPOINTS: [&str; 3] = ["chat/completions", "messages", "completions"];

/// The endpoints a router may act on (`models` lists the proxy's provider's models).
const ROUTABLE: [&str; 4] = ["chat/completions", "messages", "completions", "embeddings"];

fn chat_endpoints() -> Vec<String> {
    CHAT_ENDPOINTS.iter().map(|e| (*e).to_owned()).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Route {
    /// Names the route in metrics and usage flags (default `route-<index>`).
    pub name: Option<String>,
    /// Client model names this route serves (`fast`, or a prefix `gpt-4o*`); any when empty.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub when: When,
    #[serde(default)]
    pub strategy: Strategy,
    pub targets: Vec<TargetSpec>,
}

/// Conditions on the request; all that are given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct When {
    pub min_prompt_tokens: Option<u64>,
    pub max_prompt_tokens: Option<u64>,
    /// A regex (regex-lite syntax) on the text of the last user message.
    pub last_user_matches: Option<String>,
    pub header: Option<HeaderCondition>,
    /// Authenticated consumers (as set by `auth`).
    pub consumers: Option<Vec<String>>,
    /// Hours of the day, UTC, when the request arrived: `from` inclusive, `to` exclusive
    /// (`{from: 22, to: 6}` wraps around midnight).
    pub hours_utc: Option<Hours>,
    #[serde(skip)]
    pub(crate) regex: OnceCell<Regex>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HeaderCondition {
    pub name: String,
    /// The header has one of these values; when absent, it only has to be present.
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hours {
    pub from: u8,
    pub to: u8,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// A weighted random order: the first target is drawn by weight, the others follow as
    /// fallbacks (also drawn by weight).
    #[default]
    Weighted,
    /// The targets in the order given.
    Failover,
    /// The cheapest first, by each target's prices and the request's estimated tokens.
    Cheapest,
    /// The lowest recent latency first (an average of the last answers' time to the response
    /// headers), with a target without measurements tried first and some exploration.
    LeastLatency,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetSpec {
    /// A provider name from the gateway configuration.
    pub provider: String,
    /// The model to ask it for; the client's model when absent.
    pub model: Option<String>,
    /// `weighted`: the relative share of requests it gets first (0: only as a fallback).
    #[serde(default = "one")]
    pub weight: u32,
    /// `cheapest`: USD per million prompt tokens.
    pub input_per_million: Option<f64>,
    /// `cheapest`: USD per million completion tokens.
    pub output_per_million: Option<f64>,
}

fn one() -> u32 {
    1
}

impl TargetSpec {
    /// The target's name in state keys, metrics and logs: `provider/model`, `provider/*` when
    /// the client's model is kept.
    pub fn key(&self) -> String {
        format!("{}/{}", self.provider, self.model.as_deref().unwrap_or("*"))
    }
}

/// A target that fails `failures` times in a row (within `window-ms` of each other) is left out
/// for `cool-down-ms`; then one request probes it: a success closes the breaker, a failure
/// opens it again. The state is in the key-value store, shared by the gateway's replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Breaker {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "five")]
    pub failures: u32,
    #[serde(default = "thirty_seconds")]
    pub cool_down_ms: u64,
    #[serde(default = "one_minute")]
    pub window_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            enabled: true,
            failures: five(),
            cool_down_ms: thirty_seconds(),
            window_ms: one_minute(),
        }
    }
}

fn yes() -> bool {
    true
}
fn five() -> u32 {
    5
}
fn thirty_seconds() -> u64 {
    30_000
}
fn one_minute() -> u64 {
    60_000
}

impl Route {
    /// The route's name: its `name`, or `route-<index>`.
    pub fn label(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("route-{index}"))
    }

    /// Whether the route serves the client's `model`.
    pub fn serves(&self, model: Option<&str>) -> bool {
        self.models.is_empty()
            || model.is_some_and(|m| {
                self.models.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => m.starts_with(prefix),
                    None => m == p,
                })
            })
    }
}

impl When {
    pub(crate) fn regex(&self) -> Option<&Regex> {
        let pattern = self.last_user_matches.as_ref()?;
        if self.regex.get().is_none() {
            let _ = self.regex.set(Regex::new(pattern).ok()?);
        }
        self.regex.get()
    }
}

impl Config {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError::at("routes", "add at least one route"));
        }
        let mut names: Vec<String> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            check_route(i, r)?;
            let name = r.label(i);
            if names.contains(&name) {
                return Err(ConfigError::at(
                    format!("routes[{i}].name"),
                    format!("the route name `{name}` is used twice"),
                ));
            }
            names.push(name);
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if !ROUTABLE.contains(&e.as_str()) {
                return Err(ConfigError::at(
                    format!("endpoints[{i}]"),
                    format!(
                        "`{e}` is not an endpoint the router can route: use one of {ROUTABLE:?}"
                    ),
                ));
            }
        }
        let b = &self.circuit_breaker;
        if b.failures == 0 || b.failures > 1000 {
            return Err(ConfigError::at(
                "circuit-breaker.failures",
                "failures in a row before a target is left out: 1 to 1000",
            ));
        }
        if b.cool_down_ms == 0 || b.cool_down_ms > 3_600_000 {
            return Err(ConfigError::at(
                "circuit-breaker.cool-down-ms",
                "the cool-down is 1 ms to 1 hour",
            ));
        }
        if b.window_ms == 0 || b.window_ms > 86_400_000 {
            return Err(ConfigError::at(
                "circuit-breaker.window-ms",
                "the window is 1 ms to 1 day",
            ));
        }
        Ok(())
    }
}

fn check_route(i: usize, r: &Route) -> Result<(), ConfigError> {
    let at = |field: &str, m: String| Err(ConfigError::at(format!("routes[{i}].{field}"), m));
    if let Some(name) = &r.name {
        let valid = !name.is_empty()
            && name.len() <= 48
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return at(
                "name",
                "a route name is 1 to 48 characters of a-z, 0-9 and `-` (it names the route in metrics and usage records)".into(),
            );
        }
    }
    for (k, m) in r.models.iter().enumerate() {
        let body = m.strip_suffix('*').unwrap_or(m);
        if body.is_empty() || body.contains('*') {
            return at(
                &format!("models[{k}]"),
                format!(
                    "`{m}` is not a model name or a prefix ending in `*` (leave `models` out to serve every model)"
                ),
            );
        }
    }
    if r.targets.is_empty() {
        return at("targets", "a route needs at least one target".into());
    }
    for (k, t) in r.targets.iter().enumerate() {
        if t.provider.is_empty() {
            return at(
                &format!("targets[{k}].provider"),
                "name a provider from the gateway configuration".into(),
            );
        }
        if t.weight > 10_000 {
            return at(
                &format!("targets[{k}].weight"),
                "a weight is 0 to 10000".into(),
            );
        }
        for (field, price) in [
            ("input-per-million", t.input_per_million),
            ("output-per-million", t.output_per_million),
        ] {
            if price.is_some_and(|p| !p.is_finite() || p < 0.0) {
                return at(
                    &format!("targets[{k}].{field}"),
                    "a price is a number of USD, 0 or more".into(),
                );
            }
            if r.strategy == Strategy::Cheapest && price.is_none() {
                return at(
                    &format!("targets[{k}].{field}"),
                    "the `cheapest` strategy needs both prices of every target".into(),
                );
            }
        }
        if r.targets[..k]
            .iter()
            .any(|o| o.provider == t.provider && o.model == t.model)
        {
            return at(
                &format!("targets[{k}]"),
                format!("the target `{}` is listed twice", t.key()),
            );
        }
    }
    if r.strategy == Strategy::Weighted && r.targets.iter().all(|t| t.weight == 0) {
        return at(
            "targets",
            "at least one target of a weighted route needs a weight above 0".into(),
        );
    }
    let w = &r.when;
    if let (Some(lo), Some(hi)) = (w.min_prompt_tokens, w.max_prompt_tokens)
        && lo > hi
    {
        return at(
            "when.min-prompt-tokens",
            format!("min-prompt-tokens ({lo}) is above max-prompt-tokens ({hi})"),
        );
    }
    if let Some(p) = &w.last_user_matches {
        match Regex::new(p) {
            Ok(re) => {
                let _ = w.regex.set(re);
            }
            Err(e) => {
                return at(
                    "when.last-user-matches",
                    format!("not a valid regex (regex-lite syntax): {e}"),
                );
            }
        }
    }
    if let Some(h) = &w.header
        && (h.name.is_empty() || !h.name.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
    {
        return at(
            "when.header.name",
            "a header name (letters, digits and `-`)".into(),
        );
    }
    if let Some(h) = w.hours_utc
        && (h.from > 23 || h.to > 24 || h.from == h.to)
    {
        return at(
            "when.hours-utc",
            "hours are 0 to 23 (`to` up to 24, exclusive) and `from` differs from `to`".into(),
        );
    }
    Ok(())
}
