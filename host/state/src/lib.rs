//! Key-value state for policies, behind one trait.
//!
//! Policies reach state only through the `weir:policy/kv` interface; the runtime maps each call
//! onto a [`KvStore`] with the key prefixed by the policy instance's namespace (see
//! [`Namespaced`]), so one policy can never read another's keys. Backends:
//!
//! - [`MemoryStore`]: the default, embedded, sharded, with TTL eviction and a bound on entries.
//! - Redis (later): several replicas share limits and caches.
//!
//! Every operation returns a boxed future so that network-backed stores fit the same trait.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use weir_state::{KvStore, MemoryStore};
//! let kv = MemoryStore::new(10_000);
//! assert_eq!(kv.increment("rpm", 1, Some(std::time::Duration::from_secs(60))).await.unwrap(), 1);
//! assert_eq!(kv.increment("rpm", 1, Some(std::time::Duration::from_secs(60))).await.unwrap(), 2);
//! # }
//! ```
#![forbid(unsafe_code)]

mod memory;
mod redis;
mod redis_vectors;
mod shared;
mod totals;
mod vectors;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};
pub use redis_vectors::RedisVectors;
pub use shared::SharedDocument;
pub use totals::{Amount, SharedTotals};
pub use vectors::{MemoryVectors, VectorStore};
pub use weir_core::vectors::Neighbour;

/// Why a key-value operation failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The backend could not be reached or timed out; the operation may not have happened.
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// The operation is invalid for the stored value (e.g. increment of a non-integer).
    #[error("invalid key-value operation: {0}")]
    Invalid(String),
}

/// A key-value store shared by all worker threads (and, for networked backends, by replicas).
pub trait KvStore: Send + Sync + std::fmt::Debug + 'static {
    /// Reads a value; `None` if absent or expired.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>>;
    /// Writes a value with an optional time to live.
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>>;
    /// Removes a key.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), KvError>>;
    /// Atomically adds `delta` to the integer at `key` (absent = 0) and returns the new value.
    /// A key created by this call expires after `ttl`; an existing key keeps its expiry.
    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, KvError>>;
}

/// A view of a store in which every key is prefixed by a namespace (one per policy instance).
#[derive(Debug, Clone)]
pub struct Namespaced {
    store: Arc<dyn KvStore>,
    prefix: Arc<str>,
}

impl Namespaced {
    /// Keys become [`weir_core::isolation::kv_key`]`(namespace, key)`, as on every target.
    pub fn new(store: Arc<dyn KvStore>, namespace: &str) -> Self {
        Self {
            store,
            prefix: namespace.into(),
        }
    }

    fn key(&self, key: &str) -> String {
        weir_core::isolation::kv_key(&self.prefix, key)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store.get(&self.key(key)).await
    }

    pub async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        self.store.set(&self.key(key), value, ttl).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store.delete(&self.key(key)).await
    }

    pub async fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        self.store.increment(&self.key(key), delta, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn namespaces_do_not_see_each_other() {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new(100));
        let a = Namespaced::new(store.clone(), "proxy:p/auth");
        let b = Namespaced::new(store.clone(), "proxy:p/token-limit");
        a.set("k", b"secret".to_vec(), None).await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), None);
        assert_eq!(a.get("k").await.unwrap(), Some(b"secret".to_vec()));
        assert_eq!(
            store.get("proxy:p/auth|k").await.unwrap(),
            Some(b"secret".to_vec()),
            "the key layout is weir-core's, the same as at the edge"
        );
    }
}
