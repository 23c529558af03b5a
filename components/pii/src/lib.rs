//! `pii`: masks personal data in prompts before they leave the gateway, and restores it in the
//! answer — whole or streamed.
//!
//! On request, the text of the chosen messages is searched for the configured entities
//! (built-in: e-mail, phone, credit card (Luhn), IBAN (mod 97), US SSN, IPv4, IPv6; custom:
//! named regexes). Each value is replaced by a placeholder that is the same for the same value
//! within the request (`[EMAIL_1]`), or by `[EMAIL_REDACTED]` for entities in `redact` mode.
//! On response the placeholders of this request are put back; in a stream, a placeholder split
//! across events is restored, holding back at most 64 bytes. The mapping lives in the policy
//! instance's memory, which is this request's alone: it is never stored, logged or recorded.
//!
//! ```json
//! { "entities": ["email", "phone", {"entity": "credit-card", "mode": "redact"}],
//!   "custom": [{"name": "employee-id", "pattern": "\\bEMP-[0-9]{6}\\b"}] }
//! ```

pub mod detect;
pub mod mask;

use std::cell::{OnceCell, RefCell};

use detect::{Builtin, Detector};
use mask::{Masks, Mode, Restorer};
use serde::Deserialize;
use weir_policy_sdk::{
    AnswerText, ChunkVerdict, ConfigError, ContentPart, Context, Edits, IndexedMessage, LlmEdit,
    Message, Phase, Policy, StreamEvent, Verdict, metrics,
};

/// An entity of the configuration: a built-in by name, or with its mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EntitySetting {
    Name(Builtin),
    With {
        entity: Builtin,
        #[serde(default)]
        mode: Option<Mode>,
    },
}

/// A custom entity: a name (`[a-z][a-z0-9-]{0,31}`) and a regex.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Custom {
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Built-in entities to look for; absent: all of them.
    pub entities: Option<Vec<EntitySetting>>,
    #[serde(default)]
    pub custom: Vec<Custom>,
    /// The mode of entities that do not say one.
    #[serde(default)]
    pub mode: Mode,
    /// Roles whose messages are masked; absent: every role (earlier answers in a conversation
    /// hold the restored values, and are masked again).
    pub roles: Option<Vec<String>>,
    /// Put the values back in the answer (default true).
    #[serde(default = "yes")]
    pub restore: bool,
    #[serde(skip)]
    detectors: OnceCell<Vec<(Detector, Mode)>>,
}

fn yes() -> bool {
    true
}

impl Config {
    /// The detectors, built once: by `check` when the configuration is parsed.
    fn detectors(&self) -> &[(Detector, Mode)] {
        self.detectors
            .get_or_init(|| self.build_detectors().unwrap_or_default())
    }

    /// Built-in detectors in order of precedence of overlapping matches (not the config's),
    /// then the custom ones; `Err((i, e))` when `custom[i]`'s pattern does not compile.
    fn build_detectors(&self) -> Result<Vec<(Detector, Mode)>, (usize, regex_lite::Error)> {
        let mut out: Vec<(Detector, Mode)> = Vec::new();
        for b in Builtin::ALL {
            let mode = match &self.entities {
                None => Some(self.mode),
                Some(list) => list.iter().find_map(|e| match e {
                    EntitySetting::Name(n) if *n == b => Some(self.mode),
                    EntitySetting::With { entity, mode } if *entity == b => {
                        Some(mode.unwrap_or(self.mode))
                    }
                    _ => None,
                }),
            };
            if let Some(mode) = mode {
                out.push((Detector::builtin(b), mode));
            }
        }
        for (i, c) in self.custom.iter().enumerate() {
            let d = Detector::custom(&c.name, &c.pattern).map_err(|e| (i, e))?;
            out.push((d, c.mode.unwrap_or(self.mode)));
        }
        Ok(out)
    }

    fn masks_role(&self, role: &str) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|roles| roles.iter().any(|r| r == role))
    }
}

/// This request's masks and the stream restorer (one instance serves one request).
#[derive(Default)]
struct State {
    masks: Masks,
    restorer: Restorer,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

pub struct Pii;

impl Policy for Pii {
    type Config = Config;
    const NAME: &'static str = "pii";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const PHASES: &'static [Phase] = &[
        Phase::Request,
        Phase::Response,
        Phase::StreamChunk,
        Phase::StreamEnd,
    ];
    // Its patterns compiled once per configuration, not in every request's instance.
    const PREINITIALISE: bool = true;

