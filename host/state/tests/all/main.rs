//! The key-value semantics every backend must have, checked on the in-memory store and on a
//! real `redis-server` (Debian's, installed by scripts/test.sh; started here on a free port).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use weir_state::{KvError, KvStore, MemoryStore, RedisOptions, RedisStore};

/// A `redis-server` for one test, stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for these tests: apt-get install redis-server (scripts/test.sh does)");
        // Ready when it accepts a connection.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not listen on {port}");
    }

    async fn store(&self, prefix: &str, password: Option<&str>) -> Result<RedisStore, KvError> {
        RedisStore::connect(RedisOptions {
            url: format!("redis://127.0.0.1:{}/0", self.port),
            password: password.map(str::to_owned),
            prefix: prefix.to_owned(),
            timeout: Duration::from_millis(500),
            connections: 2,
        })
        .await
    }
}

/// Everything `weir:policy/kv` promises, on one store.
async fn semantics(kv: Arc<dyn KvStore>) {
    assert_eq!(kv.get("absent").await.unwrap(), None);
    kv.set("a", b"one".to_vec(), None).await.unwrap();
    assert_eq!(kv.get("a").await.unwrap(), Some(b"one".to_vec()));
    kv.set("a", b"two".to_vec(), None).await.unwrap();
    assert_eq!(kv.get("a").await.unwrap(), Some(b"two".to_vec()));
    kv.delete("a").await.unwrap();
    kv.delete("a").await.unwrap();
    assert_eq!(kv.get("a").await.unwrap(), None);

    // Expiry.
    kv.set("short", b"x".to_vec(), Some(Duration::from_millis(150)))
        .await
        .unwrap();
    assert!(kv.get("short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kv.get("short").await.unwrap(), None);

    // Counters: absent is 0, negative deltas, read as decimal text.
    assert_eq!(kv.increment("n", 5, None).await.unwrap(), 5);
    assert_eq!(kv.increment("n", -7, None).await.unwrap(), -2);
    assert_eq!(kv.get("n").await.unwrap(), Some(b"-2".to_vec()));

    // The expiry is set when the call creates the key, never moved by later calls.
    assert_eq!(
        kv.increment("w", 1, Some(Duration::from_millis(300)))
            .await
            .unwrap(),
        1
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        kv.increment("w", 1, Some(Duration::from_secs(60)))
            .await
            .unwrap(),
        2
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        kv.increment("w", 1, Some(Duration::from_secs(60)))
            .await
            .unwrap(),
        1,
        "the window created with 300 ms expired: a new one starts"
    );

    // Incrementing something that is not an integer is invalid, not an outage.
    kv.set("text", b"hello".to_vec(), None).await.unwrap();
    assert!(matches!(
        kv.increment("text", 1, None).await,
        Err(KvError::Invalid(_))
    ));

    // Exact under concurrency.
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let kv = kv.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    kv.increment("race", 1, Some(Duration::from_secs(60)))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(kv.increment("race", 0, None).await.unwrap(), 64 * 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_has_the_semantics() {
    semantics(Arc::new(MemoryStore::new(10_000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_has_the_same_semantics() {
    let redis = Redis::start(&[]);
    semantics(Arc::new(redis.store("weir:test:", None).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sharing_a_redis_do_not_see_each_other() {
    let redis = Redis::start(&[]);
    let a = redis.store("weir:a:", None).await.unwrap();
    let b = redis.store("weir:b:", None).await.unwrap();
    a.set("k", b"from a".to_vec(), None).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), None);
    assert_eq!(a.get("k").await.unwrap(), Some(b"from a".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_used_and_a_wrong_one_is_named_without_echoing_it() {
    let redis = Redis::start(&["--requirepass", "s3cret-redis-pass"]);
    let ok = redis
        .store("weir:", Some("s3cret-redis-pass"))
        .await
        .unwrap();
    ok.set("k", b"v".to_vec(), None).await.unwrap();
    let err = redis
        .store("weir:", Some("wrong-pass-value"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("wrong-pass-value") && !err.contains("s3cret"),
        "{err}"
    );
    let url_err = RedisStore::connect(RedisOptions {
        url: format!("redis://:inline-secret@127.0.0.1:{}/0", redis.port),
        password: None,
        prefix: "weir:".into(),
        timeout: Duration::from_millis(500),
        connections: 1,
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(!url_err.contains("inline-secret"), "{url_err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_the_store_recovers_without_a_restart() {
    let mut redis = Redis::start(&[]);
    let port = redis.port;
    let kv = redis.store("weir:", None).await.unwrap();
    assert_eq!(kv.increment("n", 1, None).await.unwrap(), 1);
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    assert!(matches!(
        kv.increment("n", 1, None).await,
        Err(KvError::Unavailable(_))
    ));
    // The same port again (the data is gone: no persistence in this test).
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    redis.child = child;
    let mut recovered = false;
    for _ in 0..100 {
        if let Ok(n) = kv.increment("n", 1, None).await {
            assert_eq!(n, 1);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the store did not reconnect");
}
