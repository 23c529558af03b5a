//! The embeddings call policies make through `weir:policy/embeddings`: the request body sent to
//! a provider's OpenAI-compatible `/embeddings` endpoint, and its answer read back. One
//! implementation for `weir` and the edge runtime.
//!
//! ```
//! use weir_llm::embeddings::{self, Failure};
//! let body = embeddings::request_body("m", &["a".into()]);
//! assert!(String::from_utf8(body).unwrap().contains("\"encoding_format\":\"float\""));
//! let answer = br#"{"data":[{"index":0,"embedding":[0.5,0.25]}]}"#;
//! assert_eq!(embeddings::read_answer("p", 200, answer, 1).unwrap(), vec![vec![0.5, 0.25]]);
//! assert!(matches!(embeddings::read_answer("p", 400, br#"{"error":{"message":"no"}}"#, 1), Err(Failure::Invalid(_))));
//! ```

use serde_json::{Value, json};

use crate::ProviderKind;

/// Most texts one call may embed.
pub const MAX_TEXTS: usize = 256;

/// Why embeddings could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No such provider, or no embeddings endpoint.
    NotFound(String),
    /// The provider failed or answered something unreadable.
    Unavailable(String),
    /// The provider refused the input.
    Invalid(String),
}

/// Whether a provider kind has an OpenAI-compatible `/embeddings` endpoint at its base URL.
pub fn supported(kind: ProviderKind) -> bool {
    matches!(kind, ProviderKind::Openai | ProviderKind::Mistral)
}

/// The checks before a call: the provider's kind and the number of texts.
pub fn check(provider: &str, kind: ProviderKind, texts: usize) -> Result<(), Failure> {
    if !supported(kind) {
        return Err(Failure::NotFound(format!(
            "provider `{provider}` ({}) has no OpenAI-compatible embeddings endpoint",
            kind.name()
        )));
    }
    if texts == 0 || texts > MAX_TEXTS {
        return Err(Failure::Invalid(format!(
            "embed 1 to {MAX_TEXTS} texts per call"
        )));
    }
    Ok(())
}

/// The JSON body of the request (vectors as floats).
pub fn request_body(model: &str, texts: &[String]) -> Vec<u8> {
    json!({"model": model, "input": texts, "encoding_format": "float"})
        .to_string()
        .into_bytes()
}

/// The vectors of an answer, one per text, in the order of the texts.
pub fn read_answer(
    provider: &str,
    status: u16,
    body: &[u8],
    texts: usize,
) -> Result<Vec<Vec<f32>>, Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        Failure::Unavailable(format!(
            "provider `{provider}` answered {status} without JSON"
        ))
    })?;
    if !(200..300).contains(&status) {
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        let e = format!("provider `{provider}` answered {status}: {message}");
        return Err(if (400..500).contains(&status) && status != 429 {
            Failure::Invalid(e)
        } else {
            Failure::Unavailable(e)
        });
    }
    let data = value
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::Unavailable(format!("provider `{provider}`: no `data`")))?;
    let mut out = vec![Vec::new(); data.len()];
    for (k, item) in data.iter().enumerate() {
        let index = item
            .get("index")
            .and_then(Value::as_u64)
            .map_or(k, |i| i as usize);
        if let Some(slot) = out.get_mut(index) {
            *slot = item
                .get("embedding")
                .and_then(Value::as_array)
                .map(|xs| {
                    xs.iter()
                        .filter_map(Value::as_f64)
                        .map(|x| x as f32)
                        .collect()
                })
                .unwrap_or_default();
        }
    }
    if out.len() != texts || out.iter().any(Vec::is_empty) {
        return Err(Failure::Unavailable(format!(
            "provider `{provider}` returned {} embeddings for {texts} texts",
            out.len()
        )));
    }
    Ok(out)
}
