//! The vector index behind `weir:policy/vectors`: cosine similarity over normalised vectors,
//! with metadata and expiry. One implementation of the semantics for every target: `weir` keeps
//! indexes in memory, the edge keeps each index as one value in the platform's key-value store
//! ([`VectorIndex::encode`]).
//!
//! ```
//! use weir_core::vectors::VectorIndex;
//! let mut index = VectorIndex::default();
//! index.upsert("a", &[1.0, 0.0], b"first".to_vec(), None, 0, 10).unwrap();
//! index.upsert("b", &[0.0, 1.0], b"second".to_vec(), None, 0, 10).unwrap();
//! let hits = index.query(&[0.9, 0.1], 5, 0.5, 0).unwrap();
//! assert_eq!(hits[0].id, "a");
//! let copy = VectorIndex::decode(&index.encode()).unwrap();
//! assert_eq!(copy.len(), 2);
//! ```

/// Largest dimension accepted.
pub const MAX_DIMENSIONS: usize = 8192;
/// Largest metadata accepted per vector.
pub const MAX_METADATA: usize = 64 << 10;

/// A vector found by a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    pub id: String,
    /// Cosine similarity, -1 to 1.
    pub score: f32,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    id: String,
    /// Unit length.
    vector: Vec<f32>,
    metadata: Vec<u8>,
    /// Milliseconds since the Unix epoch; `None` never expires.
    expires_at_ms: Option<u64>,
}

/// One index: its vectors, all of one dimension.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorIndex {
    entries: Vec<Entry>,
}

fn normalised(vector: &[f32]) -> Result<Vec<f32>, String> {
    if vector.is_empty() || vector.len() > MAX_DIMENSIONS {
        return Err(format!(
            "a vector must have 1 to {MAX_DIMENSIONS} dimensions (this one has {})",
            vector.len()
        ));
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err("a vector must not contain NaN or infinities".into());
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return Err("a vector must not be all zeros".into());
    }
    Ok(vector.iter().map(|x| x / norm).collect())
}

