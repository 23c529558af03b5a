//! The cache's configuration, with checks that name the field that is wrong.

use serde::Deserialize;
use weir_policy_sdk::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The exact layer; on by default, `null` turns it off.
    #[serde(default = "default_exact")]
    pub exact: Option<Exact>,
    /// The semantic layer; off unless configured.
    #[serde(default)]
    pub semantic: Option<Semantic>,
    /// Who shares entries: `consumer` (default: each authenticated consumer has its own) or
    /// `proxy` (every consumer of the proxy). Sharing across proxies: give the chain entries
    /// one `kv-namespace`.
    #[serde(default)]
    pub share: Share,
    /// Whether the client's `cache-control: no-cache` (do not answer from the cache) and
    /// `no-store` (neither answer from nor store in it) are honoured.
    #[serde(default = "yes")]
    pub honour_cache_control: bool,
    /// The proxy endpoints that are cached.
    #[serde(default = "chat_endpoints")]
    pub endpoints: Vec<String>,
    /// Larger answers are not stored.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Share {
    #[default]
    Consumer,
    Proxy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Exact {
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Semantic {
    /// A provider of the gateway configuration with an OpenAI-compatible embeddings endpoint.
    pub provider: String,
    /// The embedding model to ask it for.
    pub model: String,
    /// The least cosine similarity of a candidate.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// The similarity from which a prompt with one content word swapped for another may still
    /// be the same question (see `similar.rs`); the default, 1.01, never allows it.
    #[serde(default = "default_substitution_score")]
    pub substitution_score: f32,
    /// Whether the word check runs after the nearest-neighbour lookup (turn it off only with a
    /// model that separates near misses by itself).
    #[serde(default = "yes")]
    pub check_words: bool,
    /// Stricter word check: a prompt that only adds content words to the stored one ("cancel my
    /// order *and get a refund*") is another question. Fewer false hits and fewer hits.
    #[serde(default)]
    pub refuse_additions: bool,
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// How many of the last messages (of the roles in `roles`) are embedded.
    #[serde(default = "one")]
    pub messages: usize,
    /// The roles of the messages that are embedded; the others must be equal for a hit unless
    /// listed in `ignore-roles`.
    #[serde(default = "user_role")]
    pub roles: Vec<String>,
    /// Roles whose messages neither are embedded nor must match (e.g. `assistant`, `tool`
    /// for a cache that ignores earlier answers, as Kong's does). System messages match
    /// exactly unless listed here.
    #[serde(default)]
    pub ignore_roles: Vec<String>,
    /// Requests with more user messages than this skip the semantic layer (multi-turn
    /// conversations are where false hits are likeliest).
    #[serde(default = "one")]
    pub max_turns: usize,
    /// Requests with a larger estimated prompt skip the semantic layer.
    #[serde(default = "default_max_prompt_tokens")]
    pub max_prompt_tokens: u64,
}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
const CACHEABLE: [&str; 2] = ["chat/completions", "messages"];

fn default_exact() -> Option<Exact> {
    Some(Exact {
        ttl_s: default_ttl_s(),
    })
}
fn default_ttl_s() -> u64 {
    3600
}
fn default_threshold() -> f32 {
    0.9
}
fn default_substitution_score() -> f32 {
    // Never: a swapped content word is a different question, however close the embeddings.
    1.01
}
fn default_max_prompt_tokens() -> u64 {
    2000
}
fn default_max_entry_bytes() -> usize {
    1 << 20
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn user_role() -> Vec<String> {
    vec!["user".into()]
}
fn chat_endpoints() -> Vec<String> {
    CACHEABLE.iter().map(|e| (*e).to_owned()).collect()
}

/// The longest TTL accepted (30 days).
const MAX_TTL_S: u64 = 30 * 24 * 3600;

fn ttl(path: &str, ttl_s: u64) -> Result<(), ConfigError> {
    if ttl_s == 0 || ttl_s > MAX_TTL_S {
        return Err(ConfigError::at(
            path,
            format!("a TTL is 1 to {MAX_TTL_S} seconds (30 days), not {ttl_s}"),
        ));
    }
    Ok(())
}

impl Config {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.exact.is_none() && self.semantic.is_none() {
            return Err(ConfigError::at(
                "exact",
                "both layers are off: keep `exact` (it is on by default) or configure `semantic`",
            ));
        }
        if let Some(e) = &self.exact {
            ttl("exact.ttl-s", e.ttl_s)?;
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if !CACHEABLE.contains(&e.as_str()) {
                return Err(ConfigError::at(
                    format!("endpoints[{i}]"),
                    format!("`{e}` cannot be cached; use {}", CACHEABLE.join(" or ")),
                ));
            }
        }
        if self.max_entry_bytes < 1024 || self.max_entry_bytes > 16 << 20 {
            return Err(ConfigError::at(
                "max-entry-bytes",
                "use 1024 to 16777216 bytes",
            ));
        }
        if let Some(s) = &self.semantic {
            s.check()?;
        }
        Ok(())
    }
}

impl Semantic {
    fn check(&self) -> Result<(), ConfigError> {
        if self.provider.is_empty() {
            return Err(ConfigError::at(
                "semantic.provider",
                "name a provider of the gateway configuration that has an embeddings endpoint",
            ));
        }
        if self.model.is_empty() {
            return Err(ConfigError::at(
                "semantic.model",
                "name the embedding model",
            ));
        }
        if !(0.5..=1.0).contains(&self.threshold) {
            return Err(ConfigError::at(
                "semantic.threshold",
                format!(
                    "a cosine similarity threshold is 0.5 to 1.0, not {} (0.9 is a good start)",
                    self.threshold
                ),
            ));
        }
        if !(0.5..=1.01).contains(&self.substitution_score) {
            return Err(ConfigError::at(
                "semantic.substitution-score",
                "use 0.5 to 1.01 (1.01: a substituted content word is never a hit)",
            ));
        }
        ttl("semantic.ttl-s", self.ttl_s)?;
        if self.messages == 0 || self.messages > 32 {
            return Err(ConfigError::at(
                "semantic.messages",
                "embed 1 to 32 messages",
            ));
        }
        if self.max_turns == 0 {
            return Err(ConfigError::at("semantic.max-turns", "at least 1"));
        }
        for (field, roles) in [("roles", &self.roles), ("ignore-roles", &self.ignore_roles)] {
            for (i, r) in roles.iter().enumerate() {
                if !ROLES.contains(&r.as_str()) {
                    return Err(ConfigError::at(
                        format!("semantic.{field}[{i}]"),
                        format!("unknown role `{r}`; use {}", ROLES.join(", ")),
                    ));
                }
            }
        }
        if self.roles.is_empty() {
            return Err(ConfigError::at("semantic.roles", "embed at least one role"));
        }
        if let Some((i, r)) = self
            .ignore_roles
            .iter()
            .enumerate()
            .find(|(_, r)| self.roles.contains(r))
        {
            return Err(ConfigError::at(
                format!("semantic.ignore-roles[{i}]"),
                format!("`{r}` is embedded (in `roles`); it cannot also be ignored"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        let c: Config =
            serde_json::from_str(json).map_err(|e| ConfigError::at("", e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_errors_name_the_field() {
        let c = parse("{}").unwrap();
        assert_eq!(c.exact.as_ref().unwrap().ttl_s, 3600);
        assert!(c.semantic.is_none());
        assert_eq!(c.share, Share::Consumer);
        assert_eq!(parse(r#"{"exact": null}"#).unwrap_err().path, "exact");
        assert_eq!(
            parse(r#"{"exact": {"ttl-s": 0}}"#).unwrap_err().path,
            "exact.ttl-s"
        );
        assert_eq!(
            parse(r#"{"endpoints": ["embeddings"]}"#).unwrap_err().path,
            "endpoints[0]"
        );
        let sem = |extra: &str| {
            parse(&format!(
                r#"{{"semantic": {{"provider": "p", "model": "m"{extra}}}}}"#
            ))
        };
        assert!(sem("").is_ok());
        assert_eq!(
            sem(r#", "threshold": 1.5"#).unwrap_err().path,
            "semantic.threshold"
        );
        assert_eq!(
            sem(r#", "roles": ["robot"]"#).unwrap_err().path,
            "semantic.roles[0]"
        );
        assert_eq!(
            sem(r#", "ignore-roles": ["user"]"#).unwrap_err().path,
            "semantic.ignore-roles[0]"
        );
    }
}
