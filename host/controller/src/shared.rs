//! The configuration every replica shares, with `kv.backend: redis`.
//!
//! Redis holds one versioned document (the resources, the provider keys, the revisions and the
//! digests of uploaded components; the component bytes next to it by digest) under the
//! gateway's prefix. A change through any replica's controller is made on top of the newest
//! shared document, written by compare-and-set (two replicas changing at once: one wins, the
//! other answers 409), announced on a Redis channel, then stored locally and served.
//!
//! Every replica follows: on an announcement, and every second in case one was missed while
//! its subscription was down, it reads the version and, when it differs from its own, builds
//! the new document (components loaded, every policy configuration checked) and swaps it in
//! atomically, then stores it in its own database (so a restart starts from the last good
//! configuration even without Redis). A document this replica cannot build is logged and
//! skipped; it keeps serving what it has.
//!
//! When Redis does not answer, a replica keeps serving its last good configuration, and its
//! controller refuses changes (503) rather than diverge; it catches up when Redis answers again.
//! Redis emptied (restarted without persistence): the first replica to notice writes its own
//! document back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use weir_config::{GatewayConfig, KvSettings, SecretValue};
use weir_state::SharedDocument;

use crate::store::{ComponentChange, Revisions};
use crate::{
    ApiError, Controller, Current, component_path, digest, to_snapshot, with_file_settings,
    write_component,
};

/// What the shared document holds.
#[derive(Serialize, Deserialize)]
struct State {
    document: GatewayConfig,
    /// Provider keys by provider name (the document shows them as `***`).
    secrets: BTreeMap<String, String>,
    revisions: Revisions,
    /// Uploaded components: policy name → SHA-256 of the bytes (stored as blobs).
    components: BTreeMap<String, String>,
}

/// Why the shared document could not be brought in.
#[derive(Debug)]
pub(crate) enum SyncError {
    Unreachable(String),
    Rejected { version: u64, message: String },
}

impl SyncError {
    /// The answer to a change refused because of it.
    pub(crate) fn refusal(self) -> ApiError {
        match self {
            Self::Unreachable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "config_store_unavailable",
                format!(
                    "the shared configuration store does not answer ({m}); changes are refused until it \
                     does, so that replicas cannot diverge (this replica keeps serving its last good \
                     configuration)"
                ),
            ),
            Self::Rejected { version, message } => ApiError::conflict(
                "shared_config_rejected",
                format!(
                    "this replica cannot build the shared configuration version {version} ({message}); \
                     fix it through a replica that can, or replace it with PUT /api/v1/config"
                ),
            ),
        }
    }
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(m) => {
                write!(f, "the shared configuration store does not answer: {m}")
            }
            Self::Rejected { version, message } => {
                write!(
                    f,
                    "shared configuration version {version} not applied: {message}"
                )
            }
        }
    }
}

/// The shared document and what this replica knows about it.
#[derive(Debug)]
pub(crate) struct Shared {
    doc: SharedDocument,
    components_dir: PathBuf,
    /// A version this replica could not build (not tried again).
    rejected: std::sync::atomic::AtomicU64,
    /// The last problem logged (each one is logged once, and its end).
    problem: std::sync::Mutex<Option<String>>,
}

impl Shared {
    pub(crate) async fn connect(kv: &KvSettings, components_dir: PathBuf) -> Result<Self, String> {
        let options = weir_server::redis_options(kv).map_err(|e| e.to_string())?;
        let doc = SharedDocument::connect(&options, "controller")
            .await
            .map_err(|e| format!("kv.url: the shared configuration store: {e}"))?;
        Ok(Self {
            doc,
            components_dir,
            rejected: std::sync::atomic::AtomicU64::new(0),
            problem: std::sync::Mutex::new(None),
        })
    }

    /// Writes `next` as the version after the one it was made from; returns the new version.
    pub(crate) async fn publish(
        &self,
        next: &Current,
        components: &[ComponentChange],
    ) -> Result<u64, ApiError> {
        let unreachable = |e: weir_state::KvError| SyncError::Unreachable(e.to_string()).refusal();
        for change in components {
            if let ComponentChange::Put(_, bytes) = change {
                self.doc
                    .put_blob(&digest(bytes), bytes)
                    .await
                    .map_err(unreachable)?;
            }
        }
        let snapshot = to_snapshot(next);
        let state = State {
            document: snapshot.document,
            secrets: snapshot.secrets,
            revisions: snapshot.revisions,
            components: next.uploaded.clone(),
        };
        let bytes = serde_json::to_vec(&state).map_err(|e| ApiError::internal(e.to_string()))?;
        let version = next.shared_version + 1;
        if self
            .doc
            .replace(next.shared_version, version, &bytes)
            .await
            .map_err(unreachable)?
        {
            Ok(version)
        } else {
            Err(ApiError::conflict(
                "changed_elsewhere",
                "another replica changed the configuration at the same time; read it again and retry",
            ))
        }
    }

