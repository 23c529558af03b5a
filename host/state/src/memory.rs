//! The embedded in-memory backend.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};

use crate::{KvError, KvStore};

const SHARDS: usize = 32;

#[derive(Debug)]
enum Value {
    Bytes(Vec<u8>),
    Int(i64),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Entry>,
}

/// Sharded in-memory store with TTL eviction and a bound on the number of entries.
///
/// Expired entries are removed lazily on access and swept from a shard whenever it is full; when
/// a shard is still full after the sweep, the eighth of its entries closest to expiry (those
/// without an expiry last) are evicted.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl MemoryStore {
    /// A store holding at most about `max_entries` keys.
    pub fn new(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    /// Number of live entries (for metrics and tests).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.shards
            .iter()
            .map(|s| lock(s).map.values().filter(|e| e.live(now)).count())
            .sum()
    }

    /// True when no live entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        // FNV-1a: cheap and good enough to spread keys over shards.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h % SHARDS as u64) as usize]
    }

    fn with_shard<R>(&self, key: &str, f: impl FnOnce(&mut Shard, Instant) -> R) -> R {
        let mut shard = lock(self.shard(key));
        f(&mut shard, Instant::now())
    }

    fn make_room(&self, shard: &mut Shard, key: &str, now: Instant) {
        if shard.map.len() < self.per_shard || shard.map.contains_key(key) {
            return;
        }
        shard.map.retain(|_, e| e.live(now));
        // Still full: evict the eighth of the shard closest to expiry (entries without one
        // last). Evicting one entry per insert would scan the whole shard on every insert of a
        // store at its bound (a cache that keeps missing): ~30 000 entries per shard under its
        // lock with the default bound.
        if shard.map.len() >= self.per_shard {
            let keep = self.per_shard - (self.per_shard / 8).max(1);
            let evict = shard.map.len() - keep;
            let never = now + Duration::from_secs(u64::from(u32::MAX));
            let mut by_expiry: Vec<(Instant, &String)> = shard
                .map
                .iter()
                .map(|(k, e)| (e.expires_at.unwrap_or(never), k))
                .collect();
            by_expiry.select_nth_unstable_by_key(evict - 1, |(t, _)| *t);
            let victims: Vec<String> = by_expiry[..evict]
                .iter()
                .map(|(_, k)| (*k).clone())
                .collect();
            for victim in victims {
                shard.map.remove(&victim);
            }
        }
    }

    fn get_now(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.with_shard(key, |shard, now| match shard.map.get(key) {
            Some(e) if e.live(now) => Ok(Some(match &e.value {
                Value::Bytes(b) => b.clone(),
                Value::Int(i) => i.to_string().into_bytes(),
            })),
            Some(_) => {
                shard.map.remove(key);
                Ok(None)
            }
            None => Ok(None),
        })
    }

    fn set_now(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) {
        self.with_shard(key, |shard, now| {
            self.make_room(shard, key, now);
            shard.map.insert(
                key.to_owned(),
                Entry {
                    value: Value::Bytes(value),
                    expires_at: ttl.map(|t| now + t),
                },
            );
        });
    }

    fn increment_now(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        self.with_shard(key, |shard, now| {
            if let Some(e) = shard.map.get_mut(key)
                && e.live(now)
            {
                let current = match &e.value {
                    Value::Int(i) => *i,
                    Value::Bytes(b) => std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .ok_or_else(|| {
                            KvError::Invalid(format!("value at `{key}` is not an integer"))
                        })?,
                };
                let next = current.saturating_add(delta);
                e.value = Value::Int(next);
                return Ok(next);
            }
            self.make_room(shard, key, now);
            shard.map.insert(
                key.to_owned(),
                Entry {
                    value: Value::Int(delta),
                    expires_at: ttl.map(|t| now + t),
                },
            );
            Ok(delta)
        })
    }
}

fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // A panic while holding the lock cannot leave a shard half-updated (single map operations).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KvStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>> {
        std::future::ready(self.get_now(key)).boxed()
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        self.set_now(key, value, ttl);
        std::future::ready(Ok(())).boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), KvError>> {
        self.with_shard(key, |shard, _| shard.map.remove(key));
        std::future::ready(Ok(())).boxed()
    }

    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, KvError>> {
        std::future::ready(self.increment_now(key, delta, ttl)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_expire() {
        let kv = MemoryStore::new(10);
        kv.set("a", b"1".to_vec(), Some(Duration::from_millis(30)))
            .await
            .unwrap();
        kv.set("b", b"2".to_vec(), None).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), Some(b"1".to_vec()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(kv.get("a").await.unwrap(), None);
        assert_eq!(kv.get("b").await.unwrap(), Some(b"2".to_vec()));
    }

    #[tokio::test]
    async fn increment_keeps_the_first_expiry() {
        let kv = MemoryStore::new(10);
        assert_eq!(
            kv.increment("c", 5, Some(Duration::from_millis(30)))
                .await
                .unwrap(),
            5
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            kv.increment("c", -2, Some(Duration::from_secs(60)))
                .await
                .unwrap(),
            3
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Expired at 30 ms despite the second call's longer TTL: starts again from 0.
        assert_eq!(kv.increment("c", 1, None).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn increment_of_text_is_invalid() {
        let kv = MemoryStore::new(10);
        kv.set("t", b"hello".to_vec(), None).await.unwrap();
        assert!(matches!(
            kv.increment("t", 1, None).await,
            Err(KvError::Invalid(_))
        ));
        kv.set("n", b"41".to_vec(), None).await.unwrap();
        assert_eq!(kv.increment("n", 1, None).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn size_is_bounded() {
        let kv = MemoryStore::new(64);
        for i in 0..10_000 {
            kv.set(&format!("k{i}"), vec![0; 8], None).await.unwrap();
        }
        assert!(kv.len() <= 64, "{} entries", kv.len());
    }

    #[tokio::test]
    async fn a_full_store_evicts_what_expires_first() {
        // 32 entries per shard; 200 that never expire (about 6 per shard), then 40 000 with
        // later and later expiries: every shard fills and evicts many times.
        let kv = MemoryStore::new(32 * SHARDS);
        for i in 0..200 {
            kv.set(&format!("forever{i}"), vec![1], None).await.unwrap();
        }
        for i in 0..40_000 {
            let ttl = Duration::from_secs(60 + i);
            kv.set(&format!("k{i}"), vec![0; 8], Some(ttl))
                .await
                .unwrap();
        }
        let len = kv.len();
        assert!((28 * SHARDS..=32 * SHARDS).contains(&len), "{len} entries");
        for i in 0..200 {
            assert!(
                kv.get_now(&format!("forever{i}")).unwrap().is_some(),
                "forever{i} was evicted"
            );
        }
        assert!(
            kv.get_now("k39999").unwrap().is_some(),
            "the newest entry was evicted"
        );
        let oldest = (0..1000)
            .filter(|i| kv.get_now(&format!("k{i}")).unwrap().is_some())
            .count();
        assert_eq!(oldest, 0, "entries closest to expiry are evicted first");
    }

    #[test]
    fn concurrent_increments_are_exact() {
        let kv = std::sync::Arc::new(MemoryStore::new(10));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.increment_now("n", 1, None).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(kv.increment_now("n", 0, None).unwrap(), 8000);
    }
}
