//! Vector indexes for `weir:policy/vectors`, behind one trait like the key-value store. The
//! semantics (cosine similarity, expiry, eviction when full) are weir-core's
//! [`VectorIndex`](weir_core::vectors::VectorIndex), the same as at the edge.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, FutureExt};
use weir_core::vectors::{Neighbour, VectorIndex};

use crate::KvError;

/// Vector indexes by name (names are namespaced by the caller).
pub trait VectorStore: Send + Sync + std::fmt::Debug + 'static {
    /// Adds or replaces a vector.
    fn upsert<'a>(
        &'a self,
        index: &'a str,
        id: &'a str,
        vector: Vec<f32>,
        metadata: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>>;
    /// The nearest vectors with a similarity of at least `min_score`, best first.
    fn query<'a>(
        &'a self,
        index: &'a str,
        vector: Vec<f32>,
        limit: usize,
        min_score: f32,
    ) -> BoxFuture<'a, Result<Vec<Neighbour>, KvError>>;
    /// Removes a vector.
    fn delete<'a>(&'a self, index: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), KvError>>;
}

/// In-memory indexes, each bounded to `max_per_index` vectors, all of them to `max_bytes`.
#[derive(Debug)]
pub struct MemoryVectors {
    indexes: Mutex<Indexes>,
    max_per_index: usize,
    max_indexes: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Indexes {
    by_name: HashMap<String, VectorIndex>,
    /// The sum of the indexes' [`VectorIndex::bytes`].
    bytes: usize,
}

impl MemoryVectors {
    /// Unbounded in bytes (see [`MemoryVectors::bounded`]).
    pub fn new(max_per_index: usize, max_indexes: usize) -> Self {
        Self::bounded(max_per_index, max_indexes, usize::MAX)
    }

    /// With a bound on the memory all indexes hold: past it, an upsert makes room in its own
    /// index (the vector that expires first goes), or fails when its index is empty.
    pub fn bounded(max_per_index: usize, max_indexes: usize, max_bytes: usize) -> Self {
        Self {
            indexes: Mutex::new(Indexes::default()),
            max_per_index,
            max_indexes,
            max_bytes,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Indexes) -> T) -> T {
        let mut guard = self
            .indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Removes a vector (nothing if absent).
    pub(crate) fn remove(&self, index: &str, id: &str) {
        self.with(|indexes| {
            if let Some(ix) = indexes.by_name.get_mut(index) {
                let before = ix.bytes();
                ix.delete(id);
                indexes.bytes = indexes.bytes - before + ix.bytes();
            }
        });
    }

    /// Adds or replaces a vector with an absolute expiry (what the Redis mirror replays).
    pub(crate) fn put(
        &self,
        index: &str,
        id: &str,
        vector: &[f32],
        metadata: Vec<u8>,
        expires_at_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let now = now_ms();
        if expires_at_ms.is_some_and(|t| t <= now) {
            return Ok(());
        }
        self.with(|ix| {
            if !ix.by_name.contains_key(index) && ix.by_name.len() >= self.max_indexes {
                ix.by_name.retain(|_, i| {
                    i.expire(now);
                    !i.is_empty()
                });
                ix.bytes = ix.by_name.values().map(VectorIndex::bytes).sum();
                if ix.by_name.len() >= self.max_indexes {
                    return Err(KvError::Unavailable(format!(
                        "the vector store holds its maximum of {} indexes",
                        self.max_indexes
                    )));
                }
            }
            let Indexes { by_name, bytes } = ix;
            let entry = by_name.entry(index.to_owned()).or_default();
            let before = entry.bytes();
            let result = entry
                .upsert(
                    id,
                    vector,
                    metadata,
                    expires_at_ms.map(|t| t - now),
                    now,
                    self.max_per_index,
                )
                .map_err(KvError::Invalid);
            // Over the memory bound: this index gives up what expires first.
            while *bytes - before + entry.bytes() > self.max_bytes && entry.len() > 1 {
                entry.evict_one(now);
            }
            let after = entry.bytes();
            *bytes = *bytes - before + after;
            if *bytes > self.max_bytes {
                entry.delete(id);
                *bytes = *bytes - after + entry.bytes();
                return Err(KvError::Unavailable(format!(
                    "the vector store holds its maximum of {} MiB",
                    self.max_bytes >> 20
                )));
            }
            result
        })
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl VectorStore for MemoryVectors {
    fn upsert<'a>(
        &'a self,
        index: &'a str,
        id: &'a str,
        vector: Vec<f32>,
        metadata: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        let expires = ttl.map(|t| now_ms().saturating_add(t.as_millis() as u64));
        let result = self.put(index, id, &vector, metadata, expires);
        async move { result }.boxed()
    }

    fn query<'a>(
        &'a self,
        index: &'a str,
        vector: Vec<f32>,
        limit: usize,
        min_score: f32,
    ) -> BoxFuture<'a, Result<Vec<Neighbour>, KvError>> {
        let result = self.with(|indexes| match indexes.by_name.get(index) {
            Some(ix) => ix
                .query(&vector, limit, min_score, now_ms())
                .map_err(KvError::Invalid),
            None => Ok(Vec::new()),
        });
        async move { result }.boxed()
    }

    fn delete<'a>(&'a self, index: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), KvError>> {
        self.remove(index, id);
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn indexes_are_separate_and_bounded() {
        let v = MemoryVectors::new(2, 1);
        v.upsert("a", "1", vec![1.0, 0.0], b"one".to_vec(), None)
            .await
            .unwrap();
        assert!(
            v.upsert("b", "1", vec![1.0, 0.0], vec![], None)
                .await
                .is_err()
        );
        assert!(
            v.query("b", vec![1.0, 0.0], 1, 0.0)
                .await
                .unwrap()
                .is_empty()
        );
        let hits = v.query("a", vec![1.0, 0.1], 1, 0.9).await.unwrap();
        assert_eq!(hits[0].metadata, b"one");
        v.delete("a", "1").await.unwrap();
        assert!(
            v.query("a", vec![1.0, 0.0], 1, 0.0)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
