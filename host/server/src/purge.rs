//! `POST /cache/purge?proxy=<name>[&consumer=<id>]` on the admin listener: forgets a proxy's
//! cached answers, or one consumer's. The `cache` policy scopes its keys by generation counters
//! in its own key-value namespace (`gen`, and `gen:c:<consumer>`; see components/cache); a purge
//! increments them, so entries of the older generation are never read again, on every replica
//! sharing the store, and expire with their TTL. O(1) on every backend, no key scans.

use std::sync::Arc;

use serde::Serialize;
use weir_config::GatewayConfig;
use weir_state::{KvError, KvStore, Namespaced};

/// One cache instance purged.
#[derive(Debug, Serialize)]
pub(crate) struct Purged {
    /// The chain entry (`proxies[0].policies[1]`).
    pub policy: String,
    /// The generation now in use.
    pub generation: i64,
}

/// Why a purge did not happen.
#[derive(Debug)]
pub(crate) enum PurgeError {
    /// No such proxy, or it has no cache.
    NotFound(String),
    Store(KvError),
}

/// Purges the cache entries of `proxy` (of one `consumer`, when given).
pub(crate) async fn purge(
    config: &GatewayConfig,
    kv: &Arc<dyn KvStore>,
    proxy: &str,
    consumer: Option<&str>,
) -> Result<Vec<Purged>, PurgeError> {
    let Some(index) = config.proxies.iter().position(|p| p.name == proxy) else {
        return Err(PurgeError::NotFound(format!(
            "no proxy `{proxy}`: name one of the configuration's proxies"
        )));
    };
    let key = match consumer {
        Some(c) => format!("gen:c:{c}"),
        None => "gen".to_owned(),
    };
    let mut out = Vec::new();
    for entry in config.chain(index) {
        if entry.policy.policy != "cache" {
            continue;
        }
        let store = Namespaced::new(kv.clone(), &entry.namespace);
        let generation = store
            .increment(&key, 1, None)
            .await
            .map_err(PurgeError::Store)?;
        out.push(Purged {
            policy: entry.path,
            generation,
        });
    }
    if out.is_empty() {
        return Err(PurgeError::NotFound(format!(
            "proxy `{proxy}` has no cache policy in its chain"
        )));
    }
    Ok(out)
}
