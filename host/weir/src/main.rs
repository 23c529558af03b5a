//! `weir`: the gateway binary. Thin: parses arguments, loads the configuration and runs
//! [`weir_server::Gateway`].

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sha2::Digest as _;
use weir_config::{GatewayConfig, env};

/// A message from before logging is set up.
#[expect(clippy::print_stderr, reason = "before logging is set up")]
fn report_early(message: &str) {
    eprintln!("{message}");
}

/// Many small allocations per request (stores, instances, headers): mimalloc handles them with
/// less contention between worker threads than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Weir: an AI gateway whose policies are WebAssembly components"
)]
struct Cli {
    /// Configuration file (YAML or JSON). Without it, the embedded default configuration is used.
    #[arg(long, short, env = env::CONFIG, global = true)]
    config: Option<PathBuf>,
    /// Listen address of the data plane (overrides the configuration's `listen`).
    #[arg(long, env = env::LISTEN, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Directory for usage records, the controller's store and (without `--cache-dir`) the
    /// compiled-component cache.
    #[arg(long, env = env::DATA_DIR, default_value = ".weir", global = true)]
    data_dir: PathBuf,
    /// Directory for compiled components and pre-initialised policy snapshots [default:
    /// <data-dir>/cache]. Several weir processes of the same build may share one.
    #[arg(long, env = env::CACHE_DIR, global = true)]
    cache_dir: Option<PathBuf>,
    /// Production mode: the controller API refuses to run without configured credentials.
    #[arg(long, env = env::PRODUCTION, global = true)]
    production: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the configuration, including every policy's own config, and exit.
    Check,
    /// Print the SHA-256 of an API key, for the `auth` policy's `key-sha256`.
    HashKey {
        /// The key; read from standard input when omitted (keeps it out of shell history).
        key: Option<String>,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Print the JSON Schema of the configuration file.
    ConfigSchema,
    /// Build an edge app from a configuration: the gateway composed with its policy components.
    Build {
        /// `cloudflare` (a Worker for wrangler), `spin` (a Spin app) or `component` (composed
        /// component + plan).
        #[arg(long)]
        target: weir_edge_apps::Target,
        /// Output directory (created; files in it are overwritten).
        #[arg(short, long)]
        out: PathBuf,
        /// Worker (cloudflare) or application (spin) name.
        #[arg(long, default_value = "weir-gateway")]
        name: String,
        /// Node.js to run jco with (default: apps/cloudflare/node_modules' Node 22, else `node`).
        #[arg(long, env = "WEIR_NODE")]
        node: Option<PathBuf>,
        /// jco's dist/jco.js (default: apps/cloudflare/node_modules).
        #[arg(long, env = "WEIR_JCO")]
        jco: Option<PathBuf>,
        /// Compose the policy components as they are, without pre-initialising those that ask
        /// for it (their instances then parse their configuration in every request).
        #[arg(long)]
        no_preinitialise: bool,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<GatewayConfig> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read configuration file `{}`", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            weir_config::DEFAULT_CONFIG.to_owned(),
            "embedded default configuration".to_owned(),
        ),
    };
    GatewayConfig::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("invalid configuration ({origin}): {e}"))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var(env::LOG_FORMAT).is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    // Transparent huge pages (`always` on many distributions) hand out memory 2 MiB at a time:
    // the allocator's arenas and the threads' stacks then hold far more than they use (idle
    // RSS 60 MB, 37 MB without). Off for this process before its threads start; measured no
    // slower (weir-bench compare).
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        report_early(&format!(
            "weir: could not turn transparent huge pages off for this process: {e}"
        ));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            anyhow::ensure!(!key.is_empty(), "empty key");
            #[expect(clippy::print_stdout, reason = "the command's output")]
            {
                println!("{}", hex::encode(sha2::Sha256::digest(key.as_bytes())));
            }
            Ok(())
        }
        Command::ConfigSchema => {
            #[expect(clippy::print_stdout, reason = "the command's output")]
            {
                print!("{}", weir_config::json_schema());
            }
            Ok(())
        }
        Command::DefaultConfig => {
            #[expect(clippy::print_stdout, reason = "the command's output")]
            {
                print!("{}", weir_config::DEFAULT_CONFIG);
            }
            Ok(())
        }
        Command::Build {
            target,
            out,
            name,
            node,
            jco,
            no_preinitialise,
        } => {
            let Some(config) = cli.config.clone() else {
                anyhow::bail!(
                    "`weir build` needs a configuration file: weir --config gateway.yaml build ..."
                );
            };
            let opts = weir_edge_apps::Options {
                target,
                config,
                out,
                name,
                node,
                jco,
                preinitialise: !no_preinitialise,
            };
            #[expect(
                clippy::print_stderr,
                reason = "build progress and the summary go to stderr"
            )]
            let report = |line: &str| eprintln!("{line}");
            let started = std::time::Instant::now();
            let mut progress = |m: &str| {
                report(&format!("[{:>5.1}s] {m}", started.elapsed().as_secs_f64()));
            };
            let summary = weir_edge_apps::build(&opts, &mut progress).await?;
            for (file, size) in &summary.files {
                report(&format!("  {size:>9}  {file}"));
            }
            report(&format!(
                "built {} in {:.1}s",
                opts.out.display(),
                started.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Command::Check => {
            init_logging();
            let config = load_config(cli.config.as_ref())?;
            weir_server::Gateway::build(
                config,
                weir_server::GatewayOptions {
                    data_dir: Some(cli.data_dir),
                    cache_dir: cli.cache_dir,
                    builtins: Some(std::sync::Arc::new(BundledMock::default())),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
            tracing::info!("configuration is valid");
            Ok(())
        }
        Command::Serve => {
            init_logging();
            let file = load_config(cli.config.as_ref())?;
            let options = weir_server::GatewayOptions {
                data_dir: Some(cli.data_dir.clone()),
                cache_dir: cli.cache_dir.clone(),
                builtins: Some(std::sync::Arc::new(BundledMock::default())),
            };
            // With a controller, the stored resources are the truth (a new store is seeded
            // from the file); without one, the file is.
            let controller = match &file.controller.listen {
                None => None,
                Some(addr) => {
                    let (seed, document) = weir_controller::Controller::open(
                        &file,
                        &weir_controller::Options {
                            data_dir: cli.data_dir.clone(),
                            production: cli.production,
                            admin_token: std::env::var(env::ADMIN_TOKEN).ok(),
                        },
                    )
                    .map_err(|e| anyhow::anyhow!("cannot start the controller: {e}"))?;
                    Some((addr.clone(), seed, document))
                }
            };
            let document = controller
                .as_ref()
                .map_or_else(|| file.clone(), |(_, _, d)| d.clone());
            let gateway = weir_server::Gateway::build(document, options)
                .await
                .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
            if let Some((addr, seed, _)) = controller {
                let controller = seed
                    .start(gateway.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot start the controller: {e}"))?;
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("controller.listen {addr}"))?;
                tracing::info!(address = %listener.local_addr()?, "weir controller listening");
                tokio::spawn(controller.serve(listener));
            }
            let shutdown = async {
                let ctrl_c = tokio::signal::ctrl_c();
                #[cfg(unix)]
                {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(s) => s,
                        Err(_) => return std::mem::drop(ctrl_c.await),
                    };
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                #[cfg(not(unix))]
                let _ = ctrl_c.await;
                tracing::info!("shutting down");
            };
            gateway
                .bind_and_serve(cli.listen, shutdown)
                .await
                .context("data plane failed")?;
            Ok(())
        }
    }
}

/// `base-url: builtin:mock`: the mock provider bundled with the binary (offline demos and the
/// default configuration), started on first use, in process.
#[derive(Debug, Default)]
struct BundledMock {
    server: tokio::sync::OnceCell<weir_mock_upstream::MockServer>,
}

impl weir_server::BuiltinUpstreams for BundledMock {
    fn base_url(&self, name: &str) -> futures::future::BoxFuture<'_, Result<String, String>> {
        let name = name.to_owned();
        Box::pin(async move {
            if name != "mock" {
                return Err(format!(
                    "unknown built-in upstream `builtin:{name}` (there is `builtin:mock`)"
                ));
            }
            let mock = self
                .server
                .get_or_try_init(|| async {
                    let mock = weir_mock_upstream::MockServer::start(
                        ([127, 0, 0, 1], 0).into(),
                        weir_mock_upstream::MockOptions::default(),
                    )
                    .await
                    .map_err(|e| format!("starting the bundled mock provider: {e}"))?;
                    tracing::info!(url = %mock.base_url(), "started the bundled mock provider");
                    Ok::<_, String>(mock)
                })
                .await?;
            Ok(mock.base_url().trim_end_matches('/').to_owned())
        })
    }
}
