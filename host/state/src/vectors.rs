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

/// In-memory indexes, each bounded to `max_per_index` vectors.
#[derive(Debug)]
pub struct MemoryVectors {
    indexes: Mutex<HashMap<String, VectorIndex>>,
    max_per_index: usize,
    max_indexes: usize,
}

impl MemoryVectors {
    pub fn new(max_per_index: usize, max_indexes: usize) -> Self {
        Self {
            indexes: Mutex::new(HashMap::new()),
            max_per_index,
            max_indexes,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, VectorIndex>) -> T) -> T {
        let mut guard = self
            .indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

fn now_ms() -> u64 {
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
        let result = self.with(|indexes| {
            if !indexes.contains_key(index) && indexes.len() >= self.max_indexes {
                let now = now_ms();
                indexes.retain(|_, ix| {
                    ix.expire(now);
                    !ix.is_empty()
                });
                if indexes.len() >= self.max_indexes {
                    return Err(KvError::Unavailable(format!(
                        "the vector store holds its maximum of {} indexes",
                        self.max_indexes
                    )));
                }
            }
            indexes
                .entry(index.to_owned())
                .or_default()
                .upsert(
                    id,
                    &vector,
                    metadata,
                    ttl.map(|t| t.as_millis() as u64),
                    now_ms(),
                    self.max_per_index,
                )
                .map_err(KvError::Invalid)
        });
        async move { result }.boxed()
    }

    fn query<'a>(
        &'a self,
        index: &'a str,
        vector: Vec<f32>,
        limit: usize,
        min_score: f32,
    ) -> BoxFuture<'a, Result<Vec<Neighbour>, KvError>> {
        let result = self.with(|indexes| match indexes.get(index) {
            Some(ix) => ix
                .query(&vector, limit, min_score, now_ms())
                .map_err(KvError::Invalid),
            None => Ok(Vec::new()),
        });
        async move { result }.boxed()
    }

    fn delete<'a>(&'a self, index: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), KvError>> {
        self.with(|indexes| {
            if let Some(ix) = indexes.get_mut(index) {
                ix.delete(id);
            }
        });
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
