//! The Weir policy SDK: write a policy component in a few lines.
//!
//! A policy is a type implementing [`Policy`]; [`export_policy!`] turns it into the exports of the
//! `weir:policy/policy-component` world (see `wit/policy.wit`). The SDK parses and caches the
//! policy's JSON configuration, reports configuration errors with the JSON path of the offending
//! field, and skips the phases the policy does not declare.
//!
//! ```ignore
//! use weir_policy_sdk::{Context, Message, Phase, Policy, Verdict};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { header: String }
//!
//! struct RequireHeader;
//!
//! impl Policy for RequireHeader {
//!     type Config = Config;
//!     const NAME: &'static str = "require-header";
//!     const VERSION: &'static str = "0.1.0";
//!     const PHASES: &'static [Phase] = &[Phase::Request];
//!
//!     fn on_request(config: &Config, _cx: &Context, request: &Message) -> Verdict {
//!         match request.header(&config.header) {
//!             Some(_) => Verdict::proceed(),
//!             None => Verdict::deny(400, "missing_header", format!("send the {} header", config.header)),
//!         }
//!     }
//! }
//!
//! weir_policy_sdk::export_policy!(RequireHeader);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`: the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component.

/// Raw bindings generated from `wit/policy.wit`. Prefer the re-exports at the crate root.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "weir:policy/policy-component",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "weir_policy_sdk::bindings",
        generate_all,
    });
}

pub use bindings::weir::policy::http_client;
pub use bindings::weir::policy::kv;
pub use bindings::weir::policy::log;
pub use bindings::weir::policy::types::{
    ChunkVerdict, Completion, ConfigError, Context, Denial, Edits, LlmRequest, Message, Outcome,
    Phase, PolicyInfo, Reply, RouteKind, StreamChunk, Usage, Verdict,
};
pub use serde;
pub use serde_json;

/// A Weir policy. Implement the phases you declare in [`Policy::PHASES`]; the others are never
/// called by the host.
pub trait Policy {
    /// The policy's configuration, deserialized from the JSON the operator wrote. Use
    /// `#[serde(deny_unknown_fields)]` so that typos are reported instead of ignored.
    type Config: serde::de::DeserializeOwned;
    /// Short name, used in logs, metrics and error messages.
    const NAME: &'static str;
    /// The policy's version.
    const VERSION: &'static str;
    /// The phases this policy implements.
    const PHASES: &'static [Phase];

    /// Checks beyond what deserialization checks (ranges, formats). Return the field path.
    fn check(_config: &Self::Config) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The client's request, before it goes upstream.
    fn on_request(_config: &Self::Config, _cx: &Context, _request: &Message) -> Verdict {
        Verdict::proceed()
    }

    /// The upstream's non-streaming response.
    fn on_response(_config: &Self::Config, _cx: &Context, _response: &Message) -> Verdict {
        Verdict::proceed()
    }

    /// One event of a streaming answer.
    fn on_stream_chunk(_config: &Self::Config, _cx: &Context, _chunk: StreamChunk) -> ChunkVerdict {
        ChunkVerdict::Pass
    }

    /// The end of the request, with final usage.
    fn on_complete(_config: &Self::Config, _cx: &Context, _done: Completion) {}
}

/// Parses and checks a configuration document, reporting the JSON path of the first problem.
pub fn parse_config<P: Policy>(json: &str) -> Result<P::Config, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let config: P::Config = serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError {
        path: json_path(&e.path().to_string()),
        message: e.inner().to_string(),
    })?;
    de.end().map_err(|e| ConfigError {
        path: String::new(),
        message: e.to_string(),
    })?;
    P::check(&config)?;
    Ok(config)
}

/// `serde_path_to_error` writes `.` for the root; we write an empty path.
fn json_path(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        path.to_string()
    }
}

