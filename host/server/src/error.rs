//! Data-plane errors and the one place they become HTTP responses.

use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, Body};

/// Where a failure came from; decides the status and whether a retry is safe.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The client sent something we refuse (bad JSON, unknown route, too large...).
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
        param: Option<&'static str>,
    },
    /// A policy failed (trap, timeout, memory limit).
    #[error(transparent)]
    Policy(#[from] weir_runtime::PolicyError),
    /// The upstream could not be reached or did not answer in time. Safe to retry: nothing was
    /// billed.
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// The provider is not usable as configured.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
}

impl GatewayError {
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { status, .. } | Self::Upstream { status, .. } => *status,
            Self::Policy(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Client { code, .. }
            | Self::Upstream { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::Policy(e) => e.code(),
        }
    }

    /// How a request that ended with this error is recorded.
    pub fn outcome(&self) -> weir_runtime::Outcome {
        match self {
            Self::Client { .. } => weir_runtime::Outcome::Denied,
            Self::Upstream { .. } => weir_runtime::Outcome::UpstreamError,
            Self::Policy(_) | Self::Unavailable { .. } => weir_runtime::Outcome::GatewayError,
        }
    }

    /// Whether the request may be retried without risk of double billing.
    pub fn retry_safe(&self) -> bool {
        matches!(self, Self::Upstream { .. } | Self::Unavailable { .. })
    }

    /// The OpenAI-format error response. Messages never contain secrets: they are built from
    /// our own text, policy names and the client's own input.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let param = match &self {
            Self::Client { param, .. } => *param,
            _ => None,
        };
        let body = weir_llm::error::openai_error(
            status.as_u16(),
            self.code(),
            &self.to_string(),
            param,
            request_id,
        );
        json_response(status, body, request_id)
    }
}

/// A JSON response with the gateway's request id.
pub fn json_response(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    resp
}
