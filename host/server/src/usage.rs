//! Usage records: one per request that reached a proxy, written as JSON lines.
//!
//! Records are appended by a background writer every 50 ms, so the request path never waits on
//! the disk nor wakes a thread; totals per consumer are kept in memory for queries. With
//! `kv.backend: redis` the totals are also added to Redis (in batches, every 100 ms; kept and
//! retried while Redis does not answer), so `/usage` answers for the whole gateway on every
//! replica.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use weir_state::{Amount, SharedTotals};

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

impl Totals {
    fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cost_usd += other.cost_usd;
    }

    fn of(record: &UsageRecord) -> Self {
        Self {
            requests: 1,
            prompt_tokens: record.prompt_tokens,
            completion_tokens: record.completion_tokens,
            total_tokens: record.total_tokens,
            cost_usd: record.cost_usd.unwrap_or(0.0),
        }
    }

    fn amounts(&self) -> Vec<(&'static str, Amount)> {
        let count = |n: u64| Amount::Count(i64::try_from(n).unwrap_or(i64::MAX));
        vec![
            ("requests", count(self.requests)),
            ("prompt_tokens", count(self.prompt_tokens)),
            ("completion_tokens", count(self.completion_tokens)),
            ("total_tokens", count(self.total_tokens)),
            ("cost_usd", Amount::Decimal(self.cost_usd)),
        ]
    }

    fn from_fields(fields: &std::collections::BTreeMap<String, f64>) -> Self {
        let count = |f: &str| fields.get(f).copied().unwrap_or(0.0) as u64;
        Self {
            requests: count("requests"),
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            total_tokens: count("total_tokens"),
            cost_usd: fields.get("cost_usd").copied().unwrap_or(0.0),
        }
    }
}

/// Whose totals an answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every replica sharing the store.
    Gateway,
    /// This process only (no shared store, or it does not answer).
    Replica,
}

/// Where usage records go.
#[derive(Debug, Clone)]
pub struct UsageLog {
    /// Records waiting for the writer thread (when writing to a file).
    pending: Option<Arc<Mutex<Vec<UsageRecord>>>>,
    /// Records handed to the writer, and records it has written (and flushed).
    progress: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
    inner: Arc<Mutex<Inner>>,
    shared: Option<Arc<Shared>>,
}

/// Totals added to Redis (what is not there yet is `Inner::unsent`, under the same lock as the
/// local totals, so a record takes one lock).
#[derive(Debug)]
struct Shared {
    totals: SharedTotals,
    inner: Arc<Mutex<Inner>>,
    /// Serialises sends, so that a failed batch is put back before the next one is taken.
    sending: tokio::sync::Mutex<bool>,
}

const SEND_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Shared {
    /// Sends what is unsent; on failure keeps it for the next time.
    async fn send(&self) -> Result<(), weir_state::KvError> {
        let mut failing = self.sending.lock().await;
        let batch = std::mem::take(
            &mut self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unsent,
        );
        let amounts = batch
            .iter()
            .map(|(c, t)| (c.clone(), t.amounts()))
            .collect();
        match self.totals.add(&amounts).await {
            Ok(()) => {
                if std::mem::replace(&mut *failing, false) {
                    tracing::info!("usage totals reach the shared store again");
                }
                Ok(())
            }
            Err(e) => {
                let mut inner = self
                    .inner
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (c, t) in batch {
                    inner.unsent.entry(c).or_default().add(&t);
                }
                if !std::mem::replace(&mut *failing, true) {
                    tracing::warn!(error = %e, "usage totals cannot reach the shared store; kept and retried");
                }
                Err(e)
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    totals: HashMap<String, Totals>,
    recent: std::collections::VecDeque<UsageRecord>,
    /// Totals not yet added to the shared store (only when there is one).
    unsent: HashMap<String, Totals>,
}

const RECENT: usize = 10_000;
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl UsageLog {
    /// Records to `path` (JSON lines) if given, and always in memory. Call from a tokio runtime.
    pub fn new(path: Option<PathBuf>) -> std::io::Result<Self> {
        let pending: Arc<Mutex<Vec<UsageRecord>>> = Arc::default();
        let progress: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)> =
            Arc::default();
        let written = progress.clone();
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
                            let n = batch.len() as u64;
                            let result = batch.drain(..).try_for_each(|r| {
                                serde_json::to_writer(&mut out, &r)?;
                                out.write_all(b"\n")
                            });
                            if let Err(e) = result.and_then(|()| out.flush()) {
                                tracing::error!(error = %e, "writing usage records failed");
                            }
                            written.1.fetch_add(n, std::sync::atomic::Ordering::Release);
                        }
                    })?;
                Some(pending)
            }
            None => None,
        };
        Ok(Self {
            pending: writer,
            progress,
            inner: Arc::default(),
            shared: None,
        })
    }

    /// Also adds the totals to `totals` (shared by every replica), every 100 ms.
    pub(crate) fn share(&mut self, totals: SharedTotals) {
        let shared = Arc::new(Shared {
            totals,
            inner: self.inner.clone(),
            sending: tokio::sync::Mutex::new(false),
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SEND_EVERY);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                let _ = shared.send().await;
            }
        });
        self.shared = Some(shared);
    }

    /// Waits (up to 2 s) until every record is in the file and the totals are in the shared
    /// store: at shutdown.
    pub async fn flush(&self) {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        if self.pending.is_some() {
            let queued = self.progress.0.load(Ordering::Acquire);
            // The writer wakes every 50 ms; wait for it to pass the records queued so far.
            while self.progress.1.load(Ordering::Acquire) < queued
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(FLUSH_EVERY / 5).await;
            }
        }
        if let Some(shared) = &self.shared {
            let _ = tokio::time::timeout_at(deadline, shared.send()).await;
        }
    }

    /// Totals of every consumer for the whole gateway when they are shared (this replica's
    /// unsent ones sent first), else (or when the store does not answer) this process's.
    pub async fn gateway_totals(&self) -> (Scope, Vec<(String, Totals)>) {
        if let Some(shared) = &self.shared
            && shared.send().await.is_ok()
            && let Ok(all) = shared.totals.all().await
        {
            let totals = all
                .iter()
                .map(|(c, fields)| (c.clone(), Totals::from_fields(fields)))
                .collect();
            return (Scope::Gateway, totals);
        }
        (Scope::Replica, self.all_totals())
    }

    pub fn record(&self, record: UsageRecord) {
        {
            let mut inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let consumer = record.consumer.clone().unwrap_or_else(|| "-".into());
            let add = Totals::of(&record);
            if self.shared.is_some() {
                inner.unsent.entry(consumer.clone()).or_default().add(&add);
            }
            inner.totals.entry(consumer).or_default().add(&add);
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
            self.progress
                .0
                .fetch_add(1, std::sync::atomic::Ordering::Release);
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
