//! `token-limit`: token- and request-based rate limits and quotas, per consumer (and proxy).
//!
//! On request the policy reserves an estimate (the host's prompt-token estimate plus the
//! request's `max_tokens`, or `default-max-tokens`) on every configured window, atomically
//! through the host's key-value `increment`; on completion it replaces the reservation by the real
//! usage. A refusal is a 429 with `retry-after` and OpenAI-style `x-ratelimit-*` headers.
//!
//! ```json
//! { "tokens-per-minute": 100000, "requests-per-minute": 600, "tokens-per-day": 2000000 }
//! ```
//!
//! Budgets in US dollars (`usd-per-day`, `usd-per-month`, `usd-total`) work the same way with
//! money: the estimated cost (prompt estimate × input price + `max_tokens` × output price, from
//! the built-in list prices of `weir-llm` and the policy's own `prices`) is reserved, in
//! micro-dollars, and settled to the real cost of the reported usage.

pub mod limiter;

use limiter::{AdmitError, Counters, Limit, Period, Reservation, Unit};
use serde::Deserialize;
use weir_llm::price::{Price, PriceTable};
use weir_policy_sdk::{
    Completion, ConfigError, Context, Denial, Message, Outcome, Phase, Policy, Verdict, kv,
};

/// Whose usage a window counts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Each consumer on each proxy has its own counters (anonymous requests share one).
    Consumer,
    /// All consumers of a proxy share the counters.
    Route,
    /// MCP proxies: each tool has its own counters, shared by all consumers. Only `tools/call`
    /// requests count.
    Tool,
    /// MCP proxies: each consumer has its own counters for each tool. Only `tools/call`
    /// requests count.
    ConsumerTool,
}

/// The policy's configuration. At least one limit must be set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "default_scope")]
    pub scope: Scope,
    pub tokens_per_minute: Option<u64>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    /// Completion tokens reserved when a request does not say `max_tokens`.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
    /// What an unreachable store means: `deny` (fail closed, 503) or `allow` (fail open: the
    /// request goes through uncounted, and a warning is logged).
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Budgets in US dollars.
    pub usd_per_day: Option<f64>,
    pub usd_per_month: Option<f64>,
    /// Never resets.
    pub usd_total: Option<f64>,
    /// Prices used by the budgets, over the built-in list prices (the same shape as the
    /// gateway's `prices`, without `provider`).
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
    /// With a budget, a model without a price: `deny` (400 `model_not_priced`) or `allow`
    /// (through, costing nothing against the budget).
    #[serde(default)]
    pub unpriced_models: Unpriced,
    /// `price_table()`, built once per configuration.
    #[serde(skip)]
    table: std::cell::OnceCell<PriceTable>,
}

/// What a budget does with a model it has no price for.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Unpriced {
    /// Refuse with 400 `model_not_priced`.
    #[default]
    Deny,
    /// Let it through, costing nothing against the budget.
    Allow,
}

/// One price of `prices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PriceConfig {
    /// A model name, or a prefix ending in `*`.
    pub model: String,
    /// USD per million prompt tokens.
    pub input_per_million: f64,
    /// USD per million completion tokens.
    pub output_per_million: f64,
    /// USD per million cached prompt tokens (default: the input price).
    pub cached_input_per_million: Option<f64>,
}

/// What the policy does when the key-value store cannot be reached.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnStoreError {
    /// Refuse with 503 `limit_store_unavailable` (nothing is spent uncounted).
    #[default]
    Deny,
    /// Let the request through without counting it.
    Allow,
}

fn default_scope() -> Scope {
    Scope::Consumer
}

fn default_max_tokens() -> u64 {
    1024
}

