//! Errors of the runtime.

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("policy `{name}`: not a valid WebAssembly component: {source}")]
    Compile {
        name: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error(
        "policy `{name}`: the component does not fit the weir:policy/policy-component world \
         (build it against wit/policy-0.2, or the older wit/policy-0.1): {source}"
    )]
    World {
        name: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("policy `{name}`: {message}")]
    ConfigSchema { name: String, message: String },
    #[error("policy `{name}`: {failure}")]
    Describe {
        name: String,
        failure: PolicyFailure,
    },
    #[error("creating the wasmtime engine failed: {0}")]
    Engine(#[source] wasmtime::Error),
}

/// How a policy call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyFailure {
    #[error("exceeded its time limit of {0} ms per call")]
    Timeout(u64),
    #[error("exceeded its memory limit of {0} MiB")]
    MemoryLimit(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}

/// A policy failed while handling a request. Rendered as a 500 naming the policy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy `{policy}` ({instance}) failed in {phase}: {failure}")]
pub struct PolicyError {
    /// The policy's name, e.g. `token-limit`.
    pub policy: String,
    /// The instance, e.g. `proxy:demo/token-limit`.
    pub instance: String,
    /// The phase, e.g. `on-request`.
    pub phase: &'static str,
    pub failure: PolicyFailure,
}

impl PolicyError {
    /// A stable code for the client.
    pub fn code(&self) -> &'static str {
        match self.failure {
            PolicyFailure::Timeout(_) => "policy_timeout",
            PolicyFailure::MemoryLimit(_) => "policy_memory_limit",
            PolicyFailure::Trap(_) => "policy_trapped",
            PolicyFailure::Instantiate(_) => "policy_unavailable",
        }
    }
}
