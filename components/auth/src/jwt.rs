//! JWT bearer tokens: RS256, ES256 and EdDSA (Ed25519) signatures, keys from a JWKS (inline or
//! fetched through `http-client` and cached in the key-value store), `iss`, `aud`, `exp` and
//! `nbf` checked with a leeway, the consumer taken from a claim.
//!
//! Never accepted: `alg: none`, HMAC algorithms (a public key is public: accepting `HS256` with
//! it as the secret would let anyone sign), a key whose type or `alg` does not match the header.
//! Errors name the failing check and never contain the token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;
use weir_policy_sdk::{ConfigError, http_client, kv};

/// `jwt` in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JwtConfig {
    /// The `iss` a token must carry (exact match), if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// An audience the token's `aud` (string or list) must contain, if set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Keys, inline (a JWKS document: `{"keys": [...]}`).
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Or where to fetch them (its host must be in the policy's `allow-hosts`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How long fetched keys are kept (seconds).
    #[serde(default = "default_cache_ttl")]
    pub jwks_cache_ttl_s: u64,
    /// An unknown `kid` fetches the keys again, at most once per this many seconds (for all
    /// instances; 0: every time).
    #[serde(default = "default_refetch")]
    pub jwks_refetch_interval_s: u64,
    /// Clock skew tolerated on `exp` and `nbf` (seconds).
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// The claim that names the consumer.
    #[serde(default = "default_claim")]
    pub consumer_claim: String,
    /// The algorithms accepted (of RS256, ES256, EdDSA).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Refuse tokens without `exp`.
    #[serde(default = "yes")]
    pub require_exp: bool,
}

fn default_cache_ttl() -> u64 {
    300
}
fn default_refetch() -> u64 {
    10
}
fn default_leeway() -> u64 {
    30
}
fn default_claim() -> String {
    "sub".into()
}
fn default_algorithms() -> Vec<String> {
    SUPPORTED.iter().map(|s| (*s).to_owned()).collect()
}
fn yes() -> bool {
    true
}

const SUPPORTED: &[&str] = &["RS256", "ES256", "EdDSA"];
const CACHE_KEY: &str = "jwt:jwks";
const REFETCH_KEY: &str = "jwt:refetch";

/// Why a token is refused, or why it could not be checked.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// 401: the token fails a check (the message names which).
    Invalid(String),
    /// 503: the keys could not be had.
    KeysUnavailable(String),
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::Invalid(message.into())
}

/// Whether `token` has the shape of a JWT (three base64url parts, a JSON header with `alg`).
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v.get("alg").is_some())
}

pub fn check_config(config: &JwtConfig) -> Result<(), ConfigError> {
    match (&config.jwks, &config.jwks_url) {
        (None, None) => {
            return Err(ConfigError::at(
                "jwt",
                "set `jwks` (inline keys) or `jwks-url` (where to fetch them)",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::at(
                "jwt.jwks-url",
                "set either `jwks` or `jwks-url`, not both",
            ));
        }
        (Some(jwks), None) => {
            let keys = parse_jwks(jwks).map_err(|m| ConfigError::at("jwt.jwks", m))?;
            if keys.is_empty() {
                return Err(ConfigError::at(
                    "jwt.jwks",
                    "no usable key (RSA, EC P-256 or Ed25519)",
                ));
            }
        }
        (None, Some(url)) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::at("jwt.jwks-url", "must be an http(s) URL"));
            }
        }
    }
    for (i, a) in config.algorithms.iter().enumerate() {
        if !SUPPORTED.contains(&a.as_str()) {
            return Err(ConfigError::at(
                format!("jwt.algorithms[{i}]"),
                format!(
                    "`{a}` is not supported (supported: RS256, ES256, EdDSA; HMAC and `none` never are)"
                ),
            ));
        }
    }
    if config.algorithms.is_empty() {
        return Err(ConfigError::at(
            "jwt.algorithms",
            "must name at least one algorithm",
        ));
    }
    if config.consumer_claim.is_empty() {
        return Err(ConfigError::at("jwt.consumer-claim", "must not be empty"));
    }
    Ok(())
}

/// A public key of the key set.
#[derive(Debug)]
struct Key {
    kid: Option<String>,
    alg: Option<String>,
    public: Public,
}

