//! The weir data plane: listeners, routing, the policy chain around each call, the upstream
//! client and streaming.
//!
//! ```text
//! client ─▶ listener ─▶ route (context path + endpoint) ─▶ body checks (size, JSON)
//!        ─▶ on-request chain (provider policies, then proxy policies)
//!        ─▶ upstream (provider key injected) ─▶ on-response / on-stream-chunk (reverse order)
//!        ─▶ on-complete with usage (also when the client left) ─▶ usage record
//! ```
//!
//! [`Gateway::build`] turns a validated [`weir_config::GatewayConfig`] into a running gateway:
//! it loads the policy components (built-in and custom), validates each policy configuration
//! with the policy's own `validate-config`, and starts the bundled mock provider for
//! `builtin:mock` providers. [`Gateway::serve`] accepts connections.
#![forbid(unsafe_code)]

mod admin;
mod body;
mod circuits;
mod configure;
mod kv;
mod mcp_tools;
mod metrics;
mod proxy;
mod purge;
mod stream;
mod upstream;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub use configure::{BuiltinUpstreams, ConfigureError, GatewayOptions, PolicySummary};
pub use kv::redis_options;
pub use mcp_tools::ToolsError;
pub use usage::{Totals, UsageLog, UsageRecord};
pub use weir_core::GatewayError;

/// A configuration built by [`Gateway::prepare`], ready to be served.
#[derive(Debug)]
pub struct Prepared(configure::State);

