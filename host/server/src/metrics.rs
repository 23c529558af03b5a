//! Prometheus metrics of the data plane, rendered in the text exposition format.
//!
//! Recorded in one place per request (when its usage record is written), so every request is
//! counted exactly once. Label values never contain secrets: proxy, provider and consumer names
//! come from the configuration, models from the request or the upstream.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::usage::UsageRecord;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Distinct `tool` label values per proxy in `weir_mcp_tool_calls_total`; further tools count
/// as [`OTHER_TOOLS`].
const MAX_TOOL_LABELS: usize = 256;
const OTHER_TOOLS: &str = "_other";

#[derive(Debug, Default)]
struct Inner {
    /// (proxy, endpoint, status, outcome) → count
    requests: BTreeMap<(String, String, u16, &'static str), u64>,
    /// proxy → latency
    latency: BTreeMap<String, Histogram>,
    /// proxy → time to first token (streams)
    ttft: BTreeMap<String, Histogram>,
    /// (provider, model, consumer, kind) → tokens
    tokens: BTreeMap<(String, String, String, &'static str), u64>,
    /// (provider, model, consumer) → US dollars
    cost: BTreeMap<(String, String, String), f64>,
    /// (proxy, policy, code) → count
    denials: BTreeMap<(String, String, String), u64>,
    /// provider → time from sending upstream to the response headers
    upstream: BTreeMap<String, Histogram>,
    /// (proxy, error code) → count
    errors: BTreeMap<(String, &'static str), u64>,
    /// (proxy, tool, outcome) → MCP `tools/call` count
    tool_calls: BTreeMap<(String, String, &'static str), u64>,
    /// (proxy, layer, result) → count
    cache_requests: BTreeMap<(String, &'static str, &'static str), u64>,
    /// proxy → (tokens, US dollars) that cache hits saved
    cache_saved: BTreeMap<String, (u64, f64)>,
    /// (backend, operation, outcome) → count
    kv_operations: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// backend → operation time
    kv_duration: BTreeMap<String, Histogram>,
    /// (metric, policy, proxy, other labels) → count, from policies' `metrics.counter-add`
    policy_counters: BTreeMap<PolicySeries, u64>,
    /// the same for `metrics.observe`
    policy_histograms: BTreeMap<PolicySeries, Histogram>,
}

/// (metric name, policy, proxy, the policy's own labels rendered `k="v",...`).
type PolicySeries = (String, String, String, String);

/// Most distinct series policies may create; beyond, their new series are dropped (and logged
/// once), so a policy cannot exhaust the gateway's memory through labels.
const MAX_POLICY_SERIES: usize = 10_000;

/// The gateway's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one finished request.
    pub fn record(&self, r: &UsageRecord) {
        let mut m = self.lock();
        *m.requests
            .entry((r.proxy.clone(), r.endpoint.clone(), r.status, r.outcome))
            .or_default() += 1;
        m.latency
            .entry(r.proxy.clone())
            .or_default()
            .observe(r.latency_ms as f64 / 1000.0);
        if let Some(t) = r.time_to_first_token_ms {
            m.ttft
                .entry(r.proxy.clone())
                .or_default()
                .observe(t as f64 / 1000.0);
        }
        if let Some(ms) = r.upstream_latency_ms {
            m.upstream
                .entry(r.provider.clone())
                .or_default()
                .observe(ms as f64 / 1000.0);
        }
        if let Some(code) = r.error {
            *m.errors.entry((r.proxy.clone(), code)).or_default() += 1;
        }
        let model = r.model.clone().unwrap_or_default();
        let consumer = r.consumer.clone().unwrap_or_default();
        for (kind, n) in [
            ("prompt", r.prompt_tokens),
            ("completion", r.completion_tokens),
        ] {
            if n > 0 {
                *m.tokens
                    .entry((r.provider.clone(), model.clone(), consumer.clone(), kind))
                    .or_default() += n;
            }
        }
        if let Some(c) = r.cost_usd {
            *m.cost
                .entry((r.provider.clone(), model, consumer))
                .or_default() += c;
        }
        if let Some(tool) = &r.tool {
            // Clients name tools, so the label's values are bounded per proxy.
            let known = m
                .tool_calls
                .keys()
                .any(|(p, t, _)| p == &r.proxy && t == tool);
            let distinct = || {
                let mut tools: Vec<&String> = m
                    .tool_calls
                    .keys()
                    .filter(|(p, _, _)| p == &r.proxy)
                    .map(|(_, t, _)| t)
                    .collect();
                tools.dedup();
                tools.len()
            };
            let label = if known || distinct() < MAX_TOOL_LABELS {
                tool.clone()
            } else {
                OTHER_TOOLS.to_owned()
            };
            *m.tool_calls
                .entry((r.proxy.clone(), label, r.outcome))
                .or_default() += 1;
        }
        if let Some(cache) = &r.cache {
            for l in &cache.lookups {
                *m.cache_requests
                    .entry((r.proxy.clone(), l.layer, l.result))
                    .or_default() += 1;
            }
            if let Some(tokens) = cache.saved_tokens {
                let saved = m.cache_saved.entry(r.proxy.clone()).or_default();
                saved.0 += tokens;
                saved.1 += cache.saved_cost_usd.unwrap_or(0.0);
            }
        }
    }

    fn policy_series(
        &self,
        name: &str,
        policy: &str,
        proxy: &str,
        labels: &[(String, String)],
    ) -> PolicySeries {
        let mut rendered = String::new();
        for (k, v) in labels {
            let _ = write!(rendered, ",{k}=\"{}\"", esc(v));
        }
        (name.into(), policy.into(), proxy.into(), rendered)
    }

    /// Counts one key-value operation.
    pub fn kv(&self, backend: &'static str, op: &'static str, outcome: &'static str, seconds: f64) {
        let mut m = self.lock();
        *m.kv_operations.entry((backend, op, outcome)).or_default() += 1;
        m.kv_duration
            .entry(backend.to_owned())
            .or_default()
            .observe(seconds);
    }

    /// Counts a policy refusal.
    pub fn denial(&self, proxy: &str, policy: &str, code: &str) {
        *self
            .lock()
            .denials
            .entry((proxy.into(), policy.into(), code.into()))
            .or_default() += 1;
    }

    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP weir_build_info Build information.\n# TYPE weir_build_info gauge\n");
        let _ = writeln!(
            out,
            "weir_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        out.push_str("# HELP weir_requests_total Requests that reached a proxy, by outcome.\n# TYPE weir_requests_total counter\n");
        for ((proxy, endpoint, status, outcome), n) in &m.requests {
            let _ = writeln!(
                out,
                "weir_requests_total{{proxy=\"{}\",endpoint=\"{}\",status=\"{status}\",outcome=\"{outcome}\"}} {n}",
                esc(proxy),
                esc(endpoint)
            );
        }
        histogram(
            &mut out,
            "weir_request_duration_seconds",
            "Time from request to the end of the answer.",
            "proxy",
            &m.latency,
        );
        histogram(
            &mut out,
            "weir_time_to_first_token_seconds",
            "Time to the first streamed event.",
            "proxy",
            &m.ttft,
        );
        histogram(
            &mut out,
            "weir_upstream_duration_seconds",
            "Time from sending a request to the provider to its response headers.",
            "provider",
            &m.upstream,
        );
        out.push_str("# HELP weir_errors_total Requests that failed, by error code.\n# TYPE weir_errors_total counter\n");
        for ((proxy, code), n) in &m.errors {
            let _ = writeln!(
                out,
                "weir_errors_total{{proxy=\"{}\",type=\"{code}\"}} {n}",
                esc(proxy)
            );
        }

        out.push_str("# HELP weir_tokens_total Tokens reported by providers.\n# TYPE weir_tokens_total counter\n");
        for ((provider, model, consumer, kind), n) in &m.tokens {
            let _ = writeln!(
                out,
                "weir_tokens_total{{provider=\"{}\",model=\"{}\",consumer=\"{}\",type=\"{kind}\"}} {n}",
                esc(provider),
                esc(model),
                esc(consumer)
            );
        }
        out.push_str("# HELP weir_cost_usd_total What the tokens cost, from the price table (US dollars).\n# TYPE weir_cost_usd_total counter\n");
        for ((provider, model, consumer), c) in &m.cost {
            let _ = writeln!(
                out,
                "weir_cost_usd_total{{provider=\"{}\",model=\"{}\",consumer=\"{}\"}} {c}",
                esc(provider),
                esc(model),
                esc(consumer)
            );
        }
        out.push_str("# HELP weir_policy_denials_total Requests refused by a policy.\n# TYPE weir_policy_denials_total counter\n");
        for ((proxy, policy, code), n) in &m.denials {
            let _ = writeln!(
                out,
                "weir_policy_denials_total{{proxy=\"{}\",policy=\"{}\",code=\"{}\"}} {n}",
                esc(proxy),
                esc(policy),
                esc(code)
            );
        }
        out.push_str("# HELP weir_mcp_tool_calls_total MCP tools/call requests, by tool and outcome (success, denied, upstream_error...).\n# TYPE weir_mcp_tool_calls_total counter\n");
        for ((proxy, tool, outcome), n) in &m.tool_calls {
            let _ = writeln!(
                out,
                "weir_mcp_tool_calls_total{{proxy=\"{}\",tool=\"{}\",outcome=\"{outcome}\"}} {n}",
                esc(proxy),
                esc(tool)
            );
        }
        out.push_str("# HELP weir_cache_requests_total Cache lookups, by layer (exact, semantic) and result (hit, miss, bypass, skip, error).\n# TYPE weir_cache_requests_total counter\n");
        for ((proxy, layer, result), n) in &m.cache_requests {
            let _ = writeln!(
                out,
                "weir_cache_requests_total{{proxy=\"{}\",layer=\"{layer}\",result=\"{result}\"}} {n}",
                esc(proxy)
            );
        }
        out.push_str("# HELP weir_cache_saved_tokens_total Tokens that cache hits did not spend (what the stored answers cost when made).\n# TYPE weir_cache_saved_tokens_total counter\n");
        for (proxy, (tokens, _)) in &m.cache_saved {
            let _ = writeln!(
                out,
                "weir_cache_saved_tokens_total{{proxy=\"{}\"}} {tokens}",
                esc(proxy)
            );
        }
        out.push_str("# HELP weir_cache_saved_cost_usd_total What those tokens would have cost, from the price table (US dollars).\n# TYPE weir_cache_saved_cost_usd_total counter\n");
        for (proxy, (_, usd)) in &m.cache_saved {
            let _ = writeln!(
                out,
                "weir_cache_saved_cost_usd_total{{proxy=\"{}\"}} {usd}",
                esc(proxy)
            );
        }
        out.push_str("# HELP weir_kv_operations_total Key-value store operations, by outcome (ok, unavailable, invalid).\n# TYPE weir_kv_operations_total counter\n");
        for ((backend, op, outcome), n) in &m.kv_operations {
            let _ = writeln!(
                out,
                "weir_kv_operations_total{{backend=\"{backend}\",operation=\"{op}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        histogram(
            &mut out,
            "weir_kv_duration_seconds",
            "Time of one key-value store operation.",
            "backend",
            &m.kv_duration,
        );
        render_policy_metrics(&mut out, &m);
        out
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &BTreeMap<String, Histogram>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (value, h) in series {
        let value = esc(value);
        for (bound, count) in BUCKETS.iter().zip(&h.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {}", h.count);
    }
}

/// Policies' own metrics (`weir:policy/metrics`), with the policy and proxy as labels. Names and
/// labels were checked by the runtime (`weir_core::isolation::check_metric`).
impl weir_runtime::PolicyMetrics for Metrics {
    fn counter_add(
        &self,
        policy: &str,
        proxy: &str,
        name: &str,
        value: u64,
        labels: &[(String, String)],
    ) {
        let key = self.policy_series(name, policy, proxy, labels);
        let mut m = self.lock();
        let full = m.policy_counters.len() + m.policy_histograms.len() >= MAX_POLICY_SERIES;
        if full && !m.policy_counters.contains_key(&key) {
            return;
        }
        *m.policy_counters.entry(key).or_default() += value;
    }

    fn observe(
        &self,
        policy: &str,
        proxy: &str,
        name: &str,
        value: f64,
        labels: &[(String, String)],
    ) {
        let key = self.policy_series(name, policy, proxy, labels);
        let mut m = self.lock();
        let full = m.policy_counters.len() + m.policy_histograms.len() >= MAX_POLICY_SERIES;
        if full && !m.policy_histograms.contains_key(&key) {
            return;
        }
        m.policy_histograms.entry(key).or_default().observe(value);
    }
}

fn render_policy_metrics(out: &mut String, m: &Inner) {
    let mut last = String::new();
    for ((name, policy, proxy, labels), n) in &m.policy_counters {
        let family = format!("weir_policy_{name}_total");
        if family != last {
            let _ = writeln!(
                out,
                "# HELP {family} Counted by policies (metrics.counter-add \"{name}\").\n# TYPE {family} counter"
            );
            last.clone_from(&family);
        }
        let _ = writeln!(
            out,
            "{family}{{policy=\"{}\",proxy=\"{}\"{labels}}} {n}",
            esc(policy),
            esc(proxy)
        );
    }
    for ((name, policy, proxy, labels), h) in &m.policy_histograms {
        let family = format!("weir_policy_{name}");
        if family != last {
            let _ = writeln!(
                out,
                "# HELP {family} Observed by policies (metrics.observe \"{name}\").\n# TYPE {family} histogram"
            );
            last.clone_from(&family);
        }
        let base = format!(
            "policy=\"{}\",proxy=\"{}\"{labels}",
            esc(policy),
            esc(proxy)
        );
        for (bound, count) in BUCKETS.iter().zip(&h.counts) {
            let _ = writeln!(out, "{family}_bucket{{{base},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{family}_bucket{{{base},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{family}_sum{{{base}}} {}", h.sum);
        let _ = writeln!(out, "{family}_count{{{base}}} {}", h.count);
    }
}

/// Escapes a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16, latency_ms: u64) -> UsageRecord {
        UsageRecord {
            timestamp_ms: 0,
            request_id: "r".into(),
            proxy: "p\"x".into(),
            provider: "mock".into(),
            endpoint: "chat/completions".into(),
            tool: None,
            consumer: Some("alice".into()),
            model: Some("m".into()),
            stream: false,
            status,
            outcome: "success",
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
            cached_prompt_tokens: 0,
            latency_ms,
            time_to_first_token_ms: None,
            upstream_latency_ms: Some(latency_ms / 2),
            error: (status >= 500).then_some("upstream_timeout"),
            cost_usd: None,
            attempts: Vec::new(),
            flags: Vec::new(),
            cache: None,
        }
    }

    #[test]
    fn renders_policy_metrics_with_policy_and_proxy_labels() {
        use weir_runtime::PolicyMetrics;
        let m = Metrics::default();
        m.counter_add(
            "cache",
            "faq",
            "cache_hits",
            2,
            &[("layer".into(), "exact".into())],
        );
        m.counter_add(
            "cache",
            "faq",
            "cache_hits",
            1,
            &[("layer".into(), "exact".into())],
        );
        m.observe("cache", "faq", "lookup_seconds", 0.004, &[]);
        let text = m.render();
        assert!(
            text.contains("# TYPE weir_policy_cache_hits_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "weir_policy_cache_hits_total{policy=\"cache\",proxy=\"faq\",layer=\"exact\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE weir_policy_lookup_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(
                "weir_policy_lookup_seconds_bucket{policy=\"cache\",proxy=\"faq\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.record(&record(200, 3));
        m.record(&record(200, 700));
        m.record(&record(504, 10));
        m.denial("p", "auth", "invalid_api_key");
        let text = m.render();
        assert!(text.contains(r#"weir_requests_total{proxy="p\"x",endpoint="chat/completions",status="200",outcome="success"} 2"#), "{text}");
        assert!(
            text.contains(r#"weir_upstream_duration_seconds_bucket{provider="mock",le="0.001"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_upstream_duration_seconds_count{provider="mock"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_errors_total{proxy="p\"x",type="upstream_timeout"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_request_duration_seconds_bucket{proxy="p\"x",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_request_duration_seconds_bucket{proxy="p\"x",le="1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_request_duration_seconds_count{proxy="p\"x"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"weir_tokens_total{provider="mock",model="m",consumer="alice",type="completion"} 12"#), "{text}");
        assert!(
            text.contains(
                r#"weir_policy_denials_total{proxy="p",policy="auth",code="invalid_api_key"} 1"#
            ),
            "{text}"
        );
    }
}
