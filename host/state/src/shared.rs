//! One versioned document in Redis that several processes share, changed by compare-and-set and
//! announced on a channel: the controllers of several `weir` replicas keep their configuration
//! in it (see `weir-controller`). Blobs next to it (uploaded components) are addressed by their
//! digest, so a document never names bytes that are not there.
//!
//! Keys, under the gateway's prefix: `<name>:version` (decimal), `<name>:document` (bytes),
//! `<name>:blob:<digest>`; channel `<prefix><name>:changed` carries the new version.

use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::BoxStream;

use crate::KvError;
use crate::redis::{Link, RedisOptions};

/// Replaces the document if the stored version is the expected one (absent reads as 0), then
/// announces the new version. Returns 1 when replaced.
const REPLACE: &str = r"
local current = redis.call('GET', KEYS[1])
if (current or '0') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
";

/// A shared, versioned document.
pub struct SharedDocument {
    link: Link,
    version_key: String,
    document_key: String,
    blob_prefix: String,
    channel: String,
    script: redis::Script,
}

impl std::fmt::Debug for SharedDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDocument")
            .field("url", &self.link.url)
            .field("document", &self.document_key)
            .finish_non_exhaustive()
    }
}

impl SharedDocument {
    /// Connects to the Redis of `options` (its prefix, password and TLS) for the document `name`.
    /// Operations may take at least 2 s (documents are larger than counters).
    pub async fn connect(options: &RedisOptions, name: &str) -> Result<Self, KvError> {
        let link = Link::open(options, Duration::from_secs(2), 2).await?;
        let base = format!("{}{name}", options.prefix);
        Ok(Self {
            link,
            version_key: format!("{base}:version"),
            document_key: format!("{base}:document"),
            blob_prefix: format!("{base}:blob:"),
            channel: format!("{base}:changed"),
            script: redis::Script::new(REPLACE),
        })
    }

    /// The stored version (0: none yet).
    pub async fn version(&self) -> Result<u64, KvError> {
        let mut conn = self.link.conn.clone();
        let v: Option<String> = self
            .link
            .timed(
                redis::cmd("GET")
                    .arg(&self.version_key)
                    .query_async(&mut conn),
            )
            .await?;
        parse_version(v.as_deref())
    }

    /// The stored version and document, read together; `None` when there is none.
    pub async fn load(&self) -> Result<Option<(u64, Vec<u8>)>, KvError> {
        let mut conn = self.link.conn.clone();
        let (version, document): (Option<String>, Option<Vec<u8>>) = self
            .link
            .timed(
                redis::cmd("MGET")
                    .arg(&self.version_key)
                    .arg(&self.document_key)
                    .query_async(&mut conn),
            )
            .await?;
        match (parse_version(version.as_deref())?, document) {
            (0, _) | (_, None) => Ok(None),
            (v, Some(d)) => Ok(Some((v, d))),
        }
    }

    /// Stores `document` as `version` if the stored version is still `expected` (0: none), and
    /// announces it. `false`: someone else changed it first; nothing was written.
    pub async fn replace(
        &self,
        expected: u64,
        version: u64,
        document: &[u8],
    ) -> Result<bool, KvError> {
        let mut conn = self.link.conn.clone();
        let mut call = self.script.key(&self.version_key);
        call.key(&self.document_key)
            .arg(expected.to_string())
            .arg(version.to_string())
            .arg(document)
            .arg(&self.channel);
        let replaced: i64 = self.link.timed(call.invoke_async(&mut conn)).await?;
        Ok(replaced == 1)
    }

    /// Stores a blob under its digest (kept: documents may name it later).
    pub async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), KvError> {
        let mut conn = self.link.conn.clone();
        self.link
            .timed(
                redis::cmd("SET")
                    .arg(format!("{}{digest}", self.blob_prefix))
                    .arg(bytes)
                    .query_async::<()>(&mut conn),
            )
            .await
    }

    /// The blob stored under `digest`.
    pub async fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut conn = self.link.conn.clone();
        self.link
            .timed(
                redis::cmd("GET")
                    .arg(format!("{}{digest}", self.blob_prefix))
                    .query_async(&mut conn),
            )
            .await
    }

    /// Announcements of new versions (each item: one announcement). The stream ends when the
    /// connection is lost; subscribe again then (and read the version: announcements made
    /// meanwhile are not repeated).
    pub async fn changes(&self) -> Result<BoxStream<'static, ()>, KvError> {
        let mut pubsub = self.link.timed(self.link.client.get_async_pubsub()).await?;
        self.link.timed(pubsub.subscribe(&self.channel)).await?;
        Ok(pubsub.into_on_message().map(|_| ()).boxed())
    }
}

fn parse_version(v: Option<&str>) -> Result<u64, KvError> {
    match v {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            KvError::Invalid(format!("shared document version `{v}` is not a number"))
        }),
    }
}