impl Config {
    /// The configured limits, request limits first (cheapest to refuse on).
    pub fn limits(&self) -> Vec<Limit> {
        let mut out = Vec::with_capacity(4);
        let mut add = |unit, period, max: Option<u64>| {
            if let Some(max) = max {
                out.push(Limit { unit, period, max });
            }
        };
        add(Unit::Requests, Period::Minute, self.requests_per_minute);
        add(Unit::Tokens, Period::Minute, self.tokens_per_minute);
        add(Unit::Tokens, Period::Day, self.tokens_per_day);
        add(Unit::Tokens, Period::Month, self.tokens_per_month);
        let micro = |usd: Option<f64>| usd.map(|u| (u * 1e6).round() as u64);
        add(Unit::MicroUsd, Period::Day, micro(self.usd_per_day));
        add(Unit::MicroUsd, Period::Month, micro(self.usd_per_month));
        add(Unit::MicroUsd, Period::Total, micro(self.usd_total));
        out
    }

    fn has_budget(&self) -> bool {
        self.usd_per_day.is_some() || self.usd_per_month.is_some() || self.usd_total.is_some()
    }

    /// The built-in list prices with this policy's `prices` over them.
    pub fn price_table(&self) -> &PriceTable {
        self.table.get_or_init(|| {
            PriceTable::new(
                self.prices
                    .iter()
                    .map(|p| Price {
                        model: p.model.clone(),
                        provider: None,
                        input: p.input_per_million,
                        output: p.output_per_million,
                        cached_input: p.cached_input_per_million,
                    })
                    .collect(),
            )
        })
    }
}

/// Micro-dollars for `prompt` (of which `cached`) and `completion` tokens at `price` (USD per
/// million tokens is micro-USD per token), rounded up.
pub fn micro_usd(price: &Price, prompt: u64, cached: u64, completion: u64) -> u64 {
    let cached = cached.min(prompt);
    let cost = (prompt - cached) as f64 * price.input
        + cached as f64 * price.cached_input.unwrap_or(price.input)
        + completion as f64 * price.output;
    cost.ceil() as u64
}

/// The token-limit policy.
#[derive(Debug)]
pub struct TokenLimit;

struct HostKv;

impl Counters for HostKv {
    fn increment(&self, key: &str, delta: i64, ttl_ms: u64) -> Result<i64, String> {
        let ttl = (ttl_ms > 0).then_some(ttl_ms); // 0: never expires (a total)
        kv::increment(key, delta, ttl).map_err(|e| match e {
            kv::KvError::Unavailable(m) | kv::KvError::Invalid(m) => m,
        })
    }
}

/// Whose counters a request spends; `None` when the scope does not count it (a tool scope and
/// a request that calls no tool).
fn subject(config: &Config, cx: &Context, request: &Message) -> Option<String> {
    let consumer = || cx.consumer().unwrap_or_else(|| "-".into());
    let tool = || {
        request
            .rpc()
            .into_iter()
            .find(|m| m.method.as_deref() == Some("tools/call"))
            .and_then(|m| m.tool_name)
    };
    Some(match config.scope {
        Scope::Consumer => format!("{}|{}", cx.route(), consumer()),
        Scope::Route => cx.route(),
        Scope::Tool => format!("{}|tool|{}", cx.route(), tool()?),
        Scope::ConsumerTool => format!("{}|{}|tool|{}", cx.route(), consumer(), tool()?),
    })
}

fn attribute_key(cx: &Context) -> String {
    format!("{}.reserved", cx.instance())
}

impl Policy for TokenLimit {
    type Config = Config;
    const NAME: &'static str = "token-limit";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const PHASES: &'static [Phase] = &[Phase::Request, Phase::Complete];