    fn check(config: &Config) -> Result<(), ConfigError> {
        let mut names: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
        for (i, c) in config.custom.iter().enumerate() {
            let valid = c.name.len() <= 32
                && c.name.starts_with(|ch: char| ch.is_ascii_lowercase())
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(ConfigError::at(
                    format!("custom[{i}].name"),
                    "a custom entity's name is 1 to 32 characters of a-z, 0-9 and `-`, starting with a letter (it names the placeholder: `employee-id` → `[EMPLOYEE_ID_1]`)",
                ));
            }
            if names.contains(&c.name.as_str()) {
                return Err(ConfigError::at(
                    format!("custom[{i}].name"),
                    format!("`{}` is already an entity: choose another name", c.name),
                ));
            }
            names.push(&c.name);
        }
        if config.entities.as_ref().is_some_and(Vec::is_empty) && config.custom.is_empty() {
            return Err(ConfigError::at(
                "entities",
                "no entity to look for: list built-in entities, add `custom` ones, or leave `entities` out for all built-ins",
            ));
        }
        // Compiled here, once, and kept for the requests this parsed configuration serves.
        let detectors = config.build_detectors().map_err(|(i, e)| {
            ConfigError::at(
                format!("custom[{i}].pattern"),
                format!(
                    "not a valid regex (regex-lite syntax: no look-around, no Unicode classes): {e}"
                ),
            )
        })?;
        let _ = config.detectors.set(detectors);
        Ok(())
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        let messages = request.chat_messages();
        if messages.is_empty() {
            return Verdict::proceed();
        }
        let detectors = config.detectors();
        let texts: Vec<String> = messages.iter().map(|m| m.joined_text()).collect();
        let avoid: Vec<&str> = texts.iter().map(String::as_str).collect();
        STATE.with_borrow_mut(|state| {
            let mut edits = Edits::none();
            for (i, message) in messages.iter().enumerate() {
                if !config.masks_role(&message.role) {
                    continue;
                }
                let mut changed = false;
                let content: Vec<ContentPart> = message
                    .content
                    .iter()
                    .map(|part| match part {
                        ContentPart::Text(t) => match state.masks.mask(detectors, t, &avoid) {
                            Some(masked) => {
                                changed = true;
                                ContentPart::Text(masked)
                            }
                            None => part.clone(),
                        },
                        other => other.clone(),
                    })
                    .collect();
                if changed {
                    let mut message = message.clone();
                    message.content = content;
                    edits = edits.llm(LlmEdit::ReplaceMessage(IndexedMessage {
                        index: i as u32,
                        message,
                    }));
                }
            }
            for (i, (masked, redacted)) in state.masks.counts.iter().enumerate() {
                let name = &detectors[i].0.name;
                for (n, action) in [(*masked, "mask"), (*redacted, "redact")] {
                    if n > 0 {
                        metrics::counter_add(
                            "entities",
                            n as u64,
                            &[
                                ("entity".into(), name.clone()),
                                ("action".into(), action.into()),
                            ],
                        );
                        weir_policy_sdk::flag(cx, &format!("pii.{name}"));
                    }
                }
            }
            if !config.restore {
                state.masks.map.clear();
            }
            Verdict::edit(edits)
        })
    }

    fn on_response(_config: &Config, _cx: &Context, response: &Message) -> Verdict {
        STATE.with_borrow(|state| {
            if state.masks.map.is_empty() {
                return Verdict::proceed();
            }
            let Some(answer) = response.answer() else {
                return Verdict::proceed();
            };
            let mut edits = Edits::none();
            for choice in answer.choices {
                if let Some(text) = choice.text {
                    let restored = state.masks.restore(&text);
                    if restored != text {
                        edits = edits.llm(LlmEdit::SetAnswerText(AnswerText {
                            choice: choice.index,
                            text: restored,
                        }));
                    }
                }
            }
            Verdict::edit(edits)
        })
    }

    fn on_stream_chunk(_config: &Config, _cx: &Context, event: StreamEvent) -> ChunkVerdict {
        STATE.with_borrow_mut(|state| {
            let State { masks, restorer } = state;
            if masks.map.is_empty() {
                return ChunkVerdict::Pass;
            }
            let Some(text) = event.text else {
                return ChunkVerdict::Pass;
            };
            let out = restorer.push(&masks.map, text.as_bytes());
            if out == text.as_bytes() {
                return ChunkVerdict::Pass;
            }
            if out.is_empty() {
                return ChunkVerdict::hold();
            }
            ChunkVerdict::text(String::from_utf8_lossy(&out).into_owned())
        })
    }

    fn on_stream_end(_config: &Config, _cx: &Context) -> ChunkVerdict {
        STATE.with_borrow_mut(|state| {
            let rest = state.restorer.finish();
            if rest.is_empty() {
                ChunkVerdict::Pass
            } else {
                ChunkVerdict::text(String::from_utf8_lossy(&rest).into_owned())
            }
        })
    }
}

weir_policy_sdk::export_policy!(Pii);
weir_policy_sdk::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        weir_policy_sdk::parse_config::<Pii>(json)
    }

    #[test]
    fn configuration_errors_name_the_field() {
        assert_eq!(
            parse(r#"{"custom":[{"name":"x","pattern":"("}]}"#)
                .err()
                .map(|e| e.path),
            Some("custom[0].pattern".into())
        );
        assert_eq!(
            parse(r#"{"custom":[{"name":"Bad Name","pattern":"x"}]}"#)
                .err()
                .map(|e| e.path),
            Some("custom[0].name".into())
        );
        assert_eq!(
            parse(r#"{"custom":[{"name":"email","pattern":"x"}]}"#)
                .err()
                .map(|e| e.path),
            Some("custom[0].name".into())
        );
        assert_eq!(
            parse(r#"{"entities":[]}"#).err().map(|e| e.path),
            Some("entities".into())
        );
        assert!(parse(r#"{"entities":["e-mail"]}"#).is_err());
        assert!(
            parse(r#"{"entities":["email",{"entity":"iban","mode":"redact"}],"mode":"mask"}"#)
                .is_ok()
        );
    }

    #[test]
    fn detectors_follow_the_configuration() {
        let c = parse(
            r#"{"entities":["phone",{"entity":"credit-card","mode":"redact"}],"custom":[{"name":"employee-id","pattern":"EMP-[0-9]{6}"}]}"#,
        );
        let c = c.unwrap_or_else(|e| unreachable!("{}", e.message));
        let names: Vec<(&str, Mode)> = c
            .detectors()
            .iter()
            .map(|(d, m)| (d.name.as_str(), *m))
            .collect();
        assert_eq!(
            names,
            [
                ("credit-card", Mode::Redact),
                ("phone", Mode::Mask),
                ("employee-id", Mode::Mask)
            ]
        );
    }
}
