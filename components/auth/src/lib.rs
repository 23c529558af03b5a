//! `auth`: API-key (virtual key) and JWT authentication.
//!
//! Clients send their key as `Authorization: Bearer <key>` (OpenAI SDKs) or `x-api-key: <key>`
//! (Anthropic SDKs). The configuration holds only the SHA-256 of each key, never the key itself
//! (`weir hash-key` prints it); the policy hashes what the client sent, finds the consumer, sets
//! it on the context, and removes the key from the request so it never reaches the upstream.
//!
//! ```json
//! { "consumers": [ { "id": "team-a", "key-sha256": "9f86d0…" } ] }
//! ```
//!
//! With `jwt`, a bearer token that is a JWT is checked as one instead (see [`jwt`]): signature
//! by a key of the JWKS, `iss`, `aud`, `exp`, `nbf`; the consumer is a claim (`sub`).
//!
//! ```json
//! { "jwt": { "jwks-url": "https://idp.example.com/.well-known/jwks.json",
//!            "issuer": "https://idp.example.com/", "audience": "weir" } }
//! ```

pub mod jwt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use weir_policy_sdk::{ConfigError, Context, Denial, Edits, Message, Phase, Policy, Verdict};

/// The policy's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The consumers allowed through, with the SHA-256 (hex) of their key.
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// Accept JWT bearer tokens.
    #[serde(default)]
    pub jwt: Option<jwt::JwtConfig>,
    /// Also accept the key in `x-api-key` (Anthropic style). Default true.
    #[serde(default = "yes")]
    pub allow_x_api_key: bool,
}

/// One consumer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Consumer {
    /// The consumer identity set on the context (used by limits, usage records, caches).
    pub id: String,
    /// Lower-case hex SHA-256 of the consumer's API key.
    pub key_sha256: String,
}

fn yes() -> bool {
    true
}

/// The auth policy.
#[derive(Debug)]
pub struct Auth;

impl Policy for Auth {
    type Config = Config;
    const NAME: &'static str = "auth";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const PHASES: &'static [Phase] = &[Phase::Request];

    fn check(config: &Config) -> Result<(), ConfigError> {
        check_config(config)
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        let presented = request
            .header("authorization")
            .and_then(|v| bearer(&v).map(str::to_owned))
            .or_else(|| {
                config
                    .allow_x_api_key
                    .then(|| request.header("x-api-key"))
                    .flatten()
            });
        let Some(key) = presented.filter(|k| !k.is_empty()) else {
            return Verdict::deny(
                401,
                "missing_api_key",
                "No API key provided. Send it as `Authorization: Bearer <key>`.",
            );
        };
        let through = |consumer: &str| {
            cx.set_consumer(consumer);
            Verdict::edit(
                Edits::none()
                    .remove_header("authorization")
                    .remove_header("x-api-key"),
            )
        };
        if let Some(jwt) = &config.jwt
            && jwt::looks_like_jwt(&key)
        {
            return match jwt::authenticate(jwt, &key, cx.received_at_ms()) {
                Ok(consumer) => through(&consumer),
                Err(jwt::Refusal::Invalid(message)) => Verdict::Deny(
                    Denial {
                        status: 401,
                        code: "invalid_token".into(),
                        message,
                        headers: Vec::new(),
                    }
                    .with_header("www-authenticate", "Bearer error=\"invalid_token\""),
                ),
                Err(jwt::Refusal::KeysUnavailable(message)) => {
                    Verdict::deny(503, "jwks_unavailable", message)
                }
            };
        }
        match find_consumer(config, &key) {
            Some(consumer) => through(&consumer.id),
            None => Verdict::deny(401, "invalid_api_key", "Incorrect API key provided."),
        }
    }
}

weir_policy_sdk::export_policy!(Auth);
weir_policy_sdk::config_schema!("../config.schema.json");

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Lower-case hex SHA-256 of a key.
pub fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The consumer whose key hash matches `key`.
pub fn find_consumer<'c>(config: &'c Config, key: &str) -> Option<&'c Consumer> {
    let hash = key_hash(key);
    config.consumers.iter().find(|c| c.key_sha256 == hash)
}

/// Semantic checks beyond the JSON shape.
pub fn check_config(config: &Config) -> Result<(), ConfigError> {
    if let Some(jwt) = &config.jwt {
        jwt::check_config(jwt)?;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in config.consumers.iter().enumerate() {
        if c.id.is_empty() {
            return Err(ConfigError::at(
                format!("consumers[{i}].id"),
                "must not be empty",
            ));
        }
        let valid = c.key_sha256.len() == 64
            && c.key_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(ConfigError::at(
                format!("consumers[{i}].key-sha256"),
                "must be the lower-case hex SHA-256 of the key (64 characters); \
                 run `weir hash-key <key>` to compute it. Never put the plain key in configuration.",
            ));
        }
        if !seen.insert(c.key_sha256.as_str()) {
            return Err(ConfigError::at(
                format!("consumers[{i}].key-sha256"),
                "the same key is already assigned to another consumer",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, ConfigError> {
        weir_policy_sdk::parse_config::<Auth>(json)
    }

    #[test]
    fn hashes_like_sha256sum() {
        // printf 'test' | sha256sum
        assert_eq!(
            key_hash("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn parses_bearer() {
        assert_eq!(bearer("Bearer sk-1"), Some("sk-1"));
        assert_eq!(bearer("bearer   sk-1 "), Some("sk-1"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("sk-1"), None);
    }

    #[test]
    fn finds_consumer_by_hash() {
        let c = config(&format!(
            r#"{{"consumers":[{{"id":"a","key-sha256":"{}"}},{{"id":"b","key-sha256":"{}"}}]}}"#,
            key_hash("ka"),
            key_hash("kb")
        ))
        .unwrap();
        assert_eq!(find_consumer(&c, "kb").map(|c| c.id.as_str()), Some("b"));
        assert!(find_consumer(&c, "kc").is_none());
    }

    #[test]
    fn rejects_plain_keys_with_field_path() {
        let e = config(r#"{"consumers":[{"id":"a","key-sha256":"sk-plain"}]}"#).unwrap_err();
        assert_eq!(e.path, "consumers[0].key-sha256");
        assert!(e.message.contains("weir hash-key"));
    }

    #[test]
    fn rejects_unknown_fields_with_path() {
        let e = config(r#"{"consumers":[{"id":"a","key":"x"}]}"#).unwrap_err();
        assert_eq!(e.path, "consumers[0].key");
        assert!(e.message.contains("unknown field `key`"), "{}", e.message);
    }
}
