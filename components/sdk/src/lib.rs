//! The Weir policy SDK: write a policy component in a few lines.
//!
//! A policy is a type implementing [`Policy`]; [`export_policy!`] turns it into the exports of the
//! `weir:policy/policy-component@0.2.0` world (see `wit/policy-0.2/`). The SDK parses and caches
//! the policy's JSON configuration (per policy instance), reports configuration errors with the
//! JSON path of the offending field, and skips the phases the policy does not declare. A policy
//! that only looks at headers stays a dozen lines; the stream, LLM-view, target, embedding,
//! vector and metrics interfaces are there when a policy needs them.
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

/// Raw bindings generated from `wit/policy-0.2`. Prefer the re-exports at the crate root.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "weir:policy/policy-component@0.2.0",
        path: "../../wit/policy-0.2",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "weir_policy_sdk::bindings",
        generate_all,
    });
}

pub use bindings::weir::policy::types::{
    AnswerChoice, AnswerText, Attempt, ChatMessage, ChunkVerdict, Completion, ConfigError,
    ContentPart, Context, Denial, Edits, Emission, IndexedMessage, LlmAnswer, LlmEdit, LlmRequest,
    Message, Outcome, Parameter, Phase, PolicyAnswer, PolicyInfo, Reply, RouteKind, RpcError,
    RpcMessage, StreamEvent, Target, Usage, Verdict,
};
pub use bindings::weir::policy::{embeddings, http_client, kv, log, metrics, vectors};
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

    /// Whether the host should pre-initialise this policy: run `validate-config` once per
    /// configuration (which parses it and calls [`Policy::prepare`]) and start every request's
    /// instance from a snapshot of the memory that left, instead of parsing the configuration
    /// again in each request's fresh instance. Worth it when parsing or preparing costs more
    /// than a few microseconds (patterns to compile, indexes to build). Requests stay isolated:
    /// each starts from the same snapshot. `weir build` pre-initialises the edge apps' copy of
    /// the component the same way, with every configuration the app's plan gives it. Hosts that
    /// do not pre-initialise (older ones) parse on first use as before.
    const PREINITIALISE: bool = false;

    /// Checks beyond what deserialization checks (ranges, formats). Return the field path.
    fn check(_config: &Self::Config) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Work done once per configuration rather than per request: compile what the
    /// configuration's patterns need, build lookup tables. Runs after [`Policy::check`] in
    /// `validate-config`; with [`Policy::PREINITIALISE`], what it leaves in `config` (`OnceCell`s
    /// filled) is in the snapshot every request starts from.
    fn prepare(_config: &Self::Config) {}

    /// The client's request, before it goes upstream.
    fn on_request(_config: &Self::Config, _cx: &Context, _request: &Message) -> Verdict {
        Verdict::proceed()
    }

    /// The upstream's non-streaming response (or an earlier policy's answer).
    fn on_response(_config: &Self::Config, _cx: &Context, _response: &Message) -> Verdict {
        Verdict::proceed()
    }

    /// One event of a streaming answer.
    fn on_stream_chunk(_config: &Self::Config, _cx: &Context, _event: StreamEvent) -> ChunkVerdict {
        ChunkVerdict::Pass
    }

    /// The answer's content is complete: emit what was held back.
    fn on_stream_end(_config: &Self::Config, _cx: &Context) -> ChunkVerdict {
        ChunkVerdict::Pass
    }

    /// The end of the request, with final usage and the upstream attempts.
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
            llm: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// True when these edits change nothing.
    pub fn is_empty(&self) -> bool {
        self.set_headers.is_empty()
            && self.remove_headers.is_empty()
            && self.body.is_none()
            && self.llm.is_empty()
            && self.targets.is_empty()
    }

    /// Also set a header.
    pub fn set_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_headers.push((name.to_owned(), value.into()));
        self
    }

    /// Also remove a header.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.remove_headers.push(name.to_owned());
        self
    }

    /// Also make a structured change to the LLM request or answer.
    pub fn llm(mut self, edit: LlmEdit) -> Self {
        self.llm.push(edit);
        self
    }

    /// Also add an upstream target (tried in the order added).
    pub fn target(mut self, provider: &str, model: Option<&str>) -> Self {
        self.targets.push(Target {
            provider: provider.to_owned(),
            model: model.map(str::to_owned),
        });
        self
    }
}