    fn check(config: &Config) -> Result<(), ConfigError> {
        if config.limits().is_empty() {
            return Err(ConfigError::at(
                "",
                "set at least one of tokens-per-minute, requests-per-minute, tokens-per-day, \
                 tokens-per-month, usd-per-day, usd-per-month, usd-total",
            ));
        }
        for (field, v) in [
            ("usd-per-day", config.usd_per_day),
            ("usd-per-month", config.usd_per_month),
            ("usd-total", config.usd_total),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.000_001)) {
                return Err(ConfigError::at(
                    field,
                    "must be a positive amount of US dollars (at least 0.000001)",
                ));
            }
        }
        for (i, p) in config.prices.iter().enumerate() {
            let bad = |v: f64| !(v.is_finite() && v >= 0.0);
            if p.model.is_empty()
                || bad(p.input_per_million)
                || bad(p.output_per_million)
                || p.cached_input_per_million.is_some_and(bad)
            {
                return Err(ConfigError::at(
                    format!("prices[{i}]"),
                    "needs a model and non-negative prices in USD per million tokens",
                ));
            }
        }
        for (field, v) in [
            ("tokens-per-minute", config.tokens_per_minute),
            ("requests-per-minute", config.requests_per_minute),
            ("tokens-per-day", config.tokens_per_day),
            ("tokens-per-month", config.tokens_per_month),
        ] {
            if v == Some(0) {
                return Err(ConfigError::at(
                    field,
                    "must be at least 1 (remove the field for no limit)",
                ));
            }
        }
        Ok(())
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        let Some(subject) = subject(config, cx, request) else {
            return Verdict::proceed();
        };
        let llm = cx.llm();
        let tokens = llm.as_ref().map_or(0, |l| {
            l.estimated_prompt_tokens + l.max_tokens.unwrap_or(config.default_max_tokens)
        });
        let now = cx.received_at_ms();
        let mut cost = 0;
        if config.has_budget() {
            let model = llm
                .as_ref()
                .and_then(|l| l.model.clone())
                .unwrap_or_default();
            match config.price_table().find("", &model) {
                Some(price) => {
                    let l = llm.as_ref();
                    let prompt = l.map_or(0, |l| l.estimated_prompt_tokens);
                    let completion = l
                        .and_then(|l| l.max_tokens)
                        .unwrap_or(config.default_max_tokens);
                    cost = micro_usd(price, prompt, 0, completion);
                }
                None if config.unpriced_models == Unpriced::Allow => {}
                None => {
                    return Verdict::deny(
                        400,
                        "model_not_priced",
                        format!(
                            "This proxy has a budget in US dollars and model `{model}` has no price: \
                             the operator can add it to the token-limit policy's `prices`."
                        ),
                    );
                }
            }
        }
        match limiter::admit_with_cost(&HostKv, &subject, &config.limits(), tokens, cost, now) {
            Ok(reservation) => {
                if !reservation.keys.is_empty() {
                    cx.set_attribute(&attribute_key(cx), &reservation.encode());
                }
                Verdict::proceed()
            }
            Err(AdmitError::Refused(r)) => Verdict::Deny(refusal(&r)),
            Err(AdmitError::Store(e)) if config.on_store_error == OnStoreError::Allow => {
                weir_policy_sdk::emit(
                    weir_policy_sdk::log::Level::Warn,
                    &format!("token-limit: store unavailable, request let through uncounted: {e}"),
                );
                Verdict::proceed()
            }
            Err(AdmitError::Store(e)) => Verdict::Deny(Denial {
                status: 503,
                code: "limit_store_unavailable".into(),
                message: format!("rate limit state is unavailable, try again: {e}"),
                headers: vec![("retry-after".into(), "1".into())],
            }),
        }
    }

    fn on_complete(config: &Config, cx: &Context, done: Completion) {
        let Some(reservation) = cx
            .attribute(&attribute_key(cx))
            .and_then(|a| Reservation::decode(&a))
        else {
            return;
        };
        let model = done
            .model
            .clone()
            .or_else(|| cx.llm().and_then(|l| l.model))
            .unwrap_or_default();
        let actual_cost = match (&done.usage, done.outcome) {
            (Some(u), _) => {
                config
                    .price_table()
                    .find("", &model)
                    .map_or(reservation.micro_usd, |price| {
                        micro_usd(
                            price,
                            u.prompt_tokens,
                            u.cached_prompt_tokens,
                            u.completion_tokens,
                        )
                    })
            }
            (None, Outcome::Success | Outcome::ClientCancelled) => reservation.micro_usd,
            _ => 0,
        };
        if let Err(e) = limiter::settle_cost(&HostKv, &reservation, actual_cost) {
            weir_policy_sdk::emit(
                weir_policy_sdk::log::Level::Warn,
                &format!("token-limit: budget settlement failed, the reservation stands: {e}"),
            );
        }
        let actual = match (done.usage, done.outcome) {
            (Some(u), _) => u.total_tokens,
            // Cancelled or successful without reported usage: keep the reservation.
            (None, Outcome::Success | Outcome::ClientCancelled) => reservation.tokens,
            // Nothing was generated.
            (
                None,
                Outcome::UpstreamError
                | Outcome::Denied
                | Outcome::Answered
                | Outcome::GatewayError,
            ) => 0,
        };
        if let Err(e) = limiter::settle(&HostKv, &reservation, actual) {
            weir_policy_sdk::emit(
                weir_policy_sdk::log::Level::Warn,
                &format!("token-limit: settlement failed, the reservation stands: {e}"),
            );
        }
    }
}

