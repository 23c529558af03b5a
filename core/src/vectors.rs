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

use std::collections::HashMap;

/// A vector found by a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    pub id: String,
    /// Cosine similarity, -1 to 1.
    pub score: f32,
    pub metadata: Vec<u8>,
}

/// Below this many vectors a query compares them all; from it on, it compares bit codes
/// first and only the closest candidates exactly.
const EXACT_BELOW: usize = 4096;

/// Candidates rescored exactly per query (at least; `limit` × 16 when more).
const CANDIDATES: usize = 256;

/// One index: its vectors (unit length, all of one dimension) in one contiguous block, with a
/// one-bit-per-dimension code of each (the sign of the vector minus the index's mean), so that
/// a query at 100,000 vectors of 384 dimensions reads 4.8 MB of codes instead of 150 MB of
/// floats: the codes' Hamming distances pick [`CANDIDATES`], which are then scored exactly.
/// The mean is recomputed (and every code with it) each time the index doubles in size.
#[derive(Debug, Clone, Default)]
pub struct VectorIndex {
    dims: usize,
    ids: Vec<String>,
    /// `ids.len()` rows of `dims`.
    vectors: Vec<f32>,
    metadata: Vec<Vec<u8>>,
    /// Milliseconds since the Unix epoch; `None` never expires.
    expires: Vec<Option<u64>>,
    rows: HashMap<String, usize>,
    /// `ids.len()` rows of `words()` 64-bit words.
    codes: Vec<u64>,
    mean: Vec<f32>,
    /// How many vectors the index held when `mean` was computed.
    mean_of: usize,
}

