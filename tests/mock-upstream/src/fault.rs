//! Per-request fault injection.
//!
//! Faults come from the `x-mock-fault` request header and/or from the requested model name
//! (`"model": "mock-fault:<spec>"`), because gateways may not forward custom headers. A spec is a
//! comma-separated list, e.g. `latency-50,cut-after-2`:
//!
//! | fault          | effect                                                                   |
//! | -------------- | ------------------------------------------------------------------------ |
//! | `status-NNN`   | answer with that 4xx/5xx status and an OpenAI error body (429 and 503    |
//! |                | carry `retry-after: 1`; on the native paths, Anthropic's 429)            |
//! | `reset`        | close the connection without any response                                |
//! | `cut-after-N`  | streams: send N content chunks, then abort the body (no usage, no DONE); |
//! |                | non-streams: send half of the body, then abort                           |
//! | `latency-MS`   | sleep MS milliseconds before answering                                   |
//! | `stream-error-after-N` | native streams: the provider's error event after N frames        |
//! | `first-N`      | the other faults of the spec hit only its first N requests; later ones   |
//! |                | with the same spec are served normally (retries see a recovery)          |
//! | `key-WORD`     | no effect but to make the spec, and so its `first-N` count, distinct     |

use std::time::Duration;

/// Request header carrying a fault spec.
pub const FAULT_HEADER: &str = "x-mock-fault";
/// Request header carrying an extra latency in milliseconds.
pub const LATENCY_HEADER: &str = "x-mock-latency-ms";
/// Model-name prefix carrying a fault spec: `"model": "mock-fault:status-429"`.
pub const FAULT_MODEL_PREFIX: &str = "mock-fault:";

/// The faults requested for one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Answer with this error status.
    pub status: Option<u16>,
    /// Drop the connection without a response.
    pub reset: bool,
    /// Abort the body after this many content chunks.
    pub cut_after: Option<u64>,
    /// Extra latency before answering.
    pub latency: Duration,
    /// Native streams: the provider's in-stream error event after this many frames.
    pub stream_error_after: Option<u64>,
    /// The faults hit only the first N requests carrying the same specs.
    pub first: Option<u64>,
    /// The specs read, which key the `first-N` count.
    pub specs: String,
}

impl Faults {
    /// Adds the faults of a comma-separated spec; the error names the offending item.
    pub(crate) fn add_spec(&mut self, spec: &str) -> Result<(), String> {
        self.specs.push_str(spec);
        self.specs.push(';');
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "reset" {
                self.reset = true;
            } else if let Some(code) = item.strip_prefix("status-") {
                match code.parse::<u16>() {
                    Ok(code) if (400..=599).contains(&code) => self.status = Some(code),
                    _ => {
                        return Err(format!(
                            "invalid mock fault `{item}`: status must be 400..=599"
                        ));
                    }
                }
            } else if let Some(n) = item.strip_prefix("cut-after-") {
                let n = n
                    .parse::<u64>()
                    .map_err(|_| format!("invalid mock fault `{item}`"))?;
                self.cut_after = Some(n);
            } else if let Some(n) = item.strip_prefix("stream-error-after-") {
                let n = n
                    .parse::<u64>()
                    .map_err(|_| format!("invalid mock fault `{item}`"))?;
                self.stream_error_after = Some(n);
            } else if let Some(n) = item.strip_prefix("first-") {
                let n = n
                    .parse::<u64>()
                    .map_err(|_| format!("invalid mock fault `{item}`"))?;
                self.first = Some(n);
            } else if item.strip_prefix("key-").is_some_and(|k| !k.is_empty()) {
            } else if let Some(ms) = item.strip_prefix("latency-") {
                let ms = ms
                    .parse::<u64>()
                    .map_err(|_| format!("invalid mock fault `{item}`"))?;
                self.latency += Duration::from_millis(ms);
            } else {
                return Err(format!("unknown mock fault `{item}`"));
            }
        }
        Ok(())
    }
}

impl Faults {
    /// Counts a `first-N` spec's request in `counts` and lifts its faults after the N-th.
    pub(crate) fn count_first(
        &mut self,
        counts: &std::sync::Mutex<std::collections::HashMap<String, u64>>,
    ) {
        let Some(n) = self.first else { return };
        let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
        let seen = counts.entry(std::mem::take(&mut self.specs)).or_default();
        *seen += 1;
        if *seen > n {
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_combined_specs() {
        let mut f = Faults::default();
        assert_eq!(
            f.add_spec("latency-50, cut-after-2,status-503,reset"),
            Ok(())
        );
        assert_eq!(
            f,
            Faults {
                status: Some(503),
                reset: true,
                cut_after: Some(2),
                latency: Duration::from_millis(50),
                stream_error_after: None,
                first: None,
                specs: "latency-50, cut-after-2,status-503,reset;".into(),
            }
        );
        assert!(f.add_spec("status-200").is_err());
        assert!(f.add_spec("explode").is_err());
        assert!(f.add_spec("cut-after-x").is_err());
        assert!(f.add_spec("key-").is_err());
    }

    #[test]
    fn first_n_lifts_the_faults_after_n_requests_of_the_same_spec() {
        let counts = std::sync::Mutex::default();
        let hit = |spec: &str| {
            let mut f = Faults::default();
            f.add_spec(spec).unwrap();
            f.count_first(&counts);
            f.status
        };
        assert_eq!(hit("first-2,status-503,key-a"), Some(503));
        assert_eq!(hit("first-1,status-503,key-b"), Some(503));
        assert_eq!(hit("first-2,status-503,key-a"), Some(503));
        assert_eq!(hit("first-2,status-503,key-a"), None);
        assert_eq!(hit("first-1,status-503,key-b"), None);
        assert_eq!(hit("status-503"), Some(503));
    }
}
