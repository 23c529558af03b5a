//! One admitted call, from the chain's creation to its usage record: [`Call::finish`] is the
//! one place where on-complete runs and usage is recorded, exactly once per request.

use std::sync::Arc;

use crate::chain::{self, Chain};
use crate::route::{Endpoint, RouteInfo, Upstream, Wire};
use crate::types::*;
use crate::{GatewayError, Platform};

/// What the gateway tracks about one admitted call until its usage is recorded.
#[derive(Debug)]
pub struct Call<P> {
    pub platform: P,
    pub route: RouteInfo,
    /// The endpoint's name in usage records (`chat/completions`, or an MCP method).
    pub endpoint_name: String,
    /// The LLM endpoint (`None` on MCP routes).
    pub endpoint: Option<Endpoint>,
    pub wire: Wire,
    pub request_id: String,
    /// [`Platform::monotonic_ms`] when the request arrived.
    pub started_ms: u64,
    /// The LLM view as the upstream got it (after the policies' edits).
    pub llm: weir_llm::LlmRequestInfo,
    /// The upstream that answered, or the last one tried.
    pub upstream: Option<Arc<Upstream>>,
    /// Every upstream attempt.
    pub attempts: Vec<Attempt>,
    /// Milliseconds from sending the request upstream to its response headers (last attempt).
    pub upstream_ms: Option<u64>,
    /// MCP `tools/call`: the tool.
    pub tool: Option<String>,
}

/// How an admitted request ends, before on-complete and the usage record.
#[derive(Debug, Clone, Default)]
pub struct Settlement {
    pub usage: Option<weir_llm::Usage>,
    pub model: Option<String>,
    pub ttft_ms: Option<u64>,
    /// The usage a policy's answer reports (a cache hit: what the stored answer cost when it
    /// was made), priced as saved in the usage record.
    pub saved: Option<weir_llm::Usage>,
}

impl<P: Platform> Call<P> {
    pub(crate) fn latency_ms(&self) -> u64 {
        self.platform.monotonic_ms().saturating_sub(self.started_ms)
    }

    /// The end of a request that failed with `err`.
    pub(crate) fn end_of(err: &GatewayError) -> End {
        End::failed(err.status(), err.outcome(), err.code())
    }

    /// Logs an error with its detail (never sent to the client).
    pub(crate) fn log_error(&self, err: &GatewayError) {
        match err {
            GatewayError::Policy(e) => self.platform.warn(&self.request_id, &format!("{e}")),
            GatewayError::Upstream {
                detail: Some(detail),
                message,
                ..
            } => self
                .platform
                .warn(&self.request_id, &format!("{message} Cause: {detail}")),
            _ => {}
        }
    }

    /// Runs on-complete and writes the usage record: exactly once per admitted request.
    pub async fn finish<C: Chain>(&self, chain: &mut C, end: End, settlement: Settlement) {
        let latency_ms = self.latency_ms();
        let Settlement {
            usage,
            model,
            ttft_ms,
            saved,
        } = settlement;
        if chain.has_phase(Phase::Complete) {
            let info = CompletionInfo {
                status: end.status,
                outcome: end.outcome,
                error: end.error,
                model: model.clone(),
                usage,
                latency_ms,
                attempts: self.attempts.clone(),
            };
            for e in chain::complete_phase(chain, &info).await {
                self.platform.warn(
                    &self.request_id,
                    &format!("policy failed in on-complete: {e}"),
                );
            }
        }
        let u = usage.unwrap_or_default();
        let model = model.or_else(|| self.llm.model.clone());
        let cost_usd = match (&usage, &model, &self.upstream) {
            (Some(usage), Some(m), Some(up)) if end.outcome != Outcome::Answered => {
                up.prices.cost(&up.name, m, usage)
            }
            _ => None,
        };
        let cache = chain
            .attribute(crate::types::CACHE_ATTRIBUTE)
            .and_then(|v| CacheRecord::parse(&v))
            .map(|mut c| {
                if end.outcome == Outcome::Answered
                    && c.result == "hit"
                    && let Some(saved) = &saved
                {
                    c.saved_tokens = Some(saved.total_tokens);
                    c.saved_cost_usd = model.as_ref().and_then(|m| {
                        let up = &self.route.upstream;
                        up.prices.cost(&up.name, m, saved)
                    });
                }
                c
            });
        self.platform.record(UsageRecord {
            timestamp_ms: self.platform.now_ms(),
            request_id: self.request_id.clone(),
            proxy: self.route.name.clone(),
            provider: self
                .upstream
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            endpoint: self.endpoint_name.clone(),
            tool: self.tool.clone(),
            consumer: chain.consumer(),
            model,
            stream: self.llm.stream,
            status: end.status,
            outcome: end.outcome.name(),
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_prompt_tokens: u.cached_prompt_tokens,
            latency_ms,
            time_to_first_token_ms: ttft_ms,
            upstream_latency_ms: self.upstream_ms,
            error: end.error,
            cost_usd,
            attempts: self.attempts.clone(),
            flags: chain
                .attribute(crate::types::FLAGS_ATTRIBUTE)
                .map(|v| crate::types::parse_flags(&v))
                .unwrap_or_default(),
            cache,
        });
    }
}
