//! The key-value store the policies use, as the configuration chooses it (`kv.backend`), with
//! every operation counted in the metrics (`weir_kv_operations_total`, `weir_kv_duration_seconds`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use weir_config::{KvBackend, KvSettings};
use weir_state::{KvError, KvStore, MemoryStore, RedisOptions, RedisStore};

use crate::configure::ConfigureError;
use crate::metrics::Metrics;

/// Opens the configured store.
pub(crate) async fn open(
    settings: &KvSettings,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn KvStore>, ConfigureError> {
    let (inner, backend): (Arc<dyn KvStore>, &'static str) = match settings.backend {
        KvBackend::Memory => (Arc::new(MemoryStore::new(settings.max_entries)), "memory"),
        KvBackend::Redis => {
            let store = RedisStore::connect(redis_options(settings)?)
                .await
                .map_err(|e| ConfigureError::Config {
                    path: "kv.url".into(),
                    message: format!("cannot use the key-value store: {e}"),
                })?;
            tracing::info!(store = ?store, "key-value store: redis");
            (Arc::new(store), "redis")
        }
    };
    Ok(Arc::new(Measured {
        inner,
        backend,
        metrics,
    }))
}

/// How to reach the Redis of `kv` (backend `redis`): its URL, the password from the variable
/// `kv.password-env` names, the prefix and the timeout.
pub fn redis_options(settings: &KvSettings) -> Result<RedisOptions, ConfigureError> {
    let password = match &settings.password_env {
        Some(var) => Some(std::env::var(var).map_err(|_| ConfigureError::Config {
            path: "kv.password-env".into(),
            message: format!("the variable {var} is not set"),
        })?),
        None => None,
    };
    Ok(RedisOptions {
        url: settings.url.clone().unwrap_or_default(),
        password,
        prefix: settings.prefix.clone(),
        timeout: Duration::from_millis(settings.timeout_ms),
        connections: settings.connections,
    })
}

/// A store whose operations are counted and timed.
#[derive(Debug)]
struct Measured {
    inner: Arc<dyn KvStore>,
    backend: &'static str,
    metrics: Arc<Metrics>,
}

impl Measured {
    fn measure<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        fut: BoxFuture<'a, Result<T, KvError>>,
    ) -> BoxFuture<'a, Result<T, KvError>> {
        async move {
            let started = Instant::now();
            let result = fut.await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(KvError::Unavailable(_)) => "unavailable",
                Err(KvError::Invalid(_)) => "invalid",
            };
            self.metrics
                .kv(self.backend, op, outcome, started.elapsed().as_secs_f64());
            result
        }
        .boxed()
    }
}

impl KvStore for Measured {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>> {
        self.measure("get", self.inner.get(key))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        self.measure("set", self.inner.set(key, value, ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), KvError>> {
        self.measure("delete", self.inner.delete(key))
    }

    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, KvError>> {
        self.measure("increment", self.inner.increment(key, delta, ttl))
    }
}
