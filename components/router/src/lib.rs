//! `router`: which upstream targets a request goes to, and in which order.
//!
//! Routes are tried in order; the first whose conditions hold (client model, estimated prompt
//! tokens, a regex on the last user message, a header, the consumer, the hour) orders its
//! targets by its strategy (`weighted`, `failover`, `cheapest`, `least-latency`), leaves out
//! the targets whose circuit breaker is open, and hands the list to the gateway's attempt loop,
//! which tries them one after the other while an attempt fails before anything was billed or
//! sent to the client. After the request, each attempt's outcome feeds the breakers (and the
//! latency averages), in the key-value store that the gateway's replicas share.
//!
//! ```json
//! {"routes": [
//!   {"name": "long", "when": {"min-prompt-tokens": 8000},
//!    "targets": [{"provider": "anthropic", "model": "claude-sonnet-4"}]},
//!   {"name": "fast", "models": ["fast"], "strategy": "weighted",
//!    "targets": [{"provider": "openai", "model": "gpt-4o-mini", "weight": 3},
//!                {"provider": "mistral", "model": "mistral-small", "weight": 1}]}
//! ]}
//! ```

pub mod breaker;
pub mod config;
pub mod pick;

use weir_policy_sdk::{
    Completion, Context, Denial, Edits, Message, Phase, Policy, Verdict, kv, metrics,
};

pub use config::{Config, Route, Strategy, TargetSpec};
use pick::Facts;

/// The request attribute naming the route taken (its index), for on-complete.
const ROUTE_ATTRIBUTE: &str = "router.route";

/// Expected completion tokens when the request sets no maximum (for `cheapest`).
const DEFAULT_COMPLETION_TOKENS: u64 = 512;

/// The host's key-value store, in this policy instance's namespace.
struct HostKv;

impl breaker::Store for HostKv {
    fn get(&self, key: &str) -> Option<Option<Vec<u8>>> {
        kv::get(key).ok()
    }
    fn set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> bool {
        kv::set(key, value, ttl_ms).is_ok()
    }
    fn delete(&self, key: &str) -> bool {
        kv::delete(key).is_ok()
    }
    fn increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Option<i64> {
        kv::increment(key, delta, ttl_ms).ok()
    }
}

/// The request's facts, read from the host only when a condition asks.
struct Request<'a> {
    cx: &'a Context,
    message: &'a Message,
    llm: &'a weir_policy_sdk::LlmRequest,
}

impl Facts for Request<'_> {
    fn model(&self) -> Option<String> {
        self.llm.model.clone()
    }
    fn prompt_tokens(&self) -> u64 {
        self.llm.estimated_prompt_tokens
    }
    fn last_user_text(&self) -> String {
        self.message
            .chat_messages()
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.joined_text())
            .unwrap_or_default()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.message.header(name)
    }
    fn consumer(&self) -> Option<String> {
        self.cx.consumer()
    }
    fn received_at_ms(&self) -> u64 {
        self.cx.received_at_ms()
    }
}

fn latency_key(target: &str) -> String {
    format!("latency:{target}")
}