fn refusal(r: &limiter::Refusal) -> Denial {
    let unit = r.limit.unit.header_suffix();
    let period = match r.limit.period {
        Period::Minute => "minute",
        Period::Day => "day",
        Period::Month => "month",
        Period::Total => "all time",
    };
    let retry_after_s = r.retry_after_ms.div_ceil(1000).max(1);
    let never = r.limit.period == Period::Total;
    if r.limit.unit == Unit::MicroUsd {
        let usd = |micro: u64| format!("{:.6}", micro as f64 / 1e6);
        let (limit, remaining) = (usd(r.limit.max), usd(r.remaining));
        let budget = match r.limit.period {
            Period::Day => "usd-per-day",
            Period::Month => "usd-per-month",
            _ => "usd-total",
        };
        let when = if never {
            "It does not reset.".to_owned()
        } else {
            format!("It resets in {retry_after_s}s.")
        };
        let message = if r.too_large {
            format!(
                "Request too expensive: its estimated cost is more than the whole budget `{budget}` \
                 ({limit} USD per {period}). Reduce the prompt or max_tokens."
            )
        } else {
            format!(
                "Budget reached: `{budget}` is {limit} USD per {period}, {remaining} USD remaining. {when}"
            )
        };
        let mut headers = vec![
            ("x-ratelimit-limit-usd".into(), limit),
            ("x-ratelimit-remaining-usd".into(), remaining),
        ];
        if !never {
            headers.push(("retry-after".into(), retry_after_s.to_string()));
            headers.push(("x-ratelimit-reset-usd".into(), format!("{retry_after_s}s")));
        }
        return Denial {
            status: 429,
            code: "budget_exceeded".into(),
            message,
            headers,
        };
    }
    let message = if r.too_large {
        format!(
            "Request too large: it needs more {unit} than the limit of {} per {period} allows. \
             Reduce the prompt or max_tokens.",
            r.limit.max
        )
    } else {
        format!(
            "Rate limit reached: {} {unit} per {period}, {} remaining. Try again in {retry_after_s}s.",
            r.limit.max, r.remaining
        )
    };
    Denial {
        status: 429,
        code: if r.too_large {
            "request_too_large"
        } else {
            "rate_limit_exceeded"
        }
        .into(),
        message,
        headers: vec![
            ("retry-after".into(), retry_after_s.to_string()),
            (format!("x-ratelimit-limit-{unit}"), r.limit.max.to_string()),
            (
                format!("x-ratelimit-remaining-{unit}"),
                r.remaining.to_string(),
            ),
            (
                format!("x-ratelimit-reset-{unit}"),
                format!("{retry_after_s}s"),
            ),
        ],
    }
}

weir_policy_sdk::export_policy!(TokenLimit);
weir_policy_sdk::config_schema!("../config.schema.json");
