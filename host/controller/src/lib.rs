//! The Gateway-Controller REST API (default 127.0.0.1:9090).
//!
//! It manages the resources of the running gateway — provider templates, providers, proxies
//! and their API keys, MCP proxies, policy components — in the same document shape as the
//! configuration file, so a file can be imported and the state exported (`/api/v1/config`).
//!
//! Every change goes the same way ([`Controller::change`]): the new document is validated
//! (field paths in the errors), built by the gateway (components loaded, every policy config
//! validated by its policy), written to the embedded database and fsynced, then swapped into
//! the data plane atomically — and only then answered. A change that fails any step changes
//! nothing. At start, a stored document is the truth; a new store is seeded from the
//! configuration file. Settings that size the process (`listen`, `admin-listen`, `controller`,
//! `limits`, `runtime`, `kv`) always come from the file.
//!
//! ```text
//! client ─▶ auth (basic / bearer, admin or read-only) ─▶ route ─▶ change(document)
//!        ─▶ validate ─▶ gateway.prepare ─▶ store.save (fsync) ─▶ gateway.commit ─▶ 2xx
//! ```
#![forbid(unsafe_code)]

mod api;
mod auth;
mod error;
mod kinds;
mod openapi;
mod shared;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_config::{GatewayConfig, SecretValue};
use weir_server::Gateway;

pub use auth::DEV_USER;
pub use error::ApiError;
pub use openapi::document as openapi_document;
pub use store::StoreError;

use store::{ComponentChange, Revisions, Snapshot, Store};

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

/// How the controller is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the database and the uploaded components are kept.
    pub data_dir: PathBuf,
    /// Refuse to run without configured credentials.
    pub production: bool,
    /// An admin bearer token (from `WEIR_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
}

/// The state the controller manages: the document (with secrets, in memory only) and the
/// revision of each resource.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub document: GatewayConfig,
    pub revisions: Revisions,
    /// Uploaded components: policy name → SHA-256 (hex) of its bytes.
    pub uploaded: BTreeMap<String, String>,
    /// The version of the shared document (Redis) this state is (0: none yet, or not shared).
    pub shared_version: u64,
}

/// The controller of one gateway.
#[derive(Debug)]
pub struct Controller {
    gateway: Gateway,
    store: Store,
    /// The state every replica shares (with `kv.backend: redis`).
    shared: Option<shared::Shared>,
    current: tokio::sync::Mutex<Current>,
    auth: auth::Auth,
    components_dir: PathBuf,
}

/// The SHA-256 of `bytes`, hex.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The file an uploaded component is written to (the gateway loads policies from files).
fn component_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    component_path(dir, name, &digest(bytes))
}

fn component_path(dir: &Path, name: &str, digest: &str) -> PathBuf {
    dir.join(format!("{name}-{}.wasm", &digest[..16.min(digest.len())]))
}

/// The document with the parts that come from the file (server settings) taken from `file`.
fn with_file_settings(mut document: GatewayConfig, file: &GatewayConfig) -> GatewayConfig {
    document.listen = file.listen.clone();
    document.admin_listen = file.admin_listen.clone();
    document.controller = file.controller.clone();
    document.limits = file.limits.clone();
    document.runtime = file.runtime.clone();
    document.kv = file.kv.clone();
    document
}

impl Controller {
    /// Opens the store under `options.data_dir`. Returns the controller and the document the
    /// gateway must be built from: the stored one, or `file` for a new store (then stored).
    pub fn open(
        file: &GatewayConfig,
        options: &Options,
    ) -> Result<(StoreSeed, GatewayConfig), StartError> {
        let store = Store::open(&options.data_dir.join("controller.redb"))?;
        let components_dir = options.data_dir.join("components");
        let mut uploaded = BTreeMap::new();
        let (document, revisions, fresh) = match store.load()? {
            Some(snapshot) => {
                let mut document = with_file_settings(snapshot.document, file);
                for p in &mut document.providers {
                    if p.api_key.as_ref().is_some_and(SecretValue::is_redacted) {
                        p.api_key = snapshot.secrets.get(&p.name).map(SecretValue::new);
                    }
                }
                // Uploaded components live in the store; write their files again.
                let stored = store.components()?;
                for source in &mut document.policies {
                    if let Some(bytes) = stored.get(&source.name) {
                        uploaded.insert(source.name.clone(), digest(bytes));
                        let path = component_file(&components_dir, &source.name, bytes);
                        write_component(&path, bytes).map_err(StartError::Config)?;
                        source.path = path;
                    }
                }
                (document, snapshot.revisions, false)
            }
            None => {
                let mut revisions = Revisions::default();
                for key in kinds::resource_keys(file) {
                    revisions.bump(&key);
                }
                (file.clone(), revisions, true)
            }
        };
        Ok((
            StoreSeed {
                store,
                current: Current {
                    document: document.clone(),
                    revisions,
                    uploaded,
                    shared_version: 0,
                },
                fresh,
                components_dir,
                auth: auth::Auth::new(
                    &file.controller,
                    options.admin_token.as_deref(),
                    options.production,
                )
                .map_err(StartError::Config)?,
            },
            document,
        ))
    }

