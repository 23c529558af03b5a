//! weir-core's loop driven with a scripted platform and chain: every exit of a request, the
//! stream pipeline, and MCP routes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_pass_by_value,
    reason = "tests fail loudly and build their inputs by value"
)]

mod exits;
mod fakes;
mod mcp;
mod retries;
mod streams;
