//! Vector indexes shared by replicas through Redis, with no search module: Redis holds each
//! index's changes as a stream, and every replica keeps its own in-memory index
//! ([`MemoryVectors`]) in step with it.
//!
//! - `upsert` and `delete` append an entry (`XADD`) to the stream `<prefix>vectors:<index>`
//!   (id, vector as little-endian `f32`s, metadata, absolute expiry); the stream is capped
//!   (`MAXLEN ~`) at twice the per-index bound and expires (`PEXPIRE`) with its longest-lived
//!   vector, so an index nobody writes to disappears.
//! - `query` first reads what was appended since this replica last looked (`XRANGE` from its
//!   cursor, one round trip, usually empty) and applies it, then searches in memory. A vector
//!   written through one replica is found by the next query on any replica.
//!
//! Applying an entry twice is harmless (an upsert replaces, a delete of nothing is nothing), so
//! a replica's own writes are applied at once and again when read back. A replica that starts
//! (or reconnects after the cap dropped entries it had not read) reads what the stream still
//! holds: the newest vectors, the ones the per-index bound keeps anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use redis::Value;

use crate::redis::{Link, RedisOptions};
use crate::vectors::{MemoryVectors, VectorStore, now_ms};
use crate::{KvError, Neighbour};

/// Stream entries read per round trip while catching up.
const BATCH: usize = 2000;

/// A [`VectorStore`] whose indexes every replica sharing the Redis sees.
pub struct RedisVectors {
    link: Link,
    prefix: String,
    local: MemoryVectors,
    max_per_index: usize,
    /// Per index: the id of the last stream entry applied, behind its own lock (one catch-up
    /// per index at a time; other indexes are not held up).
    cursors: Mutex<HashMap<String, Arc<tokio::sync::Mutex<String>>>>,
    append: redis::Script,
}

impl std::fmt::Debug for RedisVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisVectors")
            .field("url", &self.link.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// One change read from a stream.
enum Change {
    Upsert {
        id: String,
        vector: Vec<f32>,
        metadata: Vec<u8>,
        expires_at_ms: Option<u64>,
    },
    Delete {
        id: String,
    },
}

/// The entries of an `XRANGE` reply: (stream id, change), skipping what cannot be read.
fn parse_range(reply: &Value) -> Vec<(String, Option<Change>)> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let (Some(id), Some(Value::Array(fields))) =
            (parts.first().and_then(bytes_of), parts.get(1))
        else {
            continue;
        };
        let mut map: HashMap<&[u8], &[u8]> = HashMap::new();
        for pair in fields.chunks_exact(2) {
            if let (Some(k), Some(v)) = (bytes_of(&pair[0]), bytes_of(&pair[1])) {
                map.insert(k, v);
            }
        }
        let change = (|| {
            let vid = String::from_utf8(map.get(&b"id"[..])?.to_vec()).ok()?;
            match *map.get(&b"op"[..])? {
                b"d" => Some(Change::Delete { id: vid }),
                b"u" => {
                    let raw = map.get(&b"v"[..])?;
                    if raw.len() % 4 != 0 {
                        return None;
                    }
                    let vector = raw
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    let x: u64 = std::str::from_utf8(map.get(&b"x"[..])?)
                        .ok()?
                        .parse()
                        .ok()?;
                    Some(Change::Upsert {
                        id: vid,
                        vector,
                        metadata: map.get(&b"m"[..])?.to_vec(),
                        expires_at_ms: (x != 0).then_some(x),
                    })
                }
                _ => None,
            }
        })();
        out.push((String::from_utf8_lossy(id).into_owned(), change));
    }
    out
}

impl RedisVectors {
    /// Connects to the Redis of `options`; `local` bounds this replica's in-memory copy.
    pub async fn connect(
        options: &RedisOptions,
        local: MemoryVectors,
        max_per_index: usize,
    ) -> Result<Self, KvError> {
        let link = Link::open(options, Duration::from_millis(250), 2).await?;
        Ok(Self {
            link,
            prefix: options.prefix.clone(),
            local,
            max_per_index,
            cursors: Mutex::new(HashMap::new()),
            append: redis::Script::new(APPEND),
        })
    }

    fn key(&self, index: &str) -> String {
        format!("{}vectors:{index}", self.prefix)
    }

    fn cursor(&self, index: &str) -> Arc<tokio::sync::Mutex<String>> {
        self.cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(index.to_owned())
            .or_default()
            .clone()
    }

