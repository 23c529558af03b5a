//! The Redis backend: several `weir` replicas share limits, counters and caches through one
//! Redis (≥ 6.2) or Valkey. Same semantics as [`MemoryStore`](crate::MemoryStore): values are
//! bytes, a counter reads as its decimal text, `increment` creates a missing key with the
//! expiry it is given and never changes the expiry of an existing one (one Lua script, so it
//! is atomic), keys expire with their TTL (Redis `PX`).
//!
//! Every key gets the gateway's prefix (`weir:<name>:`), so several gateways can share one
//! Redis. Each call has a timeout; connections are multiplexed and reconnect on their own
//! (redis-rs' `ConnectionManager`), a few of them used in turn.
//!
//! `rediss://` URLs use TLS (rustls, the web PKI roots); the password comes from an environment
//! variable the configuration names, never from the file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use redis::IntoConnectionInfo;
use redis::aio::ConnectionManager;

use crate::{KvError, KvStore};

/// `INCRBY` that sets the expiry only when it creates the key.
const INCREMENT: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db` or `rediss://...` (TLS).
    pub url: String,
    /// The password (from the environment variable the configuration names), if any.
    pub password: Option<String>,
    /// Prepended to every key (`weir:prod:`).
    pub prefix: String,
    /// Time a single operation may take.
    pub timeout: Duration,
    /// Multiplexed connections used in turn.
    pub connections: usize,
}

/// A [`KvStore`] in Redis.
pub struct RedisStore {
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: Arc<str>,
    timeout: Duration,
    script: redis::Script,
    url: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The URL without its user information (what logs and errors may show).
pub(crate) fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => url.to_owned(),
    }
}

/// A client for `options` (the password set from the environment) and the redacted URL.
pub(crate) fn client(options: &RedisOptions) -> Result<(redis::Client, String), KvError> {
    let url = redacted(&options.url);
    let mut info = options
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| KvError::Invalid(format!("redis url `{url}`: {e}")))?;
    if let Some(password) = &options.password {
        let settings = info.redis_settings().clone().set_password(password.clone());
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)
        .map_err(|e| KvError::Invalid(format!("redis url `{url}`: {e}")))?;
    Ok((client, url))
}

/// A reconnecting connection; the first connection must succeed within the timeout (at least 2 s).
async fn manager(
    client: &redis::Client,
    url: &str,
    config: redis::aio::ConnectionManagerConfig,
    timeout: Duration,
) -> Result<ConnectionManager, KvError> {
    tokio::time::timeout(
        timeout.max(Duration::from_secs(2)),
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| KvError::Unavailable(format!("redis `{url}`: no answer")))?
    .map_err(|e| KvError::Unavailable(format!("redis `{url}`: {e}")))
}

fn manager_config(timeout: Duration, retries: usize) -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(retries)
}

/// `op`, given `timeout`: slower, or a failed connection, is `Unavailable`; an increment of a
/// value that is not a number is `Invalid`.
async fn timed<T>(
    url: &str,
    timeout: Duration,
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, KvError> {
    match tokio::time::timeout(timeout, op).await {
        Err(_) => Err(KvError::Unavailable(format!(
            "redis `{url}`: no answer within {} ms",
            timeout.as_millis()
        ))),
        Ok(Err(e)) if e.to_string().contains("not an integer") => {
            Err(KvError::Invalid(format!("redis: {e}")))
        }
        Ok(Err(e)) => Err(KvError::Unavailable(format!("redis `{url}`: {e}"))),
        Ok(Ok(v)) => Ok(v),
    }
}

/// One reconnecting connection with a time limit per operation (at least `min_timeout`): the
/// shared document and the shared totals use one each.
pub(crate) struct Link {
    pub(crate) client: redis::Client,
    pub(crate) conn: ConnectionManager,
    timeout: Duration,
    pub(crate) url: String,
}

impl Link {
    pub(crate) async fn open(
        options: &RedisOptions,
        min_timeout: Duration,
        retries: usize,
    ) -> Result<Self, KvError> {
        let (client, url) = client(options)?;
        let timeout = options.timeout.max(min_timeout);
        let conn = manager(&client, &url, manager_config(timeout, retries), timeout).await?;
        Ok(Self {
            client,
            conn,
            timeout,
            url,
        })
    }

    pub(crate) async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, KvError> {
        timed(&self.url, self.timeout, op).await
    }
}

impl RedisStore {
    /// Connects (the first connection must succeed, so a wrong URL or password is reported at
    /// start); later outages are retried by the connections themselves.
    pub async fn connect(options: RedisOptions) -> Result<Self, KvError> {
        let (client, url) = client(&options)?;
        let config = manager_config(options.timeout, 2);
        let mut connections = Vec::new();
        for _ in 0..options.connections.max(1) {
            connections.push(manager(&client, &url, config.clone(), options.timeout).await?);
        }
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
            prefix: options.prefix.into(),
            timeout: options.timeout,
            script: redis::Script::new(INCREMENT),
            url,
        })
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, KvError> {
        timed(&self.url, self.timeout, op).await
    }
}

impl KvStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>> {
        async move {
            let mut conn = self.conn();
            let key = self.key(key);
            self.timed(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await
        }
        .boxed()
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        async move {
            let mut conn = self.conn();
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key)).arg(value);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
            self.timed(cmd.query_async::<()>(&mut conn)).await
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), KvError>> {
        async move {
            let mut conn = self.conn();
            self.timed(
                redis::cmd("DEL")
                    .arg(self.key(key))
                    .query_async::<()>(&mut conn),
            )
            .await
        }
        .boxed()
    }

    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, KvError>> {
        async move {
            let mut conn = self.conn();
            let ttl = ttl.map_or(String::new(), |t| (t.as_millis().max(1) as u64).to_string());
            let mut invocation = self.script.key(self.key(key));
            invocation.arg(delta).arg(ttl);
            self.timed(invocation.invoke_async(&mut conn)).await
        }
        .boxed()
    }
}
