//! Token usage in OpenAI-format responses.

use serde::Deserialize;

/// Token usage of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_prompt_tokens: u64,
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
}

/// What the gateway reads from a response body or one stream chunk, in a single parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `None` when absent or null.
    pub usage: Option<Usage>,
    pub model: Option<String>,
    /// The usage-only chunk OpenAI sends last when asked (`"choices": []` with `usage`):
    /// clients that did not ask for it must not receive it.
    pub usage_only: bool,
}

/// Reads usage, model and whether this is a usage-only chunk; all empty if `body` is not JSON.
pub fn summary(body: &[u8]) -> Summary {
    let Ok(w) = serde_json::from_slice::<WithUsage>(body) else {
        return Summary::default();
    };
    let usage = w.usage.map(|u| Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u
            .total_tokens
            .unwrap_or(u.prompt_tokens + u.completion_tokens),
        cached_prompt_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
    });
    Summary {
        usage_only: usage.is_some() && w.choices.is_some_and(|c| c.is_empty()),
        usage,
        model: w.model,
    }
}

/// Usage and model of a response body or of one stream chunk (`None` usage when absent/null).
pub fn from_json(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let s = summary(body);
    (s.usage, s.model)
}

/// True when a stream chunk is the usage-only chunk (see [`Summary::usage_only`]).
pub fn is_usage_only_chunk(data: &str) -> bool {
    summary(data.as_bytes()).usage_only
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_model() {
        let (u, m) = from_json(
            br#"{"model":"gpt","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":2}}}"#,
        );
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
                cached_prompt_tokens: 2
            })
        );
        assert_eq!(m.as_deref(), Some("gpt"));
        assert_eq!(from_json(br#"{"usage":null}"#).0, None);
        assert_eq!(from_json(b"not json").0, None);
        assert_eq!(
            from_json(br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#)
                .0
                .unwrap()
                .total_tokens,
            3
        );
    }

    #[test]
    fn spots_usage_only_chunks() {
        assert!(is_usage_only_chunk(
            r#"{"choices":[],"usage":{"total_tokens":1}}"#
        ));
        assert!(!is_usage_only_chunk(
            r#"{"choices":[{"delta":{}}],"usage":null}"#
        ));
        assert!(!is_usage_only_chunk("[DONE]"));
    }
}