fn read_latency(target: &str) -> Option<f64> {
    let bytes = kv::get(&latency_key(target)).ok()??;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

/// How long latency averages are kept without news.
const LATENCY_TTL_MS: u64 = 3_600_000;

pub struct Router;

impl Policy for Router {
    type Config = Config;
    const NAME: &'static str = "router";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    // Instances start from a snapshot with the configuration already parsed (the host
    // pre-initialises): no parsing on the request path.
    const PREINITIALISE: bool = true;
    const PHASES: &'static [Phase] = &[Phase::Request, Phase::Complete];

    fn check(config: &Config) -> Result<(), weir_policy_sdk::ConfigError> {
        config.check()
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        let Some(llm) = cx.llm() else {
            return Verdict::proceed();
        };
        if !config.endpoints.iter().any(|e| *e == cx.endpoint()) {
            return Verdict::proceed();
        }
        let facts = Request {
            cx,
            message: request,
            llm: &llm,
        };
        let Some(index) = pick::route_for(&config.routes, &facts) else {
            return Verdict::proceed();
        };
        let route = &config.routes[index];
        let label = route.label(index);
        let keys: Vec<String> = route.targets.iter().map(TargetSpec::key).collect();
        let latency = |i: usize| {
            (route.strategy == Strategy::LeastLatency)
                .then(|| read_latency(&keys[i]))
                .flatten()
        };
        let order = pick::order(
            route,
            pick::seed(&cx.request_id()),
            llm.estimated_prompt_tokens,
            llm.max_tokens.unwrap_or(DEFAULT_COMPLETION_TOKENS),
            &latency,
        );
        let now = cx.received_at_ms();
        let mut edits = Edits::none();
        let mut soonest: Option<u64> = None;
        for i in order {
            let target = &route.targets[i];
            match breaker::admit(&HostKv, &config.circuit_breaker, &keys[i], now) {
                breaker::Admit::Yes | breaker::Admit::Probe => {
                    edits = edits.target(&target.provider, target.model.as_deref());
                }
                breaker::Admit::No { until_ms } => {
                    let until = if until_ms > now { until_ms } else { now + 1000 };
                    soonest = Some(soonest.map_or(until, |s| s.min(until)));
                }
            }
        }
        cx.set_attribute(ROUTE_ATTRIBUTE, &index.to_string());
        if edits.targets.is_empty() {
            let wait_s = soonest
                .unwrap_or(now + 1000)
                .saturating_sub(now)
                .div_ceil(1000)
                .max(1);
            metrics::counter_add(
                "router_decisions",
                1,
                &[
                    ("route".into(), label.clone()),
                    ("target".into(), "none".into()),
                ],
            );
            return Verdict::Deny(Denial {
                status: 503,
                code: "no_healthy_target".into(),
                message: format!(
                    "every target of route `{label}` is failing and left out for now (circuit open); try again in {wait_s} s"
                ),
                headers: vec![("retry-after".into(), wait_s.to_string())],
            });
        }
        let first = &edits.targets[0];
        metrics::counter_add(
            "router_decisions",
            1,
            &[
                ("route".into(), label),
                (
                    "target".into(),
                    format!(
                        "{}/{}",
                        first.provider,
                        first.model.as_deref().unwrap_or("*")
                    ),
                ),
            ],
        );
        Verdict::edit(edits)
    }

    fn on_complete(config: &Config, cx: &Context, done: Completion) {
        let Some(route) = cx
            .attribute(ROUTE_ATTRIBUTE)
            .and_then(|a| a.parse::<usize>().ok())
            .and_then(|i| config.routes.get(i))
        else {
            return;
        };
        let now = cx.received_at_ms() + done.latency_ms;
        // The targets tried, in order (retries of one target count once).
        let mut tried: Vec<String> = Vec::new();
        for attempt in &done.attempts {
            // The route's target this attempt was: the same provider, and the same model or
            // the client's.
            let Some(target) = route.targets.iter().find(|t| {
                t.provider == attempt.provider && (t.model.is_none() || t.model == attempt.model)
            }) else {
                continue;
            };
            let key = target.key();
            if tried.last() != Some(&key) {
                tried.push(key.clone());
            }
            // An answer that broke off (2xx with an error) is a failure too.
            let ok =
                attempt.status.is_some_and(|s| (200..300).contains(&s)) && attempt.error.is_none();
            // A client error (400, 401...) says nothing about the target's health.
            let failed = !ok && attempt.status.is_none_or(|s| s == 429 || s >= 500);
            let result = if ok {
                "ok"
            } else if failed {
                "failed"
            } else {
                "refused"
            };
            metrics::counter_add(
                "router_attempts",
                1,
                &[
                    ("target".into(), key.clone()),
                    ("result".into(), result.into()),
                ],
            );
            if ok && route.strategy == Strategy::LeastLatency {
                let avg = pick::average(read_latency(&key), attempt.latency_ms as f64);
                let _ = kv::set(
                    &latency_key(&key),
                    format!("{avg:.1}").as_bytes(),
                    Some(LATENCY_TTL_MS),
                );
            }
            if !(ok || failed) {
                continue;
            }
            match breaker::record(&HostKv, &config.circuit_breaker, &key, ok, now) {
                Some(breaker::Change::Opened) => {
                    metrics::counter_add("router_ejections", 1, &[("target".into(), key.clone())]);
                    weir_policy_sdk::emit(
                        weir_policy_sdk::log::Level::Warn,
                        &format!(
                            "router: target `{key}` left out for {} ms after failing (circuit open)",
                            config.circuit_breaker.cool_down_ms
                        ),
                    );
                }
                Some(breaker::Change::Closed) => {
                    weir_policy_sdk::emit(
                        weir_policy_sdk::log::Level::Info,
                        &format!("router: target `{key}` answers again (circuit closed)"),
                    );
                }
                None => {}
            }
        }
        if let [first, .., last] = tried.as_slice() {
            // A request that moved on from its first target: which one answered (or was the
            // last tried).
            metrics::counter_add(
                "router_failovers",
                1,
                &[("from".into(), first.clone()), ("to".into(), last.clone())],
            );
        }
    }
}

weir_policy_sdk::export_policy!(Router);
weir_policy_sdk::config_schema!("../config.schema.json");
