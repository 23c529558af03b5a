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

pub mod limiter;

use limiter::{AdmitError, Counters, Limit, Period, Reservation, Unit};
use serde::Deserialize;
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
        out
    }
}

/// The token-limit policy.
#[derive(Debug)]
pub struct TokenLimit;

struct HostKv;

impl Counters for HostKv {
    fn increment(&self, key: &str, delta: i64, ttl_ms: u64) -> Result<i64, String> {
        kv::increment(key, delta, Some(ttl_ms)).map_err(|e| match e {
            kv::KvError::Unavailable(m) | kv::KvError::Invalid(m) => m,
        })
    }
}

fn subject(config: &Config, cx: &Context) -> String {
    match config.scope {
        Scope::Consumer => {
            let consumer = cx.consumer().unwrap_or_else(|| "-".into());
            format!("{}|{}", cx.route(), consumer)
        }
        Scope::Route => cx.route(),
    }
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
                "set at least one of tokens-per-minute, requests-per-minute, tokens-per-day, tokens-per-month",
            ));
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

    fn on_request(config: &Config, cx: &Context, _request: &Message) -> Verdict {
        let llm = cx.llm();
        let tokens = llm.as_ref().map_or(0, |l| {
            l.estimated_prompt_tokens + l.max_tokens.unwrap_or(config.default_max_tokens)
        });
        let now = cx.received_at_ms();
        match limiter::admit(&HostKv, &subject(config, cx), &config.limits(), tokens, now) {
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

    fn on_complete(_config: &Config, cx: &Context, done: Completion) {
        let Some(reservation) = cx
            .attribute(&attribute_key(cx))
            .and_then(|a| Reservation::decode(&a))
        else {
            return;
        };
        let actual = match (done.usage, done.outcome) {
            (Some(u), _) => u.total_tokens,
            // Cancelled or successful without reported usage: keep the reservation.
            (None, Outcome::Success | Outcome::ClientCancelled) => reservation.tokens,
            // Nothing was generated.
            (
                None,
                Outcome::UpstreamError | Outcome::Denied | Outcome::Answered | Outcome::GatewayError,
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
    };
    let retry_after_s = r.retry_after_ms.div_ceil(1000).max(1);
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