impl ConfigError {
    /// An error about the field at `path` (e.g. `consumers[0].key-sha256`).
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Edits {
    /// No changes.
    pub const fn none() -> Self {
        Self {
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            body: None,
        }
    }

    /// True when these edits change nothing.
    pub fn is_empty(&self) -> bool {
        self.set_headers.is_empty() && self.remove_headers.is_empty() && self.body.is_none()
    }
}

impl Verdict {
    /// Go on unchanged.
    pub const fn proceed() -> Self {
        Verdict::Continue(Edits::none())
    }

    /// Refuse with a status, a stable code and a message for the client.
    pub fn deny(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Verdict::Deny(Denial {
            status,
            code: code.into(),
            message: message.into(),
            headers: Vec::new(),
        })
    }
}

impl Denial {
    /// Adds a response header to the refusal.
    pub fn with_header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Logs at `level` through the host, prefixed with nothing: the host tags policy and request.
pub fn emit(level: log::Level, message: &str) {
    log::emit(level, message);
}

/// The denial a policy returns when its configuration cannot be read at request time (it was
/// validated when loaded, so this means a host bug or a hand-edited store).
#[doc(hidden)]
pub fn config_unreadable(name: &str, e: &ConfigError) -> Denial {
    Denial {
        status: 500,
        code: "policy_config_invalid".to_string(),
        message: format!(
            "policy {name}: configuration invalid at `{}`: {}",
            e.path, e.message
        ),
        headers: Vec::new(),
    }
}

/// Exports a [`Policy`] implementation as the component's `weir:policy/policy` interface.
///
/// The configuration is parsed once per instance (the host uses a fresh instance per request, so
/// this is once per request, and only when a phase runs).
/// Embeds the JSON Schema of the policy's configuration in the component, as the custom section
/// `weir:config-schema`; the controller's policy catalogue shows it to operators and tools. The
/// path is relative to the file that invokes the macro. `validate-config` stays the authority:
/// the schema documents, the policy decides.
///
/// ```ignore
/// weir_policy_sdk::config_schema!("../config.schema.json");
/// ```
#[macro_export]
macro_rules! config_schema {
    ($path:literal) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(
            unsafe_code,
            reason = "link_section only names the custom section the bytes go to"
        )]
        #[unsafe(link_section = "weir:config-schema")]
        #[used]
        static __WEIR_CONFIG_SCHEMA: [u8; include_bytes!($path).len()] = *include_bytes!($path);
    };
}

