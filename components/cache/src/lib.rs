//! `cache`: answers a request from earlier answers, exactly or by meaning.
//!
//! - **exact**: the same request (canonical JSON, see [`key`]) in the same scope gets the
//!   stored answer;
//! - **semantic**: the text of the last user message (configurable) is embedded by a provider
//!   of the gateway (the host calls it with its own key), the nearest stored prompt with the
//!   same model, tools, parameters and system messages is looked up in the vector index, and a
//!   word check ([`similar`]) refuses the near misses that a cosine threshold lets through.
//!
//! Entries are per consumer unless `share: proxy`; a client's `cache-control: no-cache` /
//! `no-store` is honoured. Only complete, successful answers are stored, streamed ones included
//! (assembled from the stream as it passes, stored when it ended well); a hit is answered by
//! the gateway in the client's format, as a stream when the client asked for one. What happened
//! goes into the request attribute `usage.cache` (`exact:hit`, `exact:miss semantic:hit:0.9412`,
//! `exact:bypass`...), from which the gateway writes the `x-weir-cache` header, the usage
//! record's `cache` field and the `weir_cache_requests_total` metric.
//!
//! Purging: the gateway's purge endpoint bumps the generation counters `gen` (the whole
//! instance) or `gen:c:<consumer>` in this policy's key-value namespace; entries of older
//! generations are never read again and expire with their TTL.
//!
//! ```json
//! {"exact": {"ttl-s": 3600},
//!  "semantic": {"provider": "openai", "model": "text-embedding-3-small", "threshold": 0.9}}
//! ```

pub mod config;
pub mod key;
mod lexicon;
pub mod similar;

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Map, Value, json};
use weir_policy_sdk::{
    ChunkVerdict, Completion, Context, Message, Outcome, Phase, Policy, StreamEvent, Verdict,
    embeddings, kv, log, metrics, vectors,
};

pub use config::{Config, Share};

/// The attribute the gateway reads (see the crate documentation).
pub const USAGE_ATTRIBUTE: &str = "usage.cache";

/// Candidates looked at per semantic lookup.
const CANDIDATES: u32 = 4;

/// What a miss will store once the answer is complete.
struct Pending {
    /// The entry's key (`e:<exact key>`).
    entry: String,
    /// The semantic index, vector and embedded text, when the semantic layer takes part.
    semantic: Option<(String, Vec<f32>, String)>,
    /// The streamed answer so far.
    text: String,
    finish: Option<String>,
    /// A streamed answer that cannot be rebuilt from its text (tool calls) or is too large.
    unstorable: bool,
}

thread_local! {
    /// Misses waiting for their answer, by request id and instance (an instance serves one
    /// request in `weir`; the key keeps requests apart wherever one serves several).
    static PENDING: RefCell<HashMap<String, Pending>> = RefCell::new(HashMap::new());
}

fn pending_key(cx: &Context) -> String {
    format!("{}|{}", cx.request_id(), cx.instance())
}

fn kv_number(key: &str) -> i64 {
    kv::get(key)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The scope of this request's entries: who may share them, and the purge generations.
fn scope(config: &Config, cx: &Context) -> String {
    let all = kv_number("gen");
    match config.share {
        Share::Proxy => format!("proxy|{all}"),
        Share::Consumer => {
            let consumer = cx.consumer().unwrap_or_default();
            let mine = kv_number(&format!("gen:c:{consumer}"));
            format!("consumer:{}:{consumer}|{all}|{mine}", consumer.len())
        }
    }
}

/// The text of a message's content: a string, or the text parts of an array.
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn role_of(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

/// The semantic layer's view of a request: the text to embed and the fingerprint's index, or
/// why it sits this one out.
fn semantic_view(
    s: &config::Semantic,
    scope: &str,
    body: &Map<String, Value>,
    estimated_tokens: u64,
) -> Option<(String, String)> {
    let messages = body.get("messages")?.as_array()?;
    let turns = messages.iter().filter(|m| role_of(m) == "user").count();
    if turns > s.max_turns || estimated_tokens > s.max_prompt_tokens {
        return None;
    }
    let embedded: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| s.roles.iter().any(|r| r == role_of(m)))
        .map(|(i, _)| i)
        .rev()
        .take(s.messages)
        .collect();
    // Anything that is not text (an image) is not embedded: only exact hits for those.
    if embedded.iter().any(|&i| {
        messages[i]
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|parts| parts.iter().any(|p| p.get("text").is_none()))
    }) {
        return None;
    }
    let text = embedded
        .iter()
        .rev()
        .map(|&i| text_of(&messages[i]))
        .collect::<Vec<_>>()
        .join("\n");
    if text.trim().is_empty() {
        return None;
    }
    let kept: Vec<Value> = messages
        .iter()
        .enumerate()
        .filter(|(i, m)| !embedded.contains(i) && !s.ignore_roles.iter().any(|r| r == role_of(m)))
        .map(|(_, m)| m.clone())
        .collect();
    Some((format!("s:{}", key::fingerprint(scope, body, &kept)), text))
}