impl ChatMessage {
    /// A message with one text part.
    pub fn text(role: &str, text: &str) -> Self {
        Self {
            role: role.to_owned(),
            content: vec![ContentPart::Text(text.to_owned())],
            extra: None,
        }
    }

    /// The text parts, joined.
    pub fn joined_text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text(t) => Some(t.as_str()),
                ContentPart::Other(_) => None,
            })
            .collect()
    }
}

impl ChunkVerdict {
    /// Hold the event back (or drop it): send nothing for it now.
    pub const fn hold() -> Self {
        ChunkVerdict::Emit(Vec::new())
    }

    /// Send this text instead of the event's.
    pub fn text(text: impl Into<String>) -> Self {
        ChunkVerdict::Emit(vec![Emission::Text(text.into())])
    }
}

impl Verdict {
    /// Go on unchanged.
    pub const fn proceed() -> Self {
        Verdict::Continue(Edits::none())
    }

    /// Go on with these edits.
    pub const fn edit(edits: Edits) -> Self {
        Verdict::Continue(edits)
    }

    /// Answer from the gateway with an OpenAI `chat.completion` (JSON): the host renders it
    /// for the client (as a stream if it asked for one).
    pub fn answer(completion: impl Into<String>, headers: Vec<(String, String)>) -> Self {
        Verdict::Answer(PolicyAnswer {
            completion: completion.into(),
            headers,
        })
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

/// The request attribute the host copies into the usage record's `flags` (see
/// `weir_core::FLAGS_ATTRIBUTE`).
pub const FLAGS_ATTRIBUTE: &str = "usage.flags";

/// Adds `token` (e.g. `guardrail.injection`, `pii.email`) to the flags of this request's usage
/// record. Tokens are `[a-z0-9._:-]`, at most 64 bytes; the host drops others, and keeps at most
/// 32 per request. Never put request text in a flag.
pub fn flag(cx: &Context, token: &str) {
    let current = cx.attribute(FLAGS_ATTRIBUTE).unwrap_or_default();
    if current.split_ascii_whitespace().any(|t| t == token) {
        return;
    }
    let value = if current.is_empty() {
        token.to_owned()
    } else {
        format!("{current} {token}")
    };
    cx.set_attribute(FLAGS_ATTRIBUTE, &value);
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

/// The name of the custom section in which [`export_policy!`] records
/// [`Policy::PREINITIALISE`] (one byte, 1 or 0).
pub const PREINITIALISE_SECTION: &str = "weir:preinitialise";

/// The configuration of each policy instance served by this component instance, parsed once.
///
/// One component instance can serve several entries of a chain with different configurations
/// (at the edge, every entry of the same policy component shares one instance), so parsed
/// configurations are kept per policy instance (`context.instance()`), never in one global.
/// The configurations `validate-config` parsed are kept too ("prepared", one per distinct
/// text): a host that snapshots the instance after `validate-config` (see
/// [`Policy::PREINITIALISE`]) gives every request an instance in which the configuration is
/// already parsed; one is used only for an instance whose configuration text is the same. The
/// self-hosted host snapshots one configuration per instance; `weir build` snapshots every
/// configuration of the component's entries in the edge app's plan.
#[doc(hidden)]
pub struct ConfigCache<T> {
    entries: std::cell::RefCell<Vec<(String, std::rc::Rc<T>)>>,
    prepared: std::cell::RefCell<Vec<(String, std::rc::Rc<T>)>>,
}

impl<T> ConfigCache<T> {
    #[doc(hidden)]
    pub const fn new() -> Self {
        Self {
            entries: std::cell::RefCell::new(Vec::new()),
            prepared: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// `validate-config`: parses and checks `json`, prepares it ([`Policy::prepare`]) and
    /// keeps it as a prepared configuration (the same text again replaces it).
    #[doc(hidden)]
    pub fn prepare<P: Policy<Config = T>>(&self, json: String) -> Result<(), ConfigError>
    where
        T: serde::de::DeserializeOwned,
    {
        let config = parse_config::<P>(&json)?;
        P::prepare(&config);
        let mut prepared = self.prepared.borrow_mut();
        prepared.retain(|(text, _)| *text != json);
        prepared.push((json, std::rc::Rc::new(config)));
        Ok(())
    }
}

impl<T> Default for ConfigCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ConfigCache<T> {
    /// The configuration of the instance `cx` calls for, parsed on first use.
    #[doc(hidden)]
    pub fn get<P: Policy<Config = T>>(&self, cx: &Context) -> Result<std::rc::Rc<T>, ConfigError>
    where
        T: serde::de::DeserializeOwned,
    {
        let instance = cx.instance();
        if let Some((_, c)) = self.entries.borrow().iter().find(|(i, _)| *i == instance) {
            return Ok(c.clone());
        }
        let text = cx.config();
        let prepared = self
            .prepared
            .borrow()
            .iter()
            .find(|(t, _)| *t == text)
            .map(|(_, c)| c.clone());
        let parsed = match prepared {
            Some(c) => c,
            None => std::rc::Rc::new(parse_config::<P>(&text)?),
        };
        self.entries.borrow_mut().push((instance, parsed.clone()));
        Ok(parsed)
    }
}

/// Exports a [`Policy`] implementation as the component's `weir:policy/policy@0.2.0` interface.
///
/// The configuration is parsed once per policy instance and component instance (the host uses
/// a fresh component instance per request, so this is once per request, and only when a phase
/// runs), unless the instance starts from a pre-initialised snapshot that already holds it
/// (see [`Policy::PREINITIALISE`]).
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        // Only on wasm: native builds of a policy crate (its unit tests) have no component exports.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[doc(hidden)]
            pub struct __WeirExport;

            type __Config = <$policy as $crate::Policy>::Config;

            ::std::thread_local! {
                static __CONFIGS: $crate::ConfigCache<__Config> = const { $crate::ConfigCache::new() };
            }

            // Tells the host whether to pre-initialise (see `Policy::PREINITIALISE`).
            #[allow(
                unsafe_code,
                reason = "link_section only names the custom section the byte goes to"
            )]
            #[unsafe(link_section = "weir:preinitialise")]
            #[used]
            static __WEIR_PREINITIALISE: [u8; 1] =
                [<$policy as $crate::Policy>::PREINITIALISE as u8];

            #[doc(hidden)]
            fn __weir_config(
                cx: &$crate::Context,
            ) -> ::core::result::Result<::std::rc::Rc<__Config>, $crate::ConfigError> {
                __CONFIGS.with(|c| c.get::<$policy>(cx))
            }

            fn __unreadable(e: &$crate::ConfigError) -> $crate::Denial {
                $crate::config_unreadable(<$policy as $crate::Policy>::NAME, e)
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
                    __CONFIGS.with(|c| c.prepare::<$policy>(config))
                }

                fn on_request(cx: &$crate::Context, request: &$crate::Message) -> $crate::Verdict {
                    match __weir_config(cx) {
                        Ok(c) => <$policy as $crate::Policy>::on_request(&c, cx, request),
                        Err(e) => $crate::Verdict::Deny(__unreadable(&e)),
                    }
                }

                fn on_response(
                    cx: &$crate::Context,
                    response: &$crate::Message,
                ) -> $crate::Verdict {
                    match __weir_config(cx) {
                        Ok(c) => <$policy as $crate::Policy>::on_response(&c, cx, response),
                        Err(e) => $crate::Verdict::Deny(__unreadable(&e)),
                    }
                }

                fn on_stream_chunk(
                    cx: &$crate::Context,
                    event: $crate::StreamEvent,
                ) -> $crate::ChunkVerdict {
                    match __weir_config(cx) {
                        Ok(c) => <$policy as $crate::Policy>::on_stream_chunk(&c, cx, event),
                        Err(e) => $crate::ChunkVerdict::Abort(__unreadable(&e)),
                    }
                }

                fn on_stream_end(cx: &$crate::Context) -> $crate::ChunkVerdict {
                    match __weir_config(cx) {
                        Ok(c) => <$policy as $crate::Policy>::on_stream_end(&c, cx),
                        Err(e) => $crate::ChunkVerdict::Abort(__unreadable(&e)),
                    }
                }

                fn on_complete(cx: &$crate::Context, done: $crate::Completion) {
                    if let Ok(c) = __weir_config(cx) {
                        <$policy as $crate::Policy>::on_complete(&c, cx, done);
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