impl VectorIndex {
    /// How many vectors it holds (expired ones included until the next write).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn dimensions(&self) -> Option<usize> {
        self.entries.first().map(|e| e.vector.len())
    }

    /// Drops expired vectors.
    pub fn expire(&mut self, now_ms: u64) {
        self.entries
            .retain(|e| e.expires_at_ms.is_none_or(|t| t > now_ms));
    }

    /// Adds or replaces `id`. When the index is full (`max_entries`), the vector that expires
    /// first (or the oldest) makes room.
    pub fn upsert(
        &mut self,
        id: &str,
        vector: &[f32],
        metadata: Vec<u8>,
        ttl_ms: Option<u64>,
        now_ms: u64,
        max_entries: usize,
    ) -> Result<(), String> {
        if metadata.len() > MAX_METADATA {
            return Err(format!(
                "metadata is limited to {MAX_METADATA} bytes per vector"
            ));
        }
        let vector = normalised(vector)?;
        self.expire(now_ms);
        self.entries.retain(|e| e.id != id);
        if let Some(d) = self.dimensions()
            && d != vector.len()
        {
            return Err(format!(
                "this index holds vectors of {d} dimensions, not {}",
                vector.len()
            ));
        }
        while self.entries.len() >= max_entries.max(1) {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(i, e)| (e.expires_at_ms.unwrap_or(u64::MAX), *i))
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.entries.remove(victim);
        }
        self.entries.push(Entry {
            id: id.to_owned(),
            vector,
            metadata,
            expires_at_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
        });
        Ok(())
    }

    /// The nearest vectors with a similarity of at least `min_score`, best first.
    pub fn query(
        &self,
        vector: &[f32],
        limit: usize,
        min_score: f32,
        now_ms: u64,
    ) -> Result<Vec<Neighbour>, String> {
        let q = normalised(vector)?;
        if let Some(d) = self.dimensions()
            && d != q.len()
        {
            return Err(format!(
                "this index holds vectors of {d} dimensions, not {}",
                q.len()
            ));
        }
        let mut hits: Vec<(f32, &Entry)> = self
            .entries
            .iter()
            .filter(|e| e.expires_at_ms.is_none_or(|t| t > now_ms))
            .map(|e| (e.vector.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), e))
            .filter(|(s, _)| *s >= min_score)
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0));
        hits.truncate(limit);
        Ok(hits
            .into_iter()
            .map(|(score, e)| Neighbour {
                id: e.id.clone(),
                score,
                metadata: e.metadata.clone(),
            })
            .collect())
    }

    /// Removes `id` (nothing if absent).
    pub fn delete(&mut self, id: &str) {
        self.entries.retain(|e| e.id != id);
    }

    /// The index as bytes (for a key-value store).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"WVI1");
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&(e.id.len() as u32).to_le_bytes());
            out.extend_from_slice(e.id.as_bytes());
            out.extend_from_slice(&(e.vector.len() as u32).to_le_bytes());
            for x in &e.vector {
                out.extend_from_slice(&x.to_le_bytes());
            }
            out.extend_from_slice(&(e.metadata.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.metadata);
            out.extend_from_slice(&e.expires_at_ms.unwrap_or(0).to_le_bytes());
        }
        out
    }

    /// Reads an index written by [`VectorIndex::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != b"WVI1" {
            return Err("not a vector index".into());
        }
        let n = r.u32()? as usize;
        let mut entries = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let id_len = r.u32()? as usize;
            let id = String::from_utf8(r.take(id_len)?.to_vec()).map_err(|e| e.to_string())?;
            let dim = r.u32()? as usize;
            if dim > MAX_DIMENSIONS {
                return Err("vector too large".into());
            }
            let mut vector = Vec::with_capacity(dim);
            for _ in 0..dim {
                let b = r.take(4)?;
                vector.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
            let meta_len = r.u32()? as usize;
            let metadata = r.take(meta_len)?.to_vec();
            let b = r.take(8)?;
            let mut t = [0u8; 8];
            t.copy_from_slice(b);
            let expires = u64::from_le_bytes(t);
            entries.push(Entry {
                id,
                vector,
                metadata,
                expires_at_ms: (expires != 0).then_some(expires),
            });
        }
        Ok(Self { entries })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| "truncated vector index".to_owned())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_first_above_the_threshold_and_expiring() {
        let mut ix = VectorIndex::default();
        ix.upsert("x", &[1.0, 0.0, 0.0], b"x".to_vec(), Some(100), 1000, 10)
            .unwrap();
        ix.upsert("y", &[1.0, 1.0, 0.0], b"y".to_vec(), None, 1000, 10)
            .unwrap();
        ix.upsert("z", &[0.0, 0.0, 1.0], b"z".to_vec(), None, 1000, 10)
            .unwrap();
        let hits = ix.query(&[2.0, 0.0, 0.0], 10, 0.5, 1050).unwrap();
        let ids: Vec<_> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, vec!["x", "y"]);
        assert!((hits[0].score - 1.0).abs() < 1e-6);
        // x expired at 1100.
        let ids: Vec<_> = ix
            .query(&[2.0, 0.0, 0.0], 10, 0.5, 1100)
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(ids, vec!["y".to_owned()]);
    }

    #[test]
    fn refuses_bad_vectors_and_bounds_the_size() {
        let mut ix = VectorIndex::default();
        assert!(ix.upsert("a", &[], vec![], None, 0, 2).is_err());
        assert!(ix.upsert("a", &[0.0, 0.0], vec![], None, 0, 2).is_err());
        assert!(
            ix.upsert("a", &[f32::NAN, 1.0], vec![], None, 0, 2)
                .is_err()
        );
        ix.upsert("a", &[1.0, 0.0], vec![], None, 0, 2).unwrap();
        assert!(
            ix.upsert("b", &[1.0, 0.0, 0.0], vec![], None, 0, 2)
                .is_err()
        );
        ix.upsert("b", &[0.0, 1.0], vec![], None, 0, 2).unwrap();
        ix.upsert("c", &[1.0, 1.0], vec![], None, 0, 2).unwrap();
        assert_eq!(ix.len(), 2);
        ix.delete("c");
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let mut ix = VectorIndex::default();
        ix.upsert("é", &[0.3, 0.4], b"meta".to_vec(), Some(5), 10, 10)
            .unwrap();
        let back = VectorIndex::decode(&ix.encode()).unwrap();
        assert_eq!(back, ix);
        assert!(VectorIndex::decode(b"WVI1\x05\0\0\0").is_err());
        assert!(VectorIndex::decode(b"nope").is_err());
    }
}
