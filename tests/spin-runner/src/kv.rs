//! Spin's key-value stores as this host keeps them: one map per store label, shared by every
//! request, optionally persisted to a JSON file after each change (Spin's default store is a
//! SQLite file, so data survives a restart there too). Each key has a version, bumped on every
//! write, which is what a compare-and-swap compares.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    /// label → key → value (hex, to keep the file readable and exact).
    stores: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<(String, String), (u64, Vec<u8>)>,
    next_version: u64,
}

/// All stores of the app.
#[derive(Debug, Clone)]
pub struct Stores {
    inner: Arc<Mutex<Inner>>,
    labels: Arc<Vec<String>>,
    file: Option<Arc<PathBuf>>,
}

/// A key's version and value when a compare-and-swap began (`None`: absent).
pub type Snapshot = Option<(u64, Vec<u8>)>;

impl Stores {
    /// The stores `labels`, loaded from `file` if it exists.
    pub fn open(labels: Vec<String>, file: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut inner = Inner::default();
        if let Some(f) = file.as_ref().filter(|f| f.exists()) {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let data: Data =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
            for (label, map) in data.stores {
                for (key, hex) in map {
                    inner.next_version += 1;
                    let value =
                        decode_hex(&hex).with_context(|| format!("{}: {key}", f.display()))?;
                    inner
                        .values
                        .insert((label.clone(), key), (inner.next_version, value));
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            labels: Arc::new(labels),
            file: file.map(Arc::new),
        })
    }

    /// Whether the app may open the store `label`.
    pub fn allowed(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, label: &str, key: &str) -> Option<Vec<u8>> {
        self.snapshot(label, key).map(|(_, v)| v)
    }

    pub fn snapshot(&self, label: &str, key: &str) -> Snapshot {
        self.lock()
            .values
            .get(&(label.to_owned(), key.to_owned()))
            .cloned()
    }

    pub fn set(&self, label: &str, key: &str, value: Vec<u8>) -> Result<(), String> {
        let mut inner = self.lock();
        inner.next_version += 1;
        let v = inner.next_version;
        inner
            .values
            .insert((label.to_owned(), key.to_owned()), (v, value));
        self.persist(&inner)
    }

    pub fn delete(&self, label: &str, key: &str) -> Result<(), String> {
        let mut inner = self.lock();
        inner.values.remove(&(label.to_owned(), key.to_owned()));
        self.persist(&inner)
    }

    pub fn keys(&self, label: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock()
            .values
            .keys()
            .filter(|(l, _)| l == label)
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Writes `value` if `key` is still as in `seen`; otherwise returns the current snapshot.
    pub fn swap(
        &self,
        label: &str,
        key: &str,
        seen: &Snapshot,
        value: Vec<u8>,
    ) -> Result<Result<(), Snapshot>, String> {
        let mut inner = self.lock();
        let id = (label.to_owned(), key.to_owned());
        let current = inner.values.get(&id).cloned();
        if current.as_ref().map(|(v, _)| *v) != seen.as_ref().map(|(v, _)| *v) {
            return Ok(Err(current));
        }
        inner.next_version += 1;
        let v = inner.next_version;
        inner.values.insert(id, (v, value));
        self.persist(&inner).map(Ok)
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0), as Spin's `increment` does.
    pub fn increment(&self, label: &str, key: &str, delta: i64) -> Result<i64, String> {
        let mut inner = self.lock();
        let id = (label.to_owned(), key.to_owned());
        let current = match inner.values.get(&id) {
            None => 0,
            Some((_, v)) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| format!("the value at `{key}` is not an integer"))?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| format!("incrementing `{key}` overflows"))?;
        inner.next_version += 1;
        let v = inner.next_version;
        inner.values.insert(id, (v, next.to_string().into_bytes()));
        self.persist(&inner)?;
        Ok(next)
    }

    fn persist(&self, inner: &Inner) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut data = Data::default();
        for ((label, key), (_, value)) in &inner.values {
            data.stores
                .entry(label.clone())
                .or_default()
                .insert(key.clone(), encode_hex(value));
        }
        let text = serde_json::to_string(&data).map_err(|e| e.to_string())?;
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, file.as_path()))
            .map_err(|e| format!("writing {}: {e}", file.display()))
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(s.len().is_multiple_of(2), "odd-length hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("invalid hex"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_fails_after_a_concurrent_write_and_reports_the_new_value() {
        let s = Stores::open(vec!["default".into()], None).unwrap();
        let seen = s.snapshot("default", "k");
        s.set("default", "k", b"1".to_vec()).unwrap();
        let now = s
            .swap("default", "k", &seen, b"2".to_vec())
            .unwrap()
            .unwrap_err();
        assert_eq!(now.map(|(_, v)| v), Some(b"1".to_vec()));
        let seen = s.snapshot("default", "k");
        s.swap("default", "k", &seen, b"2".to_vec())
            .unwrap()
            .unwrap();
        assert_eq!(s.get("default", "k"), Some(b"2".to_vec()));
    }

    #[test]
    fn data_survives_a_reopen_of_the_file() {
        let dir = std::env::temp_dir().join(format!("weir-spin-runner-kv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kv.json");
        let _ = std::fs::remove_file(&file);
        let s = Stores::open(vec!["default".into()], Some(file.clone())).unwrap();
        s.set("default", "a", vec![0, 255]).unwrap();
        assert_eq!(s.increment("default", "n", 5).unwrap(), 5);
        drop(s);
        let s = Stores::open(vec!["default".into()], Some(file)).unwrap();
        assert_eq!(s.get("default", "a"), Some(vec![0, 255]));
        assert_eq!(s.increment("default", "n", -2).unwrap(), 3);
    }
}