/// A stored answer: when it was stored, and the completion's JSON as it was stored (an answer
/// from upstream as it came, without parsing it into a tree and writing it again).
#[derive(serde::Deserialize)]
struct Entry<'a> {
    at: u64,
    #[serde(borrow)]
    completion: &'a serde_json::value::RawValue,
}

/// What a stored completion must be to be served: an object with a list of choices.
#[derive(serde::Deserialize)]
struct Listed {
    #[expect(dead_code, reason = "only its presence as a list is checked")]
    choices: Vec<serde::de::IgnoredAny>,
}

/// What an answer must be to be stored: choices, each finished, none in error.
#[derive(serde::Deserialize)]
struct Finished<'a> {
    #[serde(borrow)]
    choices: Vec<Choice<'a>>,
}

#[derive(serde::Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

/// The completion of `entry` (its JSON) and when it was stored.
fn read_entry(entry: &str) -> Option<(String, u64)> {
    let bytes = kv::get(entry).ok()??;
    let stored: Entry = serde_json::from_slice(&bytes).ok()?;
    serde_json::from_str::<Listed>(stored.completion.get()).ok()?;
    Some((stored.completion.get().to_owned(), stored.at))
}

fn hit(completion: String, at: u64, now: u64, layer: &str, similarity: Option<f32>) -> Verdict {
    let mut headers = vec![
        ("x-weir-cache".to_owned(), "hit".to_owned()),
        ("x-weir-cache-layer".to_owned(), layer.to_owned()),
        (
            "age".to_owned(),
            (now.saturating_sub(at) / 1000).to_string(),
        ),
    ];
    if let Some(s) = similarity {
        headers.push(("x-weir-cache-similarity".into(), format!("{s:.4}")));
    }
    Verdict::answer(completion, headers)
}

fn count_refusal(refusal: similar::Refusal) {
    metrics::counter_add(
        "cache_semantic_refusals",
        1,
        &[("reason".into(), format!("{refusal:?}").to_lowercase())],
    );
}

/// Stores a complete answer (`completion`: its JSON) under its entry (and its vector).
fn store(config: &Config, now: u64, pending: Pending, completion: &str) {
    let value = format!("{{\"at\":{now},\"completion\":{completion}}}");
    if value.len() > config.max_entry_bytes {
        return;
    }
    let ttl_s = config
        .exact
        .as_ref()
        .map(|e| e.ttl_s)
        .into_iter()
        .chain(config.semantic.as_ref().map(|s| s.ttl_s))
        .max()
        .unwrap_or(3600);
    if let Err(e) = kv::set(&pending.entry, value.as_bytes(), Some(ttl_s * 1000)) {
        weir_policy_sdk::emit(
            log::Level::Warn,
            &format!("cache: the answer could not be stored: {e:?}"),
        );
        return;
    }
    if let (Some((index, vector, text)), Some(s)) = (pending.semantic, &config.semantic) {
        let metadata = json!({"entry": pending.entry, "text": text}).to_string();
        if let Err(e) = vectors::upsert(
            &index,
            &pending.entry,
            &vector,
            metadata.as_bytes(),
            Some(s.ttl_s * 1000),
        ) {
            weir_policy_sdk::emit(
                log::Level::Warn,
                &format!("cache: the prompt's vector could not be stored: {e:?}"),
            );
        }
    }
}

/// Whether a (non-streamed) answer, its JSON, is complete and worth storing: read for its
/// choices' finish reasons only (the rest is checked to be JSON, not built into a tree).
fn storable(completion: &[u8]) -> bool {
    serde_json::from_slice::<Finished>(completion).is_ok_and(|answer| {
        !answer.choices.is_empty()
            && answer
                .choices
                .iter()
                .all(|c| c.finish_reason.as_deref().is_some_and(|f| f != "error"))
    })
}

fn cache_control(request: &Message) -> (bool, bool) {
    let value = request
        .header("cache-control")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let has = |d: &str| value.split(',').any(|t| t.trim() == d);
    (has("no-cache"), has("no-store"))
}

pub struct Cache;

