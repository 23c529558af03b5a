//! Running totals that several processes add to, in Redis: one hash per member (e.g. a
//! consumer: `<prefix><name>:<member>`, a field per quantity) and a set of the members
//! (`<prefix><name>:members`). Additions are sent in batches, in one pipeline.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::KvError;
use crate::redis::{Link, RedisOptions};

/// An amount to add to one field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Count(i64),
    /// Added with `HINCRBYFLOAT` (money).
    Decimal(f64),
}

/// Totals shared in Redis.
pub struct SharedTotals {
    link: Link,
    base: String,
}

impl std::fmt::Debug for SharedTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTotals")
            .field("url", &self.link.url)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl SharedTotals {
    /// Totals `name` in the Redis of `options` (its prefix, password and TLS).
    pub async fn connect(options: &RedisOptions, name: &str) -> Result<Self, KvError> {
        Ok(Self {
            link: Link::open(options, Duration::from_secs(1), 1).await?,
            base: format!("{}{name}:", options.prefix),
        })
    }

    /// Adds every amount of `batch` (member → field → amount), atomically as a whole.
    pub async fn add(
        &self,
        batch: &BTreeMap<String, Vec<(&'static str, Amount)>>,
    ) -> Result<(), KvError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let members = format!("{}members", self.base);
        for (member, amounts) in batch {
            pipe.cmd("SADD").arg(&members).arg(member).ignore();
            let key = format!("{}m:{member}", self.base);
            for (field, amount) in amounts {
                match amount {
                    Amount::Count(n) => pipe.cmd("HINCRBY").arg(&key).arg(*field).arg(*n),
                    Amount::Decimal(x) => pipe.cmd("HINCRBYFLOAT").arg(&key).arg(*field).arg(*x),
                }
                .ignore();
            }
        }
        let mut conn = self.link.conn.clone();
        self.link.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// Every member's fields, by member.
    pub async fn all(&self) -> Result<BTreeMap<String, BTreeMap<String, f64>>, KvError> {
        let mut conn = self.link.conn.clone();
        let members: Vec<String> = self
            .link
            .timed(
                redis::cmd("SMEMBERS")
                    .arg(format!("{}members", self.base))
                    .query_async(&mut conn),
            )
            .await?;
        if members.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut pipe = redis::pipe();
        for member in &members {
            pipe.cmd("HGETALL").arg(format!("{}m:{member}", self.base));
        }
        let hashes: Vec<BTreeMap<String, String>> =
            self.link.timed(pipe.query_async(&mut conn)).await?;
        Ok(members
            .into_iter()
            .zip(hashes)
            .map(|(m, fields)| {
                let fields = fields
                    .into_iter()
                    .map(|(f, v)| (f, v.parse().unwrap_or(0.0)))
                    .collect();
                (m, fields)
            })
            .collect())
    }
}