#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        // Only on wasm: native builds of a policy crate (its unit tests) have no component exports.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[doc(hidden)]
            pub struct __WeirExport;

            #[doc(hidden)]
            fn __weir_config(
                cx: &$crate::Context,
            ) -> ::core::result::Result<
                &'static <$policy as $crate::Policy>::Config,
                $crate::ConfigError,
            > {
                static CONFIG: ::std::sync::OnceLock<<$policy as $crate::Policy>::Config> =
                    ::std::sync::OnceLock::new();
                if let Some(c) = CONFIG.get() {
                    return Ok(c);
                }
                let parsed = $crate::parse_config::<$policy>(&cx.config())?;
                Ok(CONFIG.get_or_init(|| parsed))
            }

            impl $crate::bindings::exports::weir::policy::policy::Guest for __WeirExport {
                fn describe() -> $crate::PolicyInfo {
                    $crate::PolicyInfo {
                        name: <$policy as $crate::Policy>::NAME.into(),
                        version: <$policy as $crate::Policy>::VERSION.into(),
                        phases: <$policy as $crate::Policy>::PHASES.to_vec(),
                    }
                }

                fn validate_config(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), $crate::ConfigError> {
                    $crate::parse_config::<$policy>(&config).map(|_| ())
                }

                fn on_request(cx: &$crate::Context, request: &$crate::Message) -> $crate::Verdict {
                    match __weir_config(cx) {
                        Ok(c) => <$policy as $crate::Policy>::on_request(c, cx, request),
                        Err(e) => $crate::Verdict::Deny($crate::config_unreadable(
                            <$policy as $crate::Policy>::NAME,
                            &e,
                        )),
                    }
                }

                fn on_response(
                    cx: &$crate::Context,
                    response: &$crate::Message,
                ) -> $crate::Verdict {
                    match __weir_config(cx) {
                        Ok(c) => <$policy as $crate::Policy>::on_response(c, cx, response),
                        Err(e) => $crate::Verdict::Deny($crate::config_unreadable(
                            <$policy as $crate::Policy>::NAME,
                            &e,
                        )),
                    }
                }

                fn on_stream_chunk(
                    cx: &$crate::Context,
                    chunk: $crate::StreamChunk,
                ) -> $crate::ChunkVerdict {
                    match __weir_config(cx) {
                        Ok(c) => <$policy as $crate::Policy>::on_stream_chunk(c, cx, chunk),
                        Err(e) => $crate::ChunkVerdict::Abort($crate::config_unreadable(
                            <$policy as $crate::Policy>::NAME,
                            &e,
                        )),
                    }
                }

                fn on_complete(cx: &$crate::Context, done: $crate::Completion) {
                    if let Ok(c) = __weir_config(cx) {
                        <$policy as $crate::Policy>::on_complete(c, cx, done);
                    }
                }
            }

    $crate::bindings::export_bindings!(__WeirExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Config {
        limit: u32,
        #[serde(default)]
        names: Vec<String>,
    }

    struct Demo;

    impl Policy for Demo {
        type Config = Config;
        const NAME: &'static str = "demo";
        const VERSION: &'static str = "0.0.1";
        const PHASES: &'static [Phase] = &[Phase::Request];

        fn check(config: &Config) -> Result<(), ConfigError> {
            if config.limit == 0 {
                return Err(ConfigError::at("limit", "must be at least 1"));
            }
            Ok(())
        }
    }

    #[test]
    fn parses_a_valid_config() {
        let c = parse_config::<Demo>(r#"{"limit": 3, "names": ["a"]}"#).unwrap();
        assert_eq!((c.limit, c.names.len()), (3, 1));
    }

    #[test]
    fn reports_the_path_of_a_wrong_type() {
        let e = parse_config::<Demo>(r#"{"limit": 3, "names": ["a", 7]}"#).unwrap_err();
        assert_eq!(e.path, "names[1]");
    }

    #[test]
    fn reports_missing_and_unknown_fields() {
        let e = parse_config::<Demo>("{}").unwrap_err();
        assert_eq!(e.path, "");
        assert!(e.message.contains("missing field `limit`"), "{}", e.message);
        let e = parse_config::<Demo>(r#"{"limit": 1, "lmit": 2}"#).unwrap_err();
        assert_eq!(e.path, "lmit");
    }

    #[test]
    fn runs_the_policy_check() {
        let e = parse_config::<Demo>(r#"{"limit": 0}"#).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("limit", "must be at least 1")
        );
    }

    #[test]
    fn rejects_trailing_garbage_and_non_json() {
        assert!(parse_config::<Demo>(r#"{"limit": 1} x"#).is_err());
        assert!(parse_config::<Demo>("limit: 1").is_err());
    }

    #[test]
    fn verdict_helpers() {
        assert!(matches!(Verdict::proceed(), Verdict::Continue(e) if e.is_empty()));
        let Verdict::Deny(d) = Verdict::deny(429, "slow_down", "wait") else {
            panic!("expected a denial")
        };
        let d = d.with_header("retry-after", 3);
        assert_eq!(
            (d.status, d.code.as_str(), d.message.as_str()),
            (429, "slow_down", "wait")
        );
        assert_eq!(
            d.headers,
            vec![("retry-after".to_string(), "3".to_string())]
        );
        let unreadable = config_unreadable("demo", &ConfigError::at("limit", "bad"));
        assert_eq!(unreadable.status, 500);
        assert!(unreadable.message.contains("`limit`"));
    }
}