/// A configured gateway, ready to serve. Cloning shares it.
///
/// Its configuration can be replaced while it serves ([`Gateway::reload`]): the new one is
/// built (components loaded, every policy config validated) before it replaces the old one in
/// a single atomic swap, so a request sees the old configuration or the new one, never a mix;
/// requests and streams in flight finish on the one they started with. The policies'
/// key-value state, usage records and metrics carry over.
#[derive(Clone, Debug)]
pub struct Gateway {
    shared: Arc<configure::Shared>,
    current: Arc<arc_swap::ArcSwap<configure::State>>,
    /// Serialises reloads (each builds on the previous one's components).
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl Gateway {
    /// Loads policies, validates their configurations and prepares routes.
    pub async fn build(
        config: weir_config::GatewayConfig,
        options: GatewayOptions,
    ) -> Result<Self, ConfigureError> {
        let shared = Arc::new(configure::Shared::new(&config, &options).await?);
        let state = configure::State::build(config, shared.clone()).await?;
        shared.upstreams.store(state.upstreams.clone());
        state.preinitialise().await;
        Ok(Self {
            shared,
            current: Arc::new(arc_swap::ArcSwap::from_pointee(state)),
            reloading: Arc::default(),
        })
    }

    /// Replaces the configuration, atomically, once the new one is built; on an error the old
    /// one stays. Settings that size the process (`listen`, `admin-listen`, `controller`,
    /// `runtime`, `kv`) keep the values the gateway started with.
    pub async fn reload(&self, config: weir_config::GatewayConfig) -> Result<(), ConfigureError> {
        let _one_at_a_time = self.reloading.lock().await;
        let state = configure::State::build(config, self.shared.clone()).await?;
        self.commit(Prepared(state));
        Ok(())
    }

    /// Checks a configuration as [`Gateway::reload`] would, without applying it.
    pub async fn check(&self, config: weir_config::GatewayConfig) -> Result<(), ConfigureError> {
        self.prepare(config).await.map(drop)
    }

    /// Builds a configuration without serving it yet: [`Gateway::commit`] swaps it in. The
    /// controller uses the pair to store a change between the two (persist, then serve).
    pub async fn prepare(
        &self,
        config: weir_config::GatewayConfig,
    ) -> Result<Prepared, ConfigureError> {
        Ok(Prepared(
            configure::State::build(config, self.shared.clone()).await?,
        ))
    }

    /// Checks what a prepared configuration fetches at first use: the OpenAPI documents of MCP
    /// proxies at `upstream.openapi.spec-url`, translated as their proxy would, and the tool
    /// names of proxies with several servers and `prefix: none` (unique across the servers) —
    /// the controller calls this before it accepts a change: for proxies whose upstream differs
    /// from `before`'s.
    pub async fn check_fetched(
        &self,
        prepared: &Prepared,
        before: &weir_config::GatewayConfig,
    ) -> Result<(), ConfigureError> {
        mcp_tools::check_documents(&prepared.0, before).await?;
        mcp_tools::check_unprefixed(&prepared.0, before).await
    }

    /// Serves a prepared configuration from the next request on.
    pub fn commit(&self, prepared: Prepared) {
        self.shared.upstreams.store(prepared.0.upstreams.clone());
        prepared.0.preinitialise_in_background();
        self.current.store(Arc::new(prepared.0));
    }

    /// The tools MCP proxy `name` offers (its `tools/list` entries), whoever may call them.
    pub async fn mcp_tools(&self, name: &str) -> Result<Vec<serde_json::Value>, ToolsError> {
        let state = self.current.load_full();
        mcp_tools::list(&state, name).await
    }

    /// The policy components the current configuration can use.
    pub fn catalogue(&self) -> Vec<PolicySummary> {
        self.current.load().catalogue.clone()
    }

    /// Loads and describes a component, as an upload is checked: it must compile and fit the
    /// policy world.
    pub async fn describe_component(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<PolicySummary, ConfigureError> {
        self.shared.describe(name, bytes).await
    }

    /// The configuration being served.
    pub fn config(&self) -> weir_config::GatewayConfig {
        self.current.load().config.clone()
    }

    fn state(&self) -> Arc<configure::State> {
        self.current.load_full()
    }

    /// The configured listen address.
    pub fn listen_addr(&self) -> String {
        self.current.load().config.listen.clone()
    }

    /// The configured admin listen address, if any.
    pub fn admin_addr(&self) -> Option<String> {
        self.current.load().config.admin_listen.clone()
    }

    /// Serves the admin endpoints (`/health`, `/ready`, `/metrics`, `/config`) on `listener`, in
    /// a background task.
    pub fn serve_admin(&self, listener: TcpListener) {
        tokio::spawn(admin::serve(self.clone(), listener));
    }

    /// Usage records and totals.
    pub fn usage(&self) -> &UsageLog {
        &self.shared.usage
    }

    /// Serves connections from `listener` until `shutdown` resolves, then waits (up to 30 s) for
    /// in-flight requests to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let limits = self.current.load().config.limits.clone();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let gateway = gateway.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        proxy::handle(gateway.state(), req, peer).await,
                    )
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .max_headers(limits.max_headers)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .header_read_timeout(Duration::from_secs(30))
                .timer(hyper_util::rt::TokioTimer::new());
            builder
                .http2()
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener); // new connections are refused from now on
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("shutdown: no longer accepting; waiting for requests and streams in flight");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => tracing::warn!("shutdown: gave up waiting for connections"),
        }
        self.usage().flush().await;
        tracing::info!("shutdown: done");
    }

    /// Binds the configured address (or `addr`) and serves until `shutdown`.
    pub async fn bind_and_serve(
        self,
        addr: Option<SocketAddr>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let addr = match addr {
            Some(a) => a,
            None => self
                .listen_addr()
                .parse()
                .map_err(|e| std::io::Error::other(format!("listen address: {e}")))?,
        };
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(address = %listener.local_addr()?, "weir data plane listening");
        if let Some(admin) = self.admin_addr() {
            let admin_listener = TcpListener::bind(&admin)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("admin-listen {admin}: {e}")))?;
            tracing::info!(address = %admin_listener.local_addr()?, "weir admin listening");
            self.serve_admin(admin_listener);
        }
        self.serve(listener, shutdown).await;
        Ok(())
    }
}