#[derive(Debug)]
enum Public {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Public {
    fn alg(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "RS256",
            Self::P256(_) => "ES256",
            Self::Ed25519(_) => "EdDSA",
        }
    }
}

fn b64(value: Option<&Value>, what: &str) -> Result<Vec<u8>, String> {
    let s = value
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{what}` missing"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("`{what}` is not base64url"))
}

/// The usable keys of a JWKS document (keys of other types or uses are skipped).
fn parse_jwks(doc: &Value) -> Result<Vec<Key>, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("a JWKS document is an object with a `keys` list")?;
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if k.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let kty = k.get("kty").and_then(Value::as_str).unwrap_or("");
        let crv = k.get("crv").and_then(Value::as_str).unwrap_or("");
        let public = match (kty, crv) {
            ("RSA", _) => {
                let n = b64(k.get("n"), "n").map_err(|m| format!("keys[{i}]: {m}"))?;
                let e = b64(k.get("e"), "e").map_err(|m| format!("keys[{i}]: {m}"))?;
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(&n),
                    rsa::BigUint::from_bytes_be(&e),
                )
                .map_err(|e| format!("keys[{i}]: not a usable RSA key: {e}"))?;
                Public::Rsa(key)
            }
            ("EC", "P-256") => {
                let x = b64(k.get("x"), "x").map_err(|m| format!("keys[{i}]: {m}"))?;
                let y = b64(k.get("y"), "y").map_err(|m| format!("keys[{i}]: {m}"))?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(format!("keys[{i}]: P-256 coordinates are 32 bytes"));
                }
                let point = p256::EncodedPoint::from_affine_coordinates(
                    p256::FieldBytes::from_slice(&x),
                    p256::FieldBytes::from_slice(&y),
                    false,
                );
                let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map_err(|_| format!("keys[{i}]: not a point of P-256"))?;
                Public::P256(key)
            }
            ("OKP", "Ed25519") => {
                let x = b64(k.get("x"), "x").map_err(|m| format!("keys[{i}]: {m}"))?;
                let bytes: [u8; 32] = x
                    .try_into()
                    .map_err(|_| format!("keys[{i}]: an Ed25519 key is 32 bytes"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| format!("keys[{i}]: not a usable Ed25519 key"))?;
                Public::Ed25519(key)
            }
            _ => continue,
        };
        out.push(Key {
            kid: k.get("kid").and_then(Value::as_str).map(str::to_owned),
            alg: k.get("alg").and_then(Value::as_str).map(str::to_owned),
            public,
        });
    }
    Ok(out)
}

fn verify(key: &Public, signed: &[u8], signature: &[u8]) -> bool {
    use rsa::signature::Verifier as _;
    match key {
        Public::Rsa(k) => {
            let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k.clone());
            rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|s| vk.verify(signed, &s).is_ok())
        }
        Public::P256(k) => p256::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|s| k.verify(signed, &s).is_ok()),
        Public::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|s| k.verify_strict(signed, &s).is_ok()),
    }
}

/// Where the keys come from.
trait KeySource {
    /// The key set (cached if possible).
    fn keys(&self) -> Result<Vec<Key>, Refusal>;
    /// The key set fetched again (an unknown `kid`); `None` when not allowed now.
    fn refetch(&self) -> Option<Result<Vec<Key>, Refusal>>;
}

struct Inline<'a>(&'a Value);

impl KeySource for Inline<'_> {
    fn keys(&self) -> Result<Vec<Key>, Refusal> {
        parse_jwks(self.0).map_err(Refusal::KeysUnavailable)
    }
    fn refetch(&self) -> Option<Result<Vec<Key>, Refusal>> {
        None
    }
}

struct Fetched<'a> {
    url: &'a str,
    ttl_ms: u64,
    refetch_ms: u64,
}

impl Fetched<'_> {
    fn fetch(&self) -> Result<Vec<Key>, Refusal> {
        let request = http_client::OutgoingRequest {
            method: "GET".into(),
            url: self.url.to_owned(),
            headers: vec![("accept".into(), "application/json".into())],
            body: None,
            timeout_ms: 3000,
        };
        let unavailable = |m: String| Refusal::KeysUnavailable(format!("JWKS `{}`: {m}", self.url));
        let response = http_client::send(&request).map_err(|e| {
            unavailable(match e {
                http_client::HttpError::Denied(m) => {
                    format!("{m} (add its host to this policy's allow-hosts)")
                }
                http_client::HttpError::Timeout => "no answer within 3 s".into(),
                http_client::HttpError::Failed(m) => m,
            })
        })?;
        if response.status != 200 {
            return Err(unavailable(format!("answered {}", response.status)));
        }
        let doc: Value = serde_json::from_slice(&response.body)
            .map_err(|e| unavailable(format!("not JSON: {e}")))?;
        let keys = parse_jwks(&doc).map_err(unavailable)?;
        // Cached for the next requests (every instance of this policy shares it); a store
        // that does not answer only costs a fetch per request.
        let _ = kv::set(CACHE_KEY, &response.body, Some(self.ttl_ms));
        Ok(keys)
    }
}

impl KeySource for Fetched<'_> {
    fn keys(&self) -> Result<Vec<Key>, Refusal> {
        if let Ok(Some(bytes)) = kv::get(CACHE_KEY)
            && let Ok(doc) = serde_json::from_slice::<Value>(&bytes)
            && let Ok(keys) = parse_jwks(&doc)
        {
            return Ok(keys);
        }
        self.fetch()
    }
    fn refetch(&self) -> Option<Result<Vec<Key>, Refusal>> {
        // Once per interval for all instances: tokens with made-up `kid`s must not turn into a
        // flood of requests to the identity provider.
        if self.refetch_ms == 0 {
            return Some(self.fetch());
        }
        match kv::increment(REFETCH_KEY, 1, Some(self.refetch_ms)) {
            Ok(1) => Some(self.fetch()),
            _ => None,
        }
    }
}

/// Checks `token` at `now_ms`; returns the consumer.
pub fn authenticate(config: &JwtConfig, token: &str, now_ms: u64) -> Result<String, Refusal> {
    match (&config.jwks, &config.jwks_url) {
        (Some(jwks), _) => check(config, token, now_ms, &Inline(jwks)),
        (None, Some(url)) => check(
            config,
            token,
            now_ms,
            &Fetched {
                url,
                ttl_ms: config.jwks_cache_ttl_s.saturating_mul(1000),
                refetch_ms: config.jwks_refetch_interval_s.saturating_mul(1000),
            },
        ),
        (None, None) => Err(Refusal::KeysUnavailable("no keys configured".into())),
    }
}

fn check(
    config: &JwtConfig,
    token: &str,
    now_ms: u64,
    source: &dyn KeySource,
) -> Result<String, Refusal> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("JWT rejected: not three base64url parts"));
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid("JWT rejected: the header is not base64url JSON"))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if !config.algorithms.iter().any(|a| a == alg) {
        return Err(invalid(format!(
            "JWT rejected: algorithm `{alg}` is not accepted (accepted: {})",
            config.algorithms.join(", ")
        )));
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| invalid("JWT rejected: the signature is not base64url"))?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];

    let candidates = |keys: &[Key]| -> bool {
        keys.iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.public.alg() == alg && k.alg.as_deref().is_none_or(|a| a == alg))
            .any(|k| verify(&k.public, signed, &signature))
    };
    let keys = source.keys()?;
    let known = kid.is_none_or(|kid| keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
    let verified = if known {
        candidates(&keys)
    } else {
        match source.refetch() {
            Some(fresh) => {
                let fresh = fresh?;
                if !fresh.iter().any(|k| k.kid.as_deref() == kid) {
                    return Err(invalid(format!(
                        "JWT rejected: no key with kid `{}` in the key set",
                        kid.unwrap_or_default()
                    )));
                }
                candidates(&fresh)
            }
            None => {
                return Err(invalid(format!(
                    "JWT rejected: no key with kid `{}` in the key set",
                    kid.unwrap_or_default()
                )));
            }
        }
    };
    if !verified {
        return Err(invalid(format!(
            "JWT rejected: the signature does not verify ({alg})"
        )));
    }

    let claims: Value = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .ok_or_else(|| invalid("JWT rejected: the payload is not a base64url JSON object"))?;
    let now = now_ms / 1000;
    let leeway = config.leeway_s;
    match claims.get("exp").map(Value::as_f64) {
        Some(Some(exp)) if (now as f64) > exp + leeway as f64 => {
            return Err(invalid("JWT rejected: expired (exp)"));
        }
        Some(None) => return Err(invalid("JWT rejected: `exp` is not a number")),
        None if config.require_exp => return Err(invalid("JWT rejected: no `exp` claim")),
        _ => {}
    }
    match claims.get("nbf").map(Value::as_f64) {
        Some(Some(nbf)) if ((now + leeway) as f64) < nbf => {
            return Err(invalid("JWT rejected: not valid yet (nbf)"));
        }
        Some(None) => return Err(invalid("JWT rejected: `nbf` is not a number")),
        _ => {}
    }
    if let Some(issuer) = &config.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(invalid(format!(
            "JWT rejected: wrong issuer (iss; expected `{issuer}`)"
        )));
    }
    if let Some(audience) = &config.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !ok {
            return Err(invalid(format!(
                "JWT rejected: wrong audience (aud; expected `{audience}`)"
            )));
        }
    }
    match claims.get(&config.consumer_claim) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(invalid(format!(
            "JWT rejected: no `{}` claim to name the consumer",
            config.consumer_claim
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000; // 2027

    fn fixture() -> Value {
        serde_json::from_str(include_str!("jwt_fixture.json")).unwrap()
    }

    fn config(extra: &str) -> JwtConfig {
        let jwks = fixture()["jwks"].to_string();
        serde_json::from_str(&format!(
            r#"{{"jwks":{jwks},"issuer":"https://idp.scenario/","audience":"weir"{extra}}}"#
        ))
        .unwrap()
    }

    fn token(name: &str) -> String {
        fixture()[name].as_str().unwrap().to_owned()
    }

    fn refusal(config: &JwtConfig, token: &str) -> String {
        match authenticate(config, token, NOW_MS) {
            Err(Refusal::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn valid_rs256_and_eddsa_tokens_name_the_consumer() {
        let c = config("");
        check_config(&c).unwrap();
        assert_eq!(
            authenticate(&c, &token("rs256"), NOW_MS),
            Ok("jwt-consumer".into())
        );
        assert_eq!(
            authenticate(&c, &token("eddsa"), NOW_MS),
            Ok("jwt-consumer".into())
        );
        assert!(looks_like_jwt(&token("rs256")));
        assert!(!looks_like_jwt("sk-plain-api-key"));
    }

    #[test]
    fn each_check_is_named() {
        let c = config("");
        assert!(refusal(&c, &token("expired")).contains("expired (exp)"));
        assert!(refusal(&c, &token("none")).contains("algorithm `none` is not accepted"));
        let mut other = config("");
        other.audience = Some("other".into());
        assert!(refusal(&other, &token("rs256")).contains("wrong audience"));
        other = config("");
        other.issuer = Some("https://elsewhere/".into());
        assert!(refusal(&other, &token("rs256")).contains("wrong issuer"));
        other = config("");
        other.consumer_claim = "email".into();
        assert!(refusal(&other, &token("eddsa")).contains("no `email` claim"));
        other = config("");
        other.algorithms = vec!["ES256".into()];
        assert!(refusal(&other, &token("rs256")).contains("`RS256` is not accepted"));
    }

    #[test]
    fn a_changed_payload_or_signature_does_not_verify() {
        let c = config("");
        let t = token("rs256");
        let (rest, sig) = t.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        bytes[10] ^= 1;
        let forged = format!("{rest}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert!(refusal(&c, &forged).contains("signature does not verify"));
        // The EdDSA token's signature under the RSA token's header and payload.
        let ed = token("eddsa");
        let swapped = format!("{rest}.{}", ed.rsplit_once('.').unwrap().1);
        assert!(refusal(&c, &swapped).contains("signature does not verify"));
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let e = check_config(&serde_json::from_str::<JwtConfig>("{}").unwrap()).unwrap_err();
        assert_eq!(e.path, "jwt");
        let mut c = config("");
        c.algorithms = vec!["HS256".into()];
        assert_eq!(check_config(&c).unwrap_err().path, "jwt.algorithms[0]");
    }
}
