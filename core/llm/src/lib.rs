//! LLM wire formats: what the gateway reads from and writes into OpenAI-format traffic.
//!
//! Pure and portable (no I/O, no async): the same code runs in the `weir` host and, later, in
//! the edge apps. It covers
//!
//! - [`inspect`]: the facts policies need from a request body (model, `max_tokens`, stream flag,
//!   a prompt-token estimate) and the rewrite that asks the upstream for usage on streams;
//! - [`usage`]: token usage from a response body or from the final chunk of a stream;
//! - [`relay`]: the accounting of a relayed stream (events to forward, final usage, completion)
//!   as a push-based state machine, whoever does the I/O;
//! - [`sse`]: an incremental server-sent-events framer that is correct for any split of the
//!   input, including inside a UTF-8 character;
//! - [`error`]: the OpenAI error object;
//! - [`translate`]: OpenAI format to and from each provider's native API (Anthropic, Gemini,
//!   Bedrock Converse, Azure OpenAI, Azure AI Foundry, Mistral), streams included;
//! - [`eventstream`] and [`sigv4`]: the AWS event-stream framing and request signing;
//! - [`price`]: prices per model and the cost of a call;
//! - [`view`]: the structured view policies get of requests, answers and stream events, and the
//!   structured edits they make.
//!
//! ```
//! let info = weir_llm::inspect::chat_request(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#).unwrap();
//! assert_eq!(info.model.as_deref(), Some("gpt-4o"));
//! assert_eq!(info.max_tokens, Some(5));
//! ```
#![forbid(unsafe_code)]

pub mod embeddings;
pub mod error;
pub mod eventstream;
pub mod inspect;
pub mod price;
pub mod relay;
pub mod sigv4;
pub mod sse;
pub mod translate;
pub mod usage;
pub mod view;

pub use inspect::{LlmRequestInfo, RequestError};
pub use translate::ProviderKind;
pub use usage::Usage;