    fn report(&self, outcome: Result<(), &SyncError>) {
        let mut problem = self
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                if problem.take().is_some() {
                    tracing::info!("the shared configuration is in sync again");
                }
            }
            Err(e) => {
                let text = e.to_string();
                // An outage is logged once (its messages vary); each rejected version once.
                let kind = match e {
                    SyncError::Unreachable(_) => "unreachable".to_owned(),
                    SyncError::Rejected { .. } => text.clone(),
                };
                if problem.as_deref() != Some(kind.as_str()) {
                    match e {
                        SyncError::Unreachable(_) => tracing::warn!(
                            "{text}; serving the last good configuration and refusing changes until it answers"
                        ),
                        SyncError::Rejected { .. } => tracing::error!("{text}"),
                    }
                    *problem = Some(kind);
                }
            }
        }
    }
}

impl Controller {
    /// Brings the shared document into `current` when its version differs; an empty store gets
    /// `current`. Called with the lock on `current` held.
    pub(crate) async fn bring_in(
        &self,
        shared: &Shared,
        current: &mut Current,
    ) -> Result<(), SyncError> {
        let unreachable = |e: weir_state::KvError| SyncError::Unreachable(e.to_string());
        let version = shared.doc.version().await.map_err(unreachable)?;
        if version == current.shared_version && version != 0 {
            return Ok(());
        }
        let rejected = shared.rejected.load(std::sync::atomic::Ordering::Relaxed);
        if version == rejected && version != 0 {
            return Err(SyncError::Rejected {
                version,
                message: "see the log of this replica".into(),
            });
        }
        let Some((version, bytes)) = shared.doc.load().await.map_err(unreachable)? else {
            // Nothing shared yet (a new store, or Redis emptied): ours becomes the document.
            let mut next = current.clone();
            next.shared_version = 0;
            let components: Vec<ComponentChange> = self
                .store
                .components()
                .map_err(|e| SyncError::Unreachable(e.to_string()))?
                .into_iter()
                .map(|(name, bytes)| ComponentChange::Put(name, bytes))
                .collect();
            match shared.publish(&next, &components).await {
                Ok(v) => {
                    current.shared_version = v;
                    tracing::info!(
                        version = v,
                        "stored this replica's configuration as the shared one"
                    );
                    return Ok(());
                }
                // Someone else was first: bring theirs in next time.
                Err(e) if e.status == StatusCode::CONFLICT => return Ok(()),
                Err(e) => return Err(SyncError::Unreachable(e.message)),
            }
        };
        let reject = |message: String| {
            shared
                .rejected
                .store(version, std::sync::atomic::Ordering::Relaxed);
            SyncError::Rejected { version, message }
        };
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| reject(format!("the shared document is unreadable: {e}")))?;
        let mut document = with_file_settings(state.document, &current.document);
        for p in &mut document.providers {
            if p.api_key.as_ref().is_some_and(SecretValue::is_redacted) {
                p.api_key = state.secrets.get(&p.name).map(SecretValue::new);
            }
        }
        // Uploaded components: the files this replica does not have yet come from the blobs.
        let mut changes = Vec::new();
        for (name, sha) in &state.components {
            let path = component_path(&shared.components_dir, name, sha);
            if current.uploaded.get(name) != Some(sha) || !path.exists() {
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(_) => shared
                        .doc
                        .blob(sha)
                        .await
                        .map_err(unreachable)?
                        .ok_or_else(|| reject(format!("component `{name}` ({sha}) is missing")))?,
                };
                if digest(&bytes) != *sha {
                    return Err(reject(format!(
                        "component `{name}` does not match its digest"
                    )));
                }
                write_component(&path, &bytes).map_err(reject)?;
                changes.push(ComponentChange::Put(name.clone(), bytes));
            }
            if let Some(source) = document.policies.iter_mut().find(|p| &p.name == name) {
                source.path = path;
            }
        }
        for name in current.uploaded.keys() {
            if !state.components.contains_key(name) {
                changes.push(ComponentChange::Delete(name.clone()));
            }
        }
        document
            .validate()
            .map_err(|e| reject(format!("{}: {}", e.path, e.message)))?;
        let prepared = self
            .gateway
            .prepare(document.clone())
            .await
            .map_err(|e| reject(e.to_string()))?;
        let next = Current {
            document,
            revisions: state.revisions,
            uploaded: state.components,
            shared_version: version,
        };
        self.store
            .save(&to_snapshot(&next), &changes)
            .map_err(|e| reject(format!("storing it locally: {e}")))?;
        self.gateway.commit(prepared);
        *current = next;
        tracing::info!(version, "applied the shared configuration");
        Ok(())
    }

    /// Brings the shared document in now (logs what goes wrong).
    pub(crate) async fn sync(&self) {
        let Some(shared) = &self.shared else { return };
        let mut current = self.current.lock().await;
        let outcome = self.bring_in(shared, &mut current).await;
        shared.report(outcome.as_ref().map(|_| ()));
    }

    /// Follows the shared document for as long as the process runs: on each announcement, and
    /// every second (announcements are lost while the subscription is down).
    pub(crate) async fn follow(self: Arc<Self>) {
        let Some(shared) = &self.shared else { return };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changes = shared.doc.changes().await;
            self.sync().await;
            match changes {
                Ok(mut changes) => loop {
                    tokio::select! {
                        announced = changes.next() => if announced.is_none() { break },
                        _ = tick.tick() => {}
                    }
                    self.sync().await;
                },
                Err(_) => {
                    tick.tick().await;
                }
            }
        }
    }
}
