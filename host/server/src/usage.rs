//! Usage records: one per request that reached a proxy, written as JSON lines.
//!
//! Records are appended by a background writer every 50 ms, so the request path never waits on
//! the disk nor wakes a thread (the durable store comes with the controller); totals per consumer are kept in memory for queries.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use weir_core::UsageRecord;

/// Totals of one consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// US dollars, for the requests whose model has a price.
    pub cost_usd: f64,
}

/// Where usage records go.
#[derive(Debug, Clone)]
pub struct UsageLog {
    /// Records waiting for the writer thread (when writing to a file).
    pending: Option<Arc<Mutex<Vec<UsageRecord>>>>,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    totals: HashMap<String, Totals>,
    recent: std::collections::VecDeque<UsageRecord>,
}

const RECENT: usize = 10_000;
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl UsageLog {
    /// Records to `path` (JSON lines) if given, and always in memory. Call from a tokio runtime.
    pub fn new(path: Option<PathBuf>) -> std::io::Result<Self> {
        let pending: Arc<Mutex<Vec<UsageRecord>>> = Arc::default();
        let writer = match path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let queue = pending.clone();
                // Flushes every FLUSH_EVERY instead of waking a thread per record: the request
                // path only pushes to a vector.
                std::thread::Builder::new()
                    .name("weir-usage".into())
                    .spawn(move || {
                        let mut out = std::io::BufWriter::new(file);
                        let mut batch = Vec::new();
                        loop {
                            std::thread::sleep(FLUSH_EVERY);
                            std::mem::swap(
                                &mut batch,
                                &mut *queue
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                            );
                            if batch.is_empty() {
                                if Arc::strong_count(&queue) == 1 {
                                    return;
                                }
                                continue;
                            }
                            let result = batch.drain(..).try_for_each(|r| {
                                serde_json::to_writer(&mut out, &r)?;
                                out.write_all(b"\n")
                            });
                            if let Err(e) = result.and_then(|()| out.flush()) {
                                tracing::error!(error = %e, "writing usage records failed");
                            }
                        }
                    })?;
                Some(pending)
            }
            None => None,
        };
        Ok(Self {
            pending: writer,
            inner: Arc::default(),
        })
    }

    pub fn record(&self, record: UsageRecord) {
        {
            let mut inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let t = inner
                .totals
                .entry(record.consumer.clone().unwrap_or_else(|| "-".into()))
                .or_default();
            t.requests += 1;
            t.prompt_tokens += record.prompt_tokens;
            t.completion_tokens += record.completion_tokens;
            t.total_tokens += record.total_tokens;
            t.cost_usd += record.cost_usd.unwrap_or(0.0);
            if inner.recent.len() == RECENT {
                inner.recent.pop_front();
            }
            inner.recent.push_back(record.clone());
        }
        if let Some(pending) = &self.pending {
            pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(record);
        }
    }

    /// Totals of a consumer (`-` for unauthenticated requests).
    pub fn totals(&self, consumer: &str) -> Totals {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.totals.get(consumer).copied().unwrap_or_default()
    }

    /// Totals of every consumer (`-` for unauthenticated requests), by name.
    pub fn all_totals(&self) -> Vec<(String, Totals)> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<(String, Totals)> =
            inner.totals.iter().map(|(c, t)| (c.clone(), *t)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The most recent records (up to 10 000), oldest first.
    pub fn recent(&self) -> Vec<UsageRecord> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.recent.iter().cloned().collect()
    }
}
