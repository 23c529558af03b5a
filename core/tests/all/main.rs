//! weir-core's loop driven with a scripted platform and chain: every exit of a request, the
//! stream pipeline, and MCP routes.

mod exits;
mod fakes;
mod mcp;
mod streams;
