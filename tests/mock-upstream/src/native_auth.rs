//! The credentials of the native protocols: each provider's key header (Gemini's never in the
//! URL), Azure's and Foundry's alternatives, Bedrock's SigV4 signature; a wrong one gets the
//! provider's own refusal.

use hyper::StatusCode;
use hyper::http::request::Parts;

use crate::Shared;
use crate::native::{Native, Reply, native_error};

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the credential of a request; the error reply when it is wrong.
pub(crate) fn authenticate(
    shared: &Shared,
    native: &Native,
    parts: &Parts,
    body: &[u8],
) -> Option<Reply> {
    let query = parts.uri.query().unwrap_or("");
    if matches!(native, Native::Gemini { .. }) && query.split('&').any(|kv| kv.starts_with("key="))
    {
        return Some(native_error(
            native,
            StatusCode::BAD_REQUEST,
            "weir-mock-upstream: the API key must be sent in x-goog-api-key, never in the URL",
        ));
    }
    if let Native::Bedrock { .. } = native {
        let (id, secret) = shared.opts.aws_credentials.as_ref()?;
        return verify_sigv4(parts, body, id, secret)
            .err()
            .map(|m| native_error(native, StatusCode::FORBIDDEN, &m));
    }
    let key = shared.opts.api_key.as_deref()?;
    let ok = match native {
        Native::Anthropic => header(parts, "x-api-key") == Some(key),
        Native::Gemini { .. } => header(parts, "x-goog-api-key") == Some(key),
        Native::Azure => header(parts, "api-key") == Some(key),
        Native::Foundry => {
            header(parts, "api-key") == Some(key)
                || header(parts, "authorization") == Some(&format!("Bearer {key}"))
        }
        Native::Mistral => header(parts, "authorization") == Some(&format!("Bearer {key}")),
        Native::Bedrock { .. } => true,
    };
    (!ok).then(|| {
        let (status, message) = match native {
            Native::Anthropic => (StatusCode::UNAUTHORIZED, "invalid x-api-key"),
            Native::Gemini { .. } => (
                StatusCode::FORBIDDEN,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            ),
            _ => (
                StatusCode::UNAUTHORIZED,
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
            ),
        };
        native_error(native, status, message)
    })
}

fn verify_sigv4(parts: &Parts, body: &[u8], id: &str, secret: &str) -> Result<(), String> {
    let bad = || {
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".to_owned()
    };
    let auth =
        header(parts, "authorization").ok_or_else(|| "Missing Authentication Token".to_owned())?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or_else(bad)?;
    let mut fields = rest.split(", ");
    let credential = fields.next().ok_or_else(bad)?;
    let signed = fields
        .next()
        .and_then(|f| f.strip_prefix("SignedHeaders="))
        .ok_or_else(bad)?;
    let signature = fields
        .next()
        .and_then(|f| f.strip_prefix("Signature="))
        .ok_or_else(bad)?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != id || scope[3] != "bedrock" || scope[4] != "aws4_request" {
        return Err(format!(
            "The security token included in the request is invalid ({credential})."
        ));
    }
    let date = header(parts, "x-amz-date").ok_or_else(bad)?;
    let mut headers = Vec::new();
    for name in signed.split(';') {
        let value = header(parts, name).ok_or_else(bad)?;
        headers.push((name.to_owned(), value.to_owned()));
    }
    let payload = weir_llm::sigv4::sha256_hex(body);
    let (_, _, expected) = weir_llm::sigv4::signature(
        &weir_llm::sigv4::Signing {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            payload_sha256: &payload,
            region: scope[2],
            service: "bedrock",
            amz_date: date,
            double_encode_path: true,
        },
        secret,
    );
    if expected == signature && signed.split(';').any(|h| h == "host") {
        Ok(())
    } else {
        Err(bad())
    }
}
