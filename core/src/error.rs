//! Data-plane errors: where each comes from, its status and code, and its body in the client's
//! format ([`crate::Response::error`] is the one place they become responses).

use crate::types::{Outcome, PolicyFault};

/// Where a failure came from; decides the status, the outcome and whether a retry is safe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The client sent something we refuse (bad JSON, unknown route, too large...).
    #[error("{message}")]
    Client {
        status: u16,
        code: &'static str,
        message: String,
        param: Option<&'static str>,
    },
    /// A policy failed (trap, timeout, memory limit).
    #[error(transparent)]
    Policy(#[from] PolicyFault),
    /// The upstream could not be reached or did not answer in time. Safe to retry: nothing was
    /// billed.
    #[error("{message}")]
    Upstream {
        status: u16,
        code: &'static str,
        message: String,
        /// The cause with its chain (connection refused, TLS...), for the log only.
        detail: Option<String>,
    },
    /// The provider is not usable as configured.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
}

impl GatewayError {
    pub fn client(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Client { status, .. } | Self::Upstream { status, .. } => *status,
            Self::Policy(_) => 500,
            Self::Unavailable { .. } => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Client { code, .. }
            | Self::Upstream { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::Policy(e) => e.code,
        }
    }

    /// How a request that ended with this error is recorded.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Client { .. } => Outcome::Denied,
            Self::Upstream { .. } => Outcome::UpstreamError,
            Self::Policy(_) | Self::Unavailable { .. } => Outcome::GatewayError,
        }
    }

    /// Whether the request may be retried without risk of double billing.
    pub fn retry_safe(&self) -> bool {
        matches!(self, Self::Upstream { .. } | Self::Unavailable { .. })
    }

    /// The error body in the client's format. Messages never contain secrets: they are built
    /// from our own text, policy names and the client's own input.
    pub fn body_in(&self, wire: crate::Wire, request_id: &str) -> Vec<u8> {
        let param = match self {
            Self::Client { param, .. } => *param,
            _ => None,
        };
        wire.error_body(
            self.status(),
            self.code(),
            &self.to_string(),
            param,
            request_id,
        )
    }
}
