//! Test support: an in-process gateway in front of an in-process mock provider, and a small
//! HTTP client.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let env = weir_tests::TestEnv::start(weir_tests::ConfigBuilder::default()).await?;
//! let resp = env.chat("/", weir_tests::ALICE_KEY, serde_json::json!({"model": "mock-gpt", "messages": []})).await?;
//! assert_eq!(resp.status, 200);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Digest;
use weir_mock_upstream::{MockOptions, MockServer};
use weir_server::{Gateway, GatewayOptions, UsageLog};

/// Alice's API key for the gateway (consumer `alice`).
pub const ALICE_KEY: &str = "sk-weir-test-alice-0123456789";
/// Bob's API key for the gateway (consumer `bob`).
pub const BOB_KEY: &str = "sk-weir-test-bob-9876543210";
/// The key the gateway uses towards the mock provider. Must never reach a client.
pub const UPSTREAM_KEY: &str = "sk-upstream-canary-5f1c9e";
/// The controller's admin bearer token in tests.
pub const ADMIN_TOKEN: &str = "weir-test-admin-token";
/// The environment variable carrying [`UPSTREAM_KEY`].
pub const UPSTREAM_KEY_ENV: &str = "WEIR_TEST_UPSTREAM_KEY";

pub fn sha256_hex(s: &str) -> String {
    sha256_hex_bytes(s.as_bytes())
}

pub fn sha256_hex_bytes(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// Builds the YAML configuration of a test gateway.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    /// Extra providers (YAML list items, indented by two spaces; `{mock}` stands for the mock's
    /// base URL without a path), added after the default one.
    pub extra_providers: Vec<String>,
    /// Extra proxies (YAML list items, indented by two spaces), added after the default one.
    pub extra_proxies: Vec<String>,
    /// Extra top-level YAML (e.g. `policies:` or `limits:`).
    pub extra: String,
    /// Token-limit config of the default proxy `/` (JSON object).
    pub token_limit: String,
    pub upstream_timeout_ms: u64,
    /// Also run the controller API (its store in the data dir; `TestEnv::api`).
    pub controller: bool,
    /// More of the `controller:` section (YAML lines indented by two spaces), e.g. `users:`.
    pub controller_yaml: String,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self {
            extra_providers: Vec::new(),
            extra_proxies: Vec::new(),
            extra: String::new(),
            token_limit: r#"{"tokens-per-minute": 100000000, "requests-per-minute": 100000000}"#
                .into(),
            upstream_timeout_ms: 5000,
            controller: false,
            controller_yaml: String::new(),
        }
    }
}

/// The auth policy entry accepting alice and bob.
pub fn auth_policy() -> String {
    format!(
        r#"{{"policy": "auth", "config": {{"consumers": [{{"id": "alice", "key-sha256": "{}"}}, {{"id": "bob", "key-sha256": "{}"}}]}}}}"#,
        sha256_hex(ALICE_KEY),
        sha256_hex(BOB_KEY)
    )
}

impl ConfigBuilder {
    pub fn yaml(&self, upstream: &str) -> String {
        let mut out = format!(
            "listen: 127.0.0.1:0\nproviders:\n  - name: mock\n    base-url: {upstream}/v1\n    api-key-env: {UPSTREAM_KEY_ENV}\n    timeout-ms: {}\nproxies:\n  - name: main\n    context-path: /\n    provider: mock\n    policies: [{}, {{\"policy\": \"token-limit\", \"config\": {}}}]\n",
            self.upstream_timeout_ms,
            auth_policy(),
            self.token_limit
        );
        let proxies_at = out.find("proxies:\n").unwrap_or(out.len());
        let mut providers = String::new();
        for p in &self.extra_providers {
            providers.push_str(&p.replace("{mock}", upstream));
            if !p.ends_with('\n') {
                providers.push('\n');
            }
        }
        out.insert_str(proxies_at, &providers);
        for p in &self.extra_proxies {
            out.push_str(p);
            if !p.ends_with('\n') {
                out.push('\n');
            }
        }
        out.push_str(&self.extra);
        if self.controller {
            // The port is chosen by the test env; the address only switches the controller on.
            out.push_str("\ncontroller:\n  listen: 127.0.0.1:0\n");
            out.push_str(&self.controller_yaml);
        }
        out
    }
}

/// A gateway and its mock provider, both in-process on free ports.
#[derive(Debug)]
pub struct TestEnv {
    pub mock: MockServer,
    pub addr: SocketAddr,
    /// The admin listener (health, readiness, metrics, config).
    pub admin: SocketAddr,
    pub usage: UsageLog,
    pub data_dir: std::path::PathBuf,
    /// The controller API, when the config asked for it.
    pub controller: Option<SocketAddr>,
    pub gateway: Gateway,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `data:` payloads of an SSE body.
    pub fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
            .collect()
    }
}

