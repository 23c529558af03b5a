//! `/v1/embeddings`: request validation and deterministic, unit-length vectors derived from a
//! hash of each input (FNV-1a seeding splitmix64), as floats or base64 little-endian `f32`s.
//!
//! The model [`WORDS_MODEL`] embeds a text as the sum of one such vector per word (lower case,
//! without punctuation and a few function words), 256 dimensions unless asked otherwise: texts
//! that share words are close, so a rewording that keeps the words ("How can I reset my
//! password?" / "how do i reset my password") is a near neighbour, as with a real model.

use crate::protocol::{ApiError, count_text_tokens, missing, required_str};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// Embedding dimensions when the request does not set `dimensions`.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 8;
/// Upper bound on `dimensions`.
pub const MAX_EMBEDDING_DIMENSIONS: usize = 4096;
/// The bag-of-words model (see the module documentation).
pub const WORDS_MODEL: &str = "mock-words";
/// Its dimensions when the request does not set `dimensions`.
const WORDS_DIMENSIONS: usize = 256;
/// Words the bag-of-words model leaves out.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "do", "does", "i", "can", "how", "what", "is", "are", "to", "of", "my", "me",
    "you", "please", "tell",
];

/// Bag-of-words embedding: the normalised sum of one vector per content word.
pub fn embedding_for_words(text: &str, dimensions: usize) -> Vec<f32> {
    let mut sum = vec![0f32; dimensions];
    let lower = text.to_lowercase();
    let words = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !FUNCTION_WORDS.contains(w));
    let mut any = false;
    for word in words {
        any = true;
        for (s, x) in sum.iter_mut().zip(embedding_for_text(word, dimensions)) {
            *s += x;
        }
    }
    if !any {
        return embedding_for_text(text, dimensions);
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    sum.iter_mut()
        .for_each(|x| *x /= norm.max(f32::MIN_POSITIVE));
    sum
}

/// Deterministic, unit-length embedding of `dimensions` values for one text input.
pub fn embedding_for_text(text: &str, dimensions: usize) -> Vec<f32> {
    embedding_from_seed(fnv1a(0xcbf2_9ce4_8422_2325, text.as_bytes()), dimensions)
}

fn embedding_for_tokens(tokens: &[Value], dimensions: usize) -> Vec<f32> {
    let mut h = 0x6c62_272e_07bb_0142;
    for t in tokens {
        h = fnv1a(h, &t.as_u64().unwrap_or(u64::MAX).to_le_bytes());
    }
    embedding_from_seed(h, dimensions)
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn embedding_from_seed(mut state: u64, dimensions: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The `/v1/embeddings` response body and its billed prompt tokens.
pub(crate) fn embeddings_body(req: &Value) -> Result<(Bytes, u64), ApiError> {
    let model = required_str(req, "model")?;
    let dimensions = match req.get("dimensions") {
        None | Some(Value::Null) if model == WORDS_MODEL => WORDS_DIMENSIONS,
        None | Some(Value::Null) => DEFAULT_EMBEDDING_DIMENSIONS,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= MAX_EMBEDDING_DIMENSIONS as u64 => n as usize,
            _ => {
                return Err(ApiError::invalid(
                    format!(
                        "Invalid 'dimensions': expected an integer in 1..={MAX_EMBEDDING_DIMENSIONS}."
                    ),
                    Some("dimensions"),
                    Some("invalid_value"),
                ));
            }
        },
    };
    let base64 = match req.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid 'encoding_format'.",
                Some("encoding_format"),
                None,
            ));
        }
    };
    let invalid_input = || {
        ApiError::invalid(
            "'$.input' is invalid. Please check the API reference.",
            Some("input"),
            None,
        )
    };
    // Each input is a text or a token array; yields (embedding, tokens).
    let embed_one = |v: &Value| -> Result<(Vec<f32>, u64), ApiError> {
        match v {
            Value::String(s) if !s.is_empty() && model == WORDS_MODEL => {
                Ok((embedding_for_words(s, dimensions), count_text_tokens(s)))
            }
            Value::String(s) if !s.is_empty() => {
                Ok((embedding_for_text(s, dimensions), count_text_tokens(s)))
            }
            Value::Array(t) if !t.is_empty() && t.iter().all(Value::is_u64) => {
                Ok((embedding_for_tokens(t, dimensions), t.len() as u64))
            }
            _ => Err(invalid_input()),
        }
    };
    let embedded: Vec<(Vec<f32>, u64)> = match req.get("input") {
        None | Some(Value::Null) => return Err(missing("input")),
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            vec![embed_one(&Value::Array(items.clone()))?]
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(embed_one).collect::<Result<_, _>>()?
        }
        Some(v @ Value::String(_)) => vec![embed_one(v)?],
        Some(_) => return Err(invalid_input()),
    };

    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item>,
        model: &'a str,
        usage: EmbeddingUsage,
    }
    #[derive(Serialize)]
    struct Item {
        object: &'static str,
        index: usize,
        embedding: Value,
    }
    #[derive(Serialize)]
    struct EmbeddingUsage {
        prompt_tokens: u64,
        total_tokens: u64,
    }
    let tokens: u64 = embedded.iter().map(|(_, t)| t).sum();
    let data = embedded
        .into_iter()
        .enumerate()
        .map(|(index, (v, _))| {
            let embedding = if base64 {
                let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64_encode(&raw))
            } else {
                Value::from(v)
            };
            Item {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let body = List {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    Ok((
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .unwrap_or_default(),
        tokens,
    ))
}

fn base64_encode(raw: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_and_normalised() {
        let a = embedding_for_text("hi", 16);
        assert_eq!(a, embedding_for_text("hi", 16));
        assert_ne!(a, embedding_for_text("ho", 16));
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let q = embedding_for_words("How can I reset my password?", 256);
        let close = embedding_for_words("how do i reset my password", 256);
        let far = embedding_for_words("What is the capital of France?", 256);
        assert!(cos(&q, &close) > 0.99, "{}", cos(&q, &close));
        assert!(cos(&q, &far) < 0.5, "{}", cos(&q, &far));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