    /// Serves the API on `listener` until the process ends.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        api::serve(self, listener).await;
    }

    /// The document being served (secrets inside; serialise it only through `SecretValue`).
    pub(crate) async fn snapshot(&self) -> Current {
        self.current.lock().await.clone()
    }

    /// Applies a change: `f` edits a copy of the document (and the revisions); the result is
    /// validated, built, stored durably and served, in that order, or nothing happens.
    pub(crate) async fn change<T>(
        &self,
        components: Vec<ComponentChange>,
        f: impl FnOnce(&mut Current) -> Result<(T, Option<kinds::Focus>), ApiError>,
    ) -> Result<T, ApiError> {
        let mut current = self.current.lock().await;
        if let Some(shared) = &self.shared {
            // Changes apply to the newest shared document, or not at all.
            self.bring_in(shared, &mut current)
                .await
                .map_err(|e| e.refusal())?;
        }
        let mut next = current.clone();
        let (out, focus) = f(&mut next)?;
        let focus = focus.unwrap_or_default();
        next.document
            .validate()
            .map_err(|e| focus.error(&next.document, &e.path, e.message))?;
        let prepared = self
            .gateway
            .prepare(next.document.clone())
            .await
            .map_err(|e| build_error(&focus, &next.document, e))?;
        self.gateway
            .check_fetched(&prepared, &current.document)
            .await
            .map_err(|e| build_error(&focus, &next.document, e))?;
        for change in &components {
            match change {
                ComponentChange::Put(name, bytes) => {
                    next.uploaded.insert(name.clone(), digest(bytes));
                }
                ComponentChange::Delete(name) => {
                    next.uploaded.remove(name);
                }
            }
        }
        if let Some(shared) = &self.shared {
            next.shared_version = shared.publish(&next, &components).await?;
        }
        self.store
            .save(&to_snapshot(&next), &components)
            .map_err(|e| ApiError::internal(format!("the change was not stored: {e}")))?;
        self.gateway.commit(prepared);
        *current = next;
        Ok(out)
    }
}

/// A store opened and the document to build the gateway from; [`StoreSeed::start`] makes the
/// controller once the gateway exists.
#[derive(Debug)]
pub struct StoreSeed {
    store: Store,
    current: Current,
    fresh: bool,
    components_dir: PathBuf,
    auth: auth::Auth,
}

impl StoreSeed {
    /// The controller of `gateway` (built from the document [`Controller::open`] returned). A
    /// new store gets that document now. With `kv.backend: redis` the configuration is shared
    /// with every replica on that Redis (and prefix): a newer shared document replaces the local
    /// one now, and later changes arrive as they are made (see the `shared` module).
    pub async fn start(self, gateway: Gateway) -> Result<Arc<Controller>, StartError> {
        if self.fresh {
            self.store.save(&to_snapshot(&self.current), &[])?;
        }
        let shared = match self.current.document.kv.backend {
            weir_config::KvBackend::Redis => Some(
                shared::Shared::connect(&self.current.document.kv, self.components_dir.clone())
                    .await
                    .map_err(StartError::Config)?,
            ),
            weir_config::KvBackend::Memory => None,
        };
        let controller = Arc::new(Controller {
            gateway,
            store: self.store,
            shared,
            current: tokio::sync::Mutex::new(self.current),
            auth: self.auth,
            components_dir: self.components_dir,
        });
        if controller.shared.is_some() {
            controller.sync().await;
            tokio::spawn(controller.clone().follow());
        }
        Ok(controller)
    }
}

fn to_snapshot(current: &Current) -> Snapshot {
    let secrets: BTreeMap<String, String> = current
        .document
        .providers
        .iter()
        .filter_map(|p| {
            p.api_key
                .as_ref()
                .map(|k| (p.name.clone(), k.expose().to_owned()))
        })
        .collect();
    Snapshot {
        document: current.document.clone(),
        secrets,
        revisions: current.revisions.clone(),
    }
}

pub(crate) fn write_component(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    if path.exists() {
        return Ok(()); // named by its hash: already there
    }
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn build_error(
    focus: &kinds::Focus,
    document: &GatewayConfig,
    e: weir_server::ConfigureError,
) -> ApiError {
    match e {
        weir_server::ConfigureError::Config { path, message } => {
            focus.error(document, &path, message)
        }
        weir_server::ConfigureError::Load(e) => ApiError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_component",
            e.to_string(),
        ),
        weir_server::ConfigureError::Io(m) => ApiError::internal(m),
    }
}