impl TestEnv {
    pub async fn start(config: ConfigBuilder) -> anyhow::Result<Self> {
        Self::start_with(
            config,
            MockOptions {
                api_key: Some(UPSTREAM_KEY.into()),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn start_with(config: ConfigBuilder, mock: MockOptions) -> anyhow::Result<Self> {
        // SAFETY of set_var: tests in this binary all set the same value.
        set_upstream_key();
        let mock = MockServer::start(([127, 0, 0, 1], 0).into(), mock).await?;
        let yaml = config.yaml(&mock.base_url());
        let config = weir_config::GatewayConfig::from_yaml(&yaml)
            .map_err(|e| anyhow::anyhow!("{e}\n{yaml}"))?;
        let data_dir =
            std::env::temp_dir().join(format!("weir-test-{}-{}", std::process::id(), next_id()));
        Self::start_in(config, mock, data_dir).await
    }

    /// Starts on an existing data dir (e.g. the one of a stopped env, to test restarts).
    pub async fn start_in(
        config: weir_config::GatewayConfig,
        mock: MockServer,
        data_dir: std::path::PathBuf,
    ) -> anyhow::Result<Self> {
        let want_controller = config.controller.listen.is_some();
        let (seed, config) = if want_controller {
            let (seed, doc) = weir_controller::Controller::open(
                &config,
                &weir_controller::Options {
                    data_dir: data_dir.clone(),
                    production: false,
                    admin_token: Some(ADMIN_TOKEN.into()),
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            (Some(seed), doc)
        } else {
            (None, config)
        };
        let gateway = Gateway::build(
            config,
            GatewayOptions {
                data_dir: Some(data_dir.clone()),
                cache_dir: Some(shared_cache_dir()),
                builtins: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let controller = match seed {
            None => None,
            Some(seed) => {
                let c = seed
                    .start(gateway.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
                let addr = listener.local_addr()?;
                tokio::spawn(c.serve(listener));
                Some(addr)
            }
        };
        let usage = gateway.usage().clone();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let admin_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let admin = admin_listener.local_addr()?;
        gateway.serve_admin(admin_listener);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(gateway.clone().serve(listener, async {
            let _ = rx.await;
        }));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build_http();
        Ok(Self {
            mock,
            addr,
            admin,
            usage,
            data_dir,
            controller,
            gateway,
            shutdown: Some(tx),
            client,
        })
    }

    /// Calls the controller API with the admin token; `body` is JSON unless `content_type` says.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Reply> {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let body = body
            .map(|b| serde_json::to_vec(&b))
            .transpose()?
            .unwrap_or_default();
        self.api_raw(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// Calls the controller API with exactly these headers.
    pub async fn api_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let addr = self.controller.ok_or_else(|| {
            anyhow::anyhow!("this env has no controller (ConfigBuilder::controller)")
        })?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}/api/v1{path}"));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.exchange(req.body(Full::new(body.into()))?).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request and reads the whole response.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut req = http::Request::builder().method(method).uri(self.url(path));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.exchange(req.body(Full::new(body.into()))?).await
    }

    /// GETs a path of the admin listener.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<Reply> {
        let req = http::Request::get(format!("http://{}{}", self.admin, path))
            .body(Full::new(Bytes::new()))?;
        self.exchange(req).await
    }

    async fn exchange(&self, req: http::Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        let resp =
            tokio::time::timeout(Duration::from_secs(30), self.client.request(req)).await??;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// POSTs a chat completion under the proxy at `prefix` (`/` or `/limited`) with `key`.
    pub async fn chat(
        &self,
        prefix: &str,
        key: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<Reply> {
        let path = format!("{}/v1/chat/completions", prefix.trim_end_matches('/'));
        let auth = format!("Bearer {key}");
        self.send(
            "POST",
            &path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(&body)?,
        )
        .await
    }

    /// Waits until `n` usage records exist (they are written when a request completes, which for
    /// streams is after the response ended).
    pub async fn wait_usage(&self, n: usize) -> Vec<weir_server::UsageRecord> {
        for _ in 0..200 {
            let r = self.usage.recent();
            if r.len() >= n {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.usage.recent()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The compiled-component cache every gateway of the tests shares (`--cache-dir`): each
/// component, and each pre-initialised snapshot, is compiled once per machine and build rather
/// than once per test. Keys hold the component's hash and the engine's settings.
fn shared_cache_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("weir-test-compiled")
}

fn next_id() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn set_upstream_key() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Edition 2024 makes set_var unsafe; the workspace forbids unsafe, so the key is passed
        // through the environment of the test process by `e2e/main.rs`'s harness check instead.
        assert_eq!(
            std::env::var(UPSTREAM_KEY_ENV).ok().as_deref(),
            Some(UPSTREAM_KEY),
            "run the e2e tests with {UPSTREAM_KEY_ENV}={UPSTREAM_KEY} (tests/.config/nextest.toml and .cargo/config.toml set it)"
        );
    });
}