impl Policy for Cache {
    type Config = Config;
    const NAME: &'static str = "cache";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const PHASES: &'static [Phase] = &[
        Phase::Request,
        Phase::Response,
        Phase::StreamChunk,
        Phase::Complete,
    ];

    fn check(config: &Config) -> Result<(), weir_policy_sdk::ConfigError> {
        config.check()
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        let Some(llm) = cx.llm() else {
            return Verdict::proceed();
        };
        if !config.endpoints.iter().any(|e| *e == cx.endpoint()) {
            return Verdict::proceed();
        }
        let layers: Vec<&str> = config
            .exact
            .as_ref()
            .map(|_| "exact")
            .into_iter()
            .chain(config.semantic.as_ref().map(|_| "semantic"))
            .collect();
        let (no_cache, no_store) = if config.honour_cache_control {
            cache_control(request)
        } else {
            (false, false)
        };
        if no_store {
            let usage: Vec<String> = layers.iter().map(|l| format!("{l}:bypass")).collect();
            cx.set_attribute(USAGE_ATTRIBUTE, &usage.join(" "));
            return Verdict::proceed();
        }
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body()) else {
            return Verdict::proceed();
        };
        let scope = scope(config, cx);
        let entry = format!("e:{}", key::exact(&scope, &body));
        let now = cx.received_at_ms();
        let mut usage: Vec<String> = Vec::new();
        if let Some(exact) = &config.exact {
            if no_cache {
                usage.push("exact:bypass".into());
            } else if let Some((completion, at)) =
                read_entry(&entry).filter(|(_, at)| now.saturating_sub(*at) <= exact.ttl_s * 1000)
            {
                cx.set_attribute(USAGE_ATTRIBUTE, "exact:hit");
                return hit(completion, at, now, "exact", None);
            } else {
                usage.push("exact:miss".into());
            }
        }
        let mut semantic = None;
        if let Some(s) = &config.semantic {
            match semantic_view(s, &scope, &body, llm.estimated_prompt_tokens) {
                None => usage.push("semantic:skip".into()),
                Some((index, text)) => {
                    match embeddings::embed(&s.provider, &s.model, std::slice::from_ref(&text)) {
                        Ok(mut vs) if vs.len() == 1 => {
                            let vector = vs.remove(0);
                            if no_cache {
                                usage.push("semantic:bypass".into());
                            } else if let Some((completion, at, score)) =
                                semantic_lookup(s, &index, &vector, &text)
                            {
                                usage.push(format!("semantic:hit:{score:.4}"));
                                cx.set_attribute(USAGE_ATTRIBUTE, &usage.join(" "));
                                return hit(completion, at, now, "semantic", Some(score));
                            } else {
                                usage.push("semantic:miss".into());
                            }
                            semantic = Some((index, vector, text));
                        }
                        other => {
                            // Fail open: the request goes on, uncached by meaning.
                            let why = match other {
                                Err(e) => format!("{e:?}"),
                                Ok(vs) => format!("{} vectors for one text", vs.len()),
                            };
                            weir_policy_sdk::emit(
                                log::Level::Warn,
                                &format!(
                                    "cache: embedding with provider `{}` failed, semantic layer skipped: {why}",
                                    s.provider
                                ),
                            );
                            usage.push("semantic:error".into());
                        }
                    }
                }
            }
        }
        cx.set_attribute(USAGE_ATTRIBUTE, &usage.join(" "));
        PENDING.with_borrow_mut(|p| {
            p.insert(
                pending_key(cx),
                Pending {
                    entry,
                    semantic,
                    text: String::new(),
                    finish: None,
                    unstorable: false,
                },
            );
        });
        Verdict::proceed()
    }

    fn on_response(config: &Config, cx: &Context, response: &Message) -> Verdict {
        let Some(pending) = PENDING.with_borrow_mut(|p| p.remove(&pending_key(cx))) else {
            return Verdict::proceed();
        };
        if !(200..300).contains(&response.status()) {
            return Verdict::proceed();
        }
        let body = response.body();
        if body.len() > config.max_entry_bytes {
            return Verdict::proceed();
        }
        if storable(&body)
            && let Ok(completion) = std::str::from_utf8(&body)
        {
            store(config, cx.received_at_ms(), pending, completion);
        }
        Verdict::proceed()
    }

    fn on_stream_chunk(config: &Config, cx: &Context, event: StreamEvent) -> ChunkVerdict {
        PENDING.with_borrow_mut(|p| {
            if let Some(pending) = p.get_mut(&pending_key(cx)) {
                if let Some(text) = &event.text {
                    pending.text.push_str(text);
                }
                if event.data.contains("\"tool_calls\"") || event.data.contains("\"refusal\":\"") {
                    pending.unstorable = true;
                }
                if pending.text.len() > config.max_entry_bytes {
                    pending.unstorable = true;
                    pending.text = String::new();
                }
                if let Some(f) = event.finish_reason {
                    pending.finish = Some(f);
                }
            }
        });
        ChunkVerdict::Pass
    }

    fn on_complete(config: &Config, cx: &Context, done: Completion) {
        let Some(pending) = PENDING.with_borrow_mut(|p| p.remove(&pending_key(cx))) else {
            return;
        };
        // Only a streamed answer is still pending here (on-response took the others); store it
        // when it was delivered whole.
        let Some(finish) = pending.finish.clone() else {
            return;
        };
        if done.outcome != Outcome::Success || pending.unstorable || finish == "error" {
            return;
        }
        let usage = done.usage.map(|u| {
            json!({
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            })
        });
        let model = done.model.or_else(|| cx.llm().and_then(|l| l.model));
        let mut completion = json!({
            "id": format!("chatcmpl-{}", cx.request_id()),
            "object": "chat.completion",
            "created": cx.received_at_ms() / 1000,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": pending.text},
                "finish_reason": finish,
            }],
        });
        if let Some(u) = usage {
            completion["usage"] = u;
        }
        store(
            config,
            cx.received_at_ms(),
            pending,
            &completion.to_string(),
        );
    }
}