    /// Applies what was appended to `index` since this replica last read it.
    async fn catch_up(&self, index: &str) -> Result<(), KvError> {
        let cursor = self.cursor(index);
        let mut last = cursor.lock().await;
        loop {
            let start = if last.is_empty() {
                "-".to_owned()
            } else {
                format!("({last}")
            };
            let mut conn = self.link.conn.clone();
            let reply: Value = self
                .link
                .timed(
                    redis::cmd("XRANGE")
                        .arg(self.key(index))
                        .arg(start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(BATCH)
                        .query_async(&mut conn),
                )
                .await?;
            let entries = parse_range(&reply);
            let n = entries.len();
            for (id, change) in entries {
                match change {
                    Some(Change::Upsert {
                        id,
                        vector,
                        metadata,
                        expires_at_ms,
                    }) => {
                        // A vector the local bounds refuse is skipped, not fatal to the rest.
                        let _ = self.local.put(index, &id, &vector, metadata, expires_at_ms);
                    }
                    Some(Change::Delete { id }) => self.local.remove(index, &id),
                    None => {}
                }
                *last = id;
            }
            if n < BATCH {
                return Ok(());
            }
        }
    }

    async fn append(
        &self,
        index: &str,
        fields: Vec<(&'static str, Vec<u8>)>,
        expiry: Expiry,
    ) -> Result<(), KvError> {
        let mut invocation = self.append.key(self.key(index));
        invocation
            .arg(self.max_per_index.saturating_mul(2).max(16))
            .arg(match expiry {
                Expiry::Keep => "keep".to_owned(),
                Expiry::Persist => "persist".to_owned(),
                Expiry::After(t) => (t.as_millis().max(1) as u64).to_string(),
            });
        for (k, v) in fields {
            invocation.arg(k).arg(v);
        }
        let mut conn = self.link.conn.clone();
        self.link
            .timed(invocation.invoke_async::<()>(&mut conn))
            .await
    }
}

/// What an append does to the stream's expiry.
enum Expiry {
    /// Leave it (a delete).
    Keep,
    /// A vector that never expires: neither does the stream.
    Persist,
    /// The stream lives at least this long (longer if it already does).
    After(Duration),
}

/// `XADD` capped at `ARGV[1]` entries, then the stream's expiry per `ARGV[2]` (`keep`,
/// `persist`, or milliseconds: set when the stream is new or would expire sooner).
const APPEND: &str = r"
local key = KEYS[1]
local args = {'XADD', key, 'MAXLEN', '~', ARGV[1], '*'}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
redis.call(unpack(args))
if ARGV[2] == 'persist' then
  redis.call('PERSIST', key)
elseif ARGV[2] ~= 'keep' then
  local ttl = redis.call('PTTL', key)
  if (ttl == -1 and redis.call('XLEN', key) == 1) or (ttl >= 0 and ttl < tonumber(ARGV[2])) then
    redis.call('PEXPIRE', key, ARGV[2])
  end
end
return 1
";

impl VectorStore for RedisVectors {
    fn upsert<'a>(
        &'a self,
        index: &'a str,
        id: &'a str,
        vector: Vec<f32>,
        metadata: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        async move {
            let expires = ttl.map(|t| now_ms().saturating_add(t.as_millis() as u64));
            // Checked (dimensions, size) and applied here first, so a bad vector is refused
            // before it reaches the other replicas.
            self.local
                .put(index, id, &vector, metadata.clone(), expires)?;
            let raw: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.append(
                index,
                vec![
                    ("op", b"u".to_vec()),
                    ("id", id.as_bytes().to_vec()),
                    ("v", raw),
                    ("m", metadata),
                    ("x", expires.unwrap_or(0).to_string().into_bytes()),
                ],
                ttl.map_or(Expiry::Persist, Expiry::After),
            )
            .await
        }
        .boxed()
    }

    fn query<'a>(
        &'a self,
        index: &'a str,
        vector: Vec<f32>,
        limit: usize,
        min_score: f32,
    ) -> BoxFuture<'a, Result<Vec<Neighbour>, KvError>> {
        async move {
            self.catch_up(index).await?;
            self.local.query(index, vector, limit, min_score).await
        }
        .boxed()
    }

    fn delete<'a>(&'a self, index: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), KvError>> {
        async move {
            self.local.remove(index, id);
            self.append(
                index,
                vec![("op", b"d".to_vec()), ("id", id.as_bytes().to_vec())],
                Expiry::Keep,
            )
            .await
        }
        .boxed()
    }
}
