//! `weir-spin-runner`: runs the Spin app that `weir build --target spin` writes, the way
//! `spin up` would, on wasmtime (no Spin runtime can be installed on our machines).
//!
//! It reads the app's `spin.toml`, resolves its variables (`SPIN_VARIABLE_*` over defaults),
//! compiles `weir.wasm` once and serves every HTTP request on a fresh instance, with what a Spin
//! host gives a WASI 0.2 HTTP component: `wasi:http/incoming-handler`, outbound HTTP limited to
//! `allowed_outbound_hosts`, `wasi:keyvalue` (store + atomics) on the app's
//! `key_value_stores`, `fermyon:spin/variables`, and WASI CLI with the component's standard
//! error going to ours. State is kept in memory, or in `--state FILE` so it survives a restart
//! (as Spin's default SQLite store does). `--pooling` instantiates from a pooling allocator with
//! `weir`'s memory-reset settings (as a production Spin host does): for comparing the cost of a
//! composed app's instance with `weir`'s instances per policy (`bench/edge.py --spin-pooling`).
//!
//! ```text
//! SPIN_VARIABLE_MOCK_UPSTREAM_KEY=... weir-spin-runner --app dist/spin/spin.toml --listen 127.0.0.1:3000
//! ```
//!
//! This is test support, not a Spin replacement: it implements the manifest fields `weir build`
//! writes and the interfaces the app imports, nothing more.

#![forbid(unsafe_code)]
#![expect(
    clippy::print_stderr,
    reason = "a test host: its log is standard error"
)]

mod imports;
mod kv;
mod manifest;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::add_only_http_to_linker_async;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use imports::{Outbound, Shared, SpinImports, State};

struct Args {
    app: PathBuf,
    listen: SocketAddr,
    state: Option<PathBuf>,
    pooling: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut app = None;
    let mut listen = None;
    let mut state = None;
    let mut pooling = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--app" => app = Some(PathBuf::from(value()?)),
            "--listen" => listen = Some(value()?.parse().context("--listen: not an address")?),
            "--state" => state = Some(PathBuf::from(value()?)),
            "--pooling" => pooling = true,
            other => bail!(
                "unknown argument `{other}`; usage: weir-spin-runner --app spin.toml --listen ADDR [--state FILE] [--pooling]"
            ),
        }
    }
    Ok(Args {
        app: app.context("--app spin.toml is required")?,
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000))),
        state,
        pooling,
    })
}

struct Server {
    engine: Engine,
    pre: ProxyPre<State>,
    shared: Shared,
}

impl Server {
    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: WasiCtx::builder().inherit_stderr().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                hooks: Outbound {
                    allowed: self.shared.allowed_outbound_hosts.clone(),
                },
                shared: self.shared.clone(),
            },
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = wasm(
            store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, req),
        )?;
        let out = wasm(store.data_mut().http().new_response_outparam(sender))?;
        let pre = self.pre.clone();
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let e = match task.await {
                    Ok(Ok(())) => anyhow::anyhow!("the component never set a response"),
                    Ok(Err(e)) => anyhow::anyhow!("{e:?}"),
                    Err(e) => e.into(),
                };
                Err(e.context("the component failed before it set a response"))
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let app = manifest::load(&args.app, &|k| std::env::var(k).ok())?;
    let mut config = Config::new();
    config.wasm_component_model(true);
    if args.pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
    }
    let engine = wasm(Engine::new(&config))?;
    let component = wasm(Component::from_file(&engine, &app.source))
        .with_context(|| format!("loading {}", app.source.display()))?;
    let mut linker = Linker::<State>::new(&engine);
    wasm(wasmtime_wasi::p2::add_to_linker_async(&mut linker))?;
    wasm(add_only_http_to_linker_async(&mut linker))?;
    wasm(SpinImports::add_to_linker::<State, HasSelf<State>>(
        &mut linker,
        |s| s,
    ))?;
    let pre =
        wasm(linker.instantiate_pre(&component).and_then(ProxyPre::new)).with_context(|| {
            format!(
                "{} imports something a Spin host would not give it",
                app.source.display()
            )
        })?;
    let shared = Shared {
        stores: kv::Stores::open(app.key_value_stores.clone(), args.state.clone())?,
        variables: Arc::new(app.variables.clone()),
        allowed_outbound_hosts: Arc::new(app.allowed_outbound_hosts.clone()),
    };
    let server = Arc::new(Server {
        engine,
        pre,
        shared,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "spin-runner: serving {} on http://{}",
        app.source.display(),
        listener.local_addr()?
    );
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move {
                    match server.handle(req).await {
                        Ok(resp) => Ok::<_, std::convert::Infallible>(resp),
                        Err(e) => {
                            eprintln!("spin-runner: request failed: {e:#}");
                            Ok(internal_error())
                        }
                    }
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Instances of a composed app: the gateway's, the edge runtime's and every policy's core
/// modules, each with its memory, reset the way `weir` resets its policy instances (what the
/// last request dirtied is rewritten, not unmapped).
fn pooling() -> PoolingAllocationConfig {
    const INSTANCES: u32 = 64;
    const MEMORIES_PER_INSTANCE: u32 = 32;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(INSTANCES)
        .total_core_instances(INSTANCES * 128)
        .max_core_instances_per_component(128)
        .total_memories(INSTANCES * MEMORIES_PER_INSTANCE)
        .max_memories_per_component(MEMORIES_PER_INSTANCE)
        .total_tables(INSTANCES * 64)
        .max_tables_per_component(64)
        .total_stacks(INSTANCES)
        .max_memory_size(64 << 20)
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto)
        .decommit_batch_size(16);
    pool
}

/// wasmtime's errors as anyhow's, with their whole chain.
fn wasm<T>(r: wasmtime::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// What Spin answers when the component traps: a bare 500.
fn internal_error() -> hyper::Response<HyperOutgoingBody> {
    use http_body_util::BodyExt;
    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"Internal Server Error"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    resp
}