/// The best stored answer whose prompt is close enough and passes the word check.
fn semantic_lookup(
    s: &config::Semantic,
    index: &str,
    vector: &[f32],
    text: &str,
) -> Option<(String, u64, f32)> {
    let neighbours = match vectors::query(index, vector, CANDIDATES, s.threshold) {
        Ok(n) => n,
        Err(e) => {
            weir_policy_sdk::emit(
                log::Level::Warn,
                &format!("cache: the vector index failed, semantic layer skipped: {e:?}"),
            );
            return None;
        }
    };
    let words = similar::Words::of(text);
    let check = similar::Check {
        substitution_score: s.substitution_score,
        refuse_additions: s.refuse_additions,
    };
    for n in neighbours {
        let Ok(meta) = serde_json::from_slice::<Value>(&n.metadata) else {
            continue;
        };
        let (Some(entry), Some(stored)) = (
            meta.get("entry").and_then(Value::as_str),
            meta.get("text").and_then(Value::as_str),
        ) else {
            continue;
        };
        if s.check_words
            && let Err(refusal) = check.same_question(&words, &similar::Words::of(stored), n.score)
        {
            count_refusal(refusal);
            continue;
        }
        if let Some((completion, at)) = read_entry(entry) {
            return Some((completion, at, n.score));
        }
    }
    None
}

weir_policy_sdk::export_policy!(Cache);
weir_policy_sdk::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    use super::storable;

    /// What is stored: an answer whose choices all finished, not in error; the answer is read
    /// for that only, but must be JSON throughout.
    #[test]
    fn only_finished_answers_are_stored() {
        let answer = |choices: &str| {
            format!(
                r#"{{"id":"x","object":"chat.completion","choices":{choices},"usage":{{"total_tokens":3}}}}"#
            )
        };
        let finished = r#"{"index":0,"message":{"role":"assistant","content":"a \"quoted\" word"},"finish_reason":"stop"}"#;
        assert!(storable(answer(&format!("[{finished}]")).as_bytes()));
        assert!(storable(
            answer(&format!(
                "[{finished},{}]",
                finished.replace("stop", "length")
            ))
            .as_bytes()
        ));
        assert!(storable(
            format!(" {} \n", answer(&format!("[{finished}]"))).as_bytes()
        ));
        for not in [
            answer("[]"),
            answer(r#"[{"index":0,"message":{}}]"#),
            answer(r#"[{"index":0,"finish_reason":null}]"#),
            answer(r#"[{"index":0,"finish_reason":"error"}]"#),
            answer(&format!(
                r#"[{finished},{{"index":1,"finish_reason":"error"}}]"#
            )),
            answer(r#"[{"index":0,"finish_reason":7}]"#),
            answer(r#"["stop"]"#),
            answer(r#"{"0":{"finish_reason":"stop"}}"#),
            r#"{"object":"chat.completion"}"#.to_owned(),
            format!("{}{{", answer(&format!("[{finished}]"))),
            answer(&format!("[{finished}]")).replace("\"usage\":{", "\"usage\":["),
            "[1,2]".to_owned(),
        ] {
            assert!(!storable(not.as_bytes()), "{not}");
        }
    }
}
