//! The OpenAI error object, the format every error on OpenAI-compatible endpoints uses.

use serde::Serialize;

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
    request_id: &'a str,
}

/// OpenAI's `type` for a status code.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        502 | 504 => "upstream_error",
        _ => "server_error",
    }
}

/// `{"error":{"message","type","param","code","request_id"}}`.
pub fn openai_error(
    status: u16,
    code: &str,
    message: &str,
    param: Option<&str>,
    request_id: &str,
) -> Vec<u8> {
    let envelope = Envelope {
        error: Body {
            message,
            kind: error_type(status),
            param,
            code,
            request_id,
        },
    };
    serde_json::to_vec(&envelope)
        .unwrap_or_else(|_| b"{\"error\":{\"message\":\"internal error\"}}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_errors() {
        let body = openai_error(429, "rate_limit_exceeded", "slow \"down\"", None, "req-1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["message"], "slow \"down\"");
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
        assert_eq!(v["error"]["request_id"], "req-1");
    }
}