impl PartialEq for VectorIndex {
    fn eq(&self, other: &Self) -> bool {
        self.dims == other.dims
            && self.ids == other.ids
            && self.vectors == other.vectors
            && self.metadata == other.metadata
            && self.expires == other.expires
    }
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

/// The dot product, in eight lanes (the compiler vectorises it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl VectorIndex {
    /// How many vectors it holds (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn words(&self) -> usize {
        self.dims.div_ceil(64)
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dims..(i + 1) * self.dims]
    }

    /// The sign bits of `v - mean`.
    fn code(&self, v: &[f32], out: &mut [u64]) {
        out.iter_mut().for_each(|w| *w = 0);
        for (k, x) in v.iter().enumerate() {
            let m = self.mean.get(k).copied().unwrap_or(0.0);
            if *x > m {
                out[k / 64] |= 1 << (k % 64);
            }
        }
    }

    /// Recomputes the mean and every code (each time the index has doubled).
    fn recentre(&mut self) {
        let n = self.len();
        let mut mean = vec![0f32; self.dims];
        for i in 0..n {
            for (m, x) in mean.iter_mut().zip(self.row(i)) {
                *m += x;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f32);
        self.mean = mean;
        self.mean_of = n;
        let words = self.words();
        let mut codes = vec![0u64; n * words];
        for i in 0..n {
            let (row, out) = (self.row(i), &mut codes[i * words..(i + 1) * words]);
            self.code(row, out);
        }
        self.codes = codes;
    }

    /// Removes row `i` (the last row takes its place).
    fn remove_row(&mut self, i: usize) {
        let last = self.len() - 1;
        let (d, w) = (self.dims, self.words());
        self.rows.remove(&self.ids[i]);
        if i != last {
            self.vectors.copy_within(last * d..(last + 1) * d, i * d);
            self.codes.copy_within(last * w..(last + 1) * w, i * w);
            self.rows.insert(self.ids[last].clone(), i);
        }
        self.ids.swap_remove(i);
        self.metadata.swap_remove(i);
        self.expires.swap_remove(i);
        self.vectors.truncate(last * d);
        self.codes.truncate(last * w);
        if self.ids.is_empty() {
            *self = Self::default();
        }
    }

    /// Drops expired vectors.
    pub fn expire(&mut self, now_ms: u64) {
        let mut i = 0;
        while i < self.len() {
            if self.expires[i].is_some_and(|t| t <= now_ms) {
                self.remove_row(i);
            } else {
                i += 1;
            }
        }
    }

    /// Adds or replaces `id`. When the index is full (`max_entries`), expired vectors are
    /// dropped, then the vector that expires first (or the oldest) makes room.
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
        if self.dims != 0 && self.dims != vector.len() {
            return Err(format!(
                "this index holds vectors of {} dimensions, not {}",
                self.dims,
                vector.len()
            ));
        }
        if let Some(&i) = self.rows.get(id) {
            self.remove_row(i);
        }
        if self.len() >= max_entries.max(1) {
            self.expire(now_ms);
        }
        while self.len() >= max_entries.max(1) {
            let victim = (0..self.len())
                .min_by_key(|&i| (self.expires[i].unwrap_or(u64::MAX), i))
                .unwrap_or(0);
            self.remove_row(victim);
        }
        self.push_row(
            id,
            &vector,
            metadata,
            ttl_ms.map(|t| now_ms.saturating_add(t)),
        );
        if self.len() >= 2 * self.mean_of.max(EXACT_BELOW / 2) {
            self.recentre();
        }
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
        if self.dims != 0 && self.dims != q.len() {
            return Err(format!(
                "this index holds vectors of {} dimensions, not {}",
                self.dims,
                q.len()
            ));
        }
        let live = |i: &usize| self.expires[*i].is_none_or(|t| t > now_ms);
        let candidates: Vec<usize> = if self.len() < EXACT_BELOW {
            (0..self.len()).filter(live).collect()
        } else {
            self.closest_codes(&q, CANDIDATES.max(limit * 16))
                .into_iter()
                .filter(live)
                .collect()
        };
        let mut hits: Vec<(f32, usize)> = candidates
            .into_iter()
            .map(|i| (dot(self.row(i), &q), i))
            .filter(|(s, _)| *s >= min_score)
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0));
        hits.truncate(limit);
        Ok(hits
            .into_iter()
            .map(|(score, i)| Neighbour {
                id: self.ids[i].clone(),
                score,
                metadata: self.metadata[i].clone(),
            })
            .collect())
    }

    /// The (about) `k` rows whose codes are nearest to the query's, by Hamming distance: one
    /// pass for the distances and their histogram, one to take the rows under the cut-off.
    fn closest_codes(&self, q: &[f32], k: usize) -> Vec<usize> {
        let words = self.words();
        let mut code = vec![0u64; words];
        self.code(q, &mut code);
        let mut histogram = vec![0usize; self.dims + 1];
        let distances: Vec<u16> = self
            .codes
            .chunks_exact(words)
            .map(|row| {
                let d: u32 = row
                    .iter()
                    .zip(&code)
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum();
                histogram[d as usize] += 1;
                d as u16
            })
            .collect();
        let mut cutoff = 0;
        let mut taken = 0;
        for (d, n) in histogram.iter().enumerate() {
            taken += n;
            cutoff = d as u16;
            if taken >= k {
                break;
            }
        }
        let mut out = Vec::with_capacity(taken);
        out.extend(
            distances
                .iter()
                .enumerate()
                .filter(|(_, d)| **d <= cutoff)
                .map(|(i, _)| i),
        );
        out
    }

    /// Drops expired vectors, or else the one that expires first (or the oldest).
    pub fn evict_one(&mut self, now_ms: u64) {
        let before = self.len();
        self.expire(now_ms);
        if self.len() == before && !self.is_empty() {
            let victim = (0..self.len())
                .min_by_key(|&i| (self.expires[i].unwrap_or(u64::MAX), i))
                .unwrap_or(0);
            self.remove_row(victim);
        }
    }

    /// Removes `id` (nothing if absent).
    pub fn delete(&mut self, id: &str) {
        if let Some(&i) = self.rows.get(id) {
            self.remove_row(i);
        }
    }

    /// The index as bytes (for a key-value store).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"WVI1");
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        for i in 0..self.len() {
            let id = &self.ids[i];
            out.extend_from_slice(&(id.len() as u32).to_le_bytes());
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&(self.dims as u32).to_le_bytes());
            for x in self.row(i) {
                out.extend_from_slice(&x.to_le_bytes());
            }
            out.extend_from_slice(&(self.metadata[i].len() as u32).to_le_bytes());
            out.extend_from_slice(&self.metadata[i]);
            out.extend_from_slice(&self.expires[i].unwrap_or(0).to_le_bytes());
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
        let mut index = Self::default();
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
            // Stored vectors are unit length already; re-checked like any input.
            index.insert_row(&id, &vector, metadata, (expires != 0).then_some(expires))?;
        }
        if index.len() >= EXACT_BELOW {
            index.recentre();
        }
        Ok(index)
    }

    /// Appends a row as it is (decode), with no eviction.
    fn insert_row(
        &mut self,
        id: &str,
        vector: &[f32],
        metadata: Vec<u8>,
        expires: Option<u64>,
    ) -> Result<(), String> {
        let vector = normalised(vector)?;
        if self.dims != 0 && self.dims != vector.len() {
            return Err("vectors of different dimensions in one index".into());
        }
        if let Some(&i) = self.rows.get(id) {
            self.remove_row(i);
        }
        self.push_row(id, &vector, metadata, expires);
        Ok(())
    }

    /// Appends a unit vector (of the index's dimensions, or the first) and its code.
    fn push_row(&mut self, id: &str, vector: &[f32], metadata: Vec<u8>, expires: Option<u64>) {
        self.dims = vector.len();
        let mut code = vec![0u64; self.words()];
        self.code(vector, &mut code);
        self.rows.insert(id.to_owned(), self.len());
        self.ids.push(id.to_owned());
        self.vectors.extend_from_slice(vector);
        self.codes.extend_from_slice(&code);
        self.metadata.push(metadata);
        self.expires.push(expires);
    }

    /// Bytes held (vectors, codes, ids and metadata), for a store's bound on memory.
    pub fn bytes(&self) -> usize {
        self.vectors.len() * 4
            + self.codes.len() * 8
            + self.ids.iter().map(|i| i.len() * 2 + 48).sum::<usize>()
            + self.metadata.iter().map(|m| m.len() + 24).sum::<usize>()
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

    /// Vectors like a small embedding model's: a common direction plus noise (two unrelated
    /// texts score about 0.7), from a fixed seed.
    fn anisotropic(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        let common: Vec<f32> = (0..dims).map(|_| next()).collect();
        let norm = common.iter().map(|x| x * x).sum::<f32>().sqrt();
        (0..n)
            .map(|_| {
                common
                    .iter()
                    .map(|c| 1.6 * c / norm + next() * 3f32.sqrt() / (dims as f32).sqrt())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn large_indexes_find_what_an_exhaustive_search_finds() {
        let dims = 384;
        let data = anisotropic(6_000, dims, 7);
        let mut ix = VectorIndex::default();
        for (i, v) in data.iter().enumerate() {
            ix.upsert(&i.to_string(), v, vec![], None, 0, usize::MAX)
                .unwrap();
        }
        assert!(ix.len() >= EXACT_BELOW && ix.mean_of >= EXACT_BELOW);
        let noise = anisotropic(120, dims, 99);
        let mut found = 0;
        for (k, n) in noise.iter().enumerate() {
            // A query near stored vector t (cosine about 0.9 to 0.98 depending on k).
            let t = (k * 37) % data.len();
            let scale = 0.1 + (k % 3) as f32 * 0.15;
            let q: Vec<f32> = data[t].iter().zip(n).map(|(x, e)| x + scale * e).collect();
            let qn = normalised(&q).unwrap();
            let exact = (0..ix.len())
                .max_by(|&a, &b| dot(ix.row(a), &qn).total_cmp(&dot(ix.row(b), &qn)))
                .unwrap();
            let got = ix.query(&q, 1, -1.0, 0).unwrap();
            if got[0].id == ix.ids[exact] {
                found += 1;
            }
        }
        assert!(
            found >= 119,
            "the coded search found {found} of 120 nearest neighbours"
        );
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
