//! The controller's durable state: one embedded database file (redb, `<data-dir>/controller.redb`).
//!
//! Each change is one write transaction, committed (and fsynced) before the API answers. It
//! holds the resource document (the configuration's providers, proxies, templates, MCP proxies
//! and policy list, without secrets), the secrets apart (provider API keys, which the document
//! only ever shows as `***`), the revision of every resource (its ETag), and the bytes of the
//! uploaded policy components.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use weir_config::GatewayConfig;

const STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("state");
const COMPONENTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("components");

const DOCUMENT: &str = "document";
const SECRETS: &str = "secrets";
const REVISIONS: &str = "revisions";

/// Why the store failed; the API answers 500 and nothing changes.
#[derive(Debug, thiserror::Error)]
#[error("controller store {file}: {message}")]
pub struct StoreError {
    file: String,
    message: String,
}

/// The revision of every resource, and the last one handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revisions {
    pub last: u64,
    /// `kind/name` → revision of its last change.
    pub of: BTreeMap<String, u64>,
}

impl Revisions {
    /// Marks `key` changed now; returns its new revision.
    pub fn bump(&mut self, key: &str) -> u64 {
        self.last += 1;
        self.of.insert(key.to_owned(), self.last);
        self.last
    }

    pub fn get(&self, key: &str) -> u64 {
        self.of.get(key).copied().unwrap_or(0)
    }

    pub fn remove(&mut self, key: &str) {
        self.last += 1;
        self.of.remove(key);
    }
}

/// What the store holds (the document's provider keys are in `secrets`, by provider name).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub document: GatewayConfig,
    pub secrets: BTreeMap<String, String>,
    pub revisions: Revisions,
}

/// A change to the stored component bytes.
#[derive(Debug)]
pub enum ComponentChange {
    Put(String, Vec<u8>),
    Delete(String),
}

#[derive(Debug)]
pub struct Store {
    db: Database,
    file: String,
}

impl Store {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError {
                file: file.clone(),
                message: format!("cannot create its directory: {e}"),
            })?;
        }
        let db = Database::create(path).map_err(|e| StoreError {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Ok(Self { db, file })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            file: self.file.clone(),
            message: e.to_string(),
        }
    }

    /// The stored state, or `None` for a new store.
    pub fn load(&self) -> Result<Option<Snapshot>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let read = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(table
                .get(key)
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_vec()))
        };
        let Some(document) = read(DOCUMENT)? else {
            return Ok(None);
        };
        let document: GatewayConfig = serde_json::from_slice(&document)
            .map_err(|e| self.err(format!("the stored document is unreadable: {e}")))?;
        let secrets = match read(SECRETS)? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| self.err(e))?,
            None => BTreeMap::new(),
        };
        let revisions = match read(REVISIONS)? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| self.err(e))?,
            None => Revisions::default(),
        };
        Ok(Some(Snapshot {
            document,
            secrets,
            revisions,
        }))
    }

    /// Every stored component, by policy name.
    pub fn components(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(COMPONENTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            out.insert(k.value().to_owned(), v.value().to_vec());
        }
        Ok(out)
    }

    /// Writes `snapshot` and the component changes in one durable transaction.
    pub fn save(
        &self,
        snapshot: &Snapshot,
        components: &[ComponentChange],
    ) -> Result<(), StoreError> {
        // The document serialises provider keys as `***`; the keys go to `secrets`.
        let document = serde_json::to_vec(&snapshot.document).map_err(|e| self.err(e))?;
        let secrets = serde_json::to_vec(&snapshot.secrets).map_err(|e| self.err(e))?;
        let revisions = serde_json::to_vec(&snapshot.revisions).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(STATE).map_err(|e| self.err(e))?;
            for (k, v) in [
                (DOCUMENT, &document),
                (SECRETS, &secrets),
                (REVISIONS, &revisions),
            ] {
                table.insert(k, v.as_slice()).map_err(|e| self.err(e))?;
            }
            let mut wasm = txn.open_table(COMPONENTS).map_err(|e| self.err(e))?;
            for change in components {
                match change {
                    ComponentChange::Put(name, bytes) => {
                        wasm.insert(name.as_str(), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    ComponentChange::Delete(name) => {
                        wasm.remove(name.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}
