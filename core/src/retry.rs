//! When the attempt loop tries a target again or moves on: the proxy's retry settings, the
//! backoff schedule (exponential, with jitter) and the provider's `retry-after` hints.

use serde::{Deserialize, Serialize};

use crate::route::Endpoint;

/// Statuses after which a target is retried or the next one tried, unless configured
/// otherwise: nothing was billed, and "not now" is what they mean.
pub const DEFAULT_RETRY_STATUSES: [u16; 6] = [429, 500, 502, 503, 504, 529];

/// A proxy's retry settings. A failed attempt (connection failure, timeout before the response
/// headers, or a status in `on-status`) is retried on the same target up to `attempts` times,
/// then the next target is tried; nothing is retried once the client got a byte of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retry {
    /// Further attempts on the same target after a failed one (0: none, only failover).
    #[cfg_attr(feature = "schemars", schemars(range(max = 10)))]
    pub attempts: u32,
    /// The first wait; it doubles with each retry of a target, with jitter.
    pub backoff_ms: u64,
    /// The longest wait: a `retry-after` longer than this moves on to the next target.
    pub max_backoff_ms: u64,
    /// All attempts and waits of a request together (0: no limit): no attempt starts after it,
    /// and an attempt's timeout is cut to what is left.
    pub budget_ms: u64,
    /// The statuses that count as a failed attempt.
    pub on_status: Vec<u16>,
    /// Endpoints (`embeddings`, `completions`, `chat/completions`, which covers Anthropic
    /// `messages` too) on which an attempt whose non-streamed answer broke off after the
    /// upstream accepted it (and may have billed it) is retried. None by default: such an
    /// attempt is not retried, since the provider may charge twice.
    pub after_accepted: Vec<String>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 0,
            backoff_ms: 250,
            max_backoff_ms: 10_000,
            budget_ms: 0,
            on_status: DEFAULT_RETRY_STATUSES.to_vec(),
            after_accepted: Vec::new(),
        }
    }
}

impl Retry {
    /// Checks the settings; the error names the field (below `retry`).
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.attempts > 10 {
            return Err(("attempts".into(), "at most 10 retries per target".into()));
        }
        if self.backoff_ms == 0 || self.backoff_ms > self.max_backoff_ms {
            return Err((
                "backoff-ms".into(),
                format!(
                    "must be at least 1 and at most max-backoff-ms ({})",
                    self.max_backoff_ms
                ),
            ));
        }
        for (i, s) in self.on_status.iter().enumerate() {
            if !(*s == 408 || *s == 409 || *s == 429 || (500..600).contains(s)) {
                return Err((
                    format!("on-status[{i}]"),
                    format!(
                        "{s} is not a status worth retrying: use 408, 409, 429 or a 5xx (a 4xx is the request's fault and fails the same way again)"
                    ),
                ));
            }
        }
        for (i, e) in self.after_accepted.iter().enumerate() {
            if !matches!(
                Endpoint::from_name(e),
                Some(Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings)
            ) {
                return Err((
                    format!("after-accepted[{i}]"),
                    format!(
                        "`{e}` is not an endpoint that can be retried: use `chat/completions` (which covers Anthropic `messages` too), `completions` or `embeddings`"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether a non-streamed answer on `endpoint` that broke off is retried.
    pub(crate) fn after_accepted(&self, endpoint: Endpoint) -> bool {
        self.after_accepted
            .iter()
            .any(|e| e == endpoint.upstream().name())
    }

    /// The wait before retry number `retry` (0 for the first) of a request: `backoff-ms`
    /// doubled per retry, at most `max-backoff-ms`, then drawn between half of it and all of it
    /// ("equal jitter": replicas that failed together do not come back together). `seed`
    /// varies per request and retry.
    pub fn backoff(&self, retry: u32, seed: u64) -> u64 {
        let full = self
            .backoff_ms
            .saturating_mul(1u64 << retry.min(32))
            .min(self.max_backoff_ms);
        let half = full / 2;
        half + seed % (full - half + 1)
    }
}

/// The wait a provider asked for: `retry-after-ms` (OpenAI, Azure), else `retry-after` in
/// seconds (an HTTP date is not understood and gives `None`: the backoff applies).
pub fn retry_after(headers: &[(String, String)]) -> Option<u64> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(ms.ceil() as u64);
    }
    let seconds = get("retry-after")?.parse::<f64>().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).ceil() as u64)
}

/// A seed for the jitter of one retry of one request (FNV-1a of the request id and the
/// retry's number).
pub(crate) fn seed(request_id: &str, retry: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes().chain((retry as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let r = Retry {
            backoff_ms: 100,
            max_backoff_ms: 1000,
            ..Retry::default()
        };
        for (retry, full) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (40, 1000),
        ] {
            let waits: Vec<u64> = (0..500).map(|s| r.backoff(retry, seed("req", s))).collect();
            assert!(
                waits.iter().all(|w| (full / 2..=full).contains(w)),
                "retry {retry}: {waits:?}"
            );
            // Jitter: the waits are spread over the range, not one value.
            let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            assert!(hi - lo > full / 4, "retry {retry}: {lo}..{hi}");
        }
    }

    #[test]
    fn retry_after_prefers_milliseconds_and_ignores_dates() {
        assert_eq!(retry_after(&h(&[("retry-after-ms", "1500")])), Some(1500));
        assert_eq!(
            retry_after(&h(&[("retry-after", "2"), ("retry-after-ms", "20.5")])),
            Some(21)
        );
        assert_eq!(retry_after(&h(&[("Retry-After", "3")])), Some(3000));
        assert_eq!(retry_after(&h(&[("retry-after", "0.25")])), Some(250));
        assert_eq!(
            retry_after(&h(&[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")])),
            None
        );
        assert_eq!(retry_after(&h(&[("retry-after", "-1")])), None);
        assert_eq!(retry_after(&h(&[])), None);
    }

    #[test]
    fn settings_errors_name_the_field() {
        let field = |r: Retry| r.check().err().map(|(f, _)| f);
        assert_eq!(field(Retry::default()), None);
        assert_eq!(
            field(Retry {
                attempts: 11,
                ..Retry::default()
            })
            .as_deref(),
            Some("attempts")
        );
        assert_eq!(
            field(Retry {
                backoff_ms: 20_000,
                ..Retry::default()
            })
            .as_deref(),
            Some("backoff-ms")
        );
        assert_eq!(
            field(Retry {
                on_status: vec![503, 400],
                ..Retry::default()
            })
            .as_deref(),
            Some("on-status[1]")
        );
        assert_eq!(
            field(Retry {
                after_accepted: vec!["embeddings".into(), "models".into()],
                ..Retry::default()
            })
            .as_deref(),
            Some("after-accepted[1]")
        );
    }
}
