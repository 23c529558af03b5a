//! Part D: the semantic cache's vector index (weir-core's `VectorIndex`, what `weir` keeps in
//! memory and every replica mirrors from Redis): nearest-neighbour lookups at 10,000 and
//! 100,000 vectors of 384 dimensions (multilingual-e5-small's), and how often the coded search
//! finds the neighbour an exhaustive search finds.
//!
//! The vectors imitate a small embedding model's: a direction they all share plus noise, so two
//! unrelated ones score about 0.7 (as e5's do). Each query is a stored vector plus noise (cosine
//! 0.9 to 0.98 with it, like a reworded question), asked with the cache's `limit` (4) and a
//! 0.85 threshold.

use std::time::Instant;

use weir_core::vectors::VectorIndex;

use crate::table::{Table, percentile, us_int};

#[derive(clap::Args, Debug, Clone)]
#[group(id = "vectors-options")]
pub struct Options {
    /// Part D: index sizes measured.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
    pub vector_sizes: Vec<usize>,
    /// Part D: dimensions of the vectors.
    #[arg(long, default_value_t = 384)]
    pub vector_dims: usize,
    /// Part D: measured lookups per size.
    #[arg(long, default_value_t = 2_000)]
    pub vector_queries: usize,
    /// Part D: lookups also checked against an exhaustive search (recall).
    #[arg(long, default_value_t = 200)]
    pub vector_recall_queries: usize,
}

/// Uniform in [-1, 1), from a xorshift state.
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn run(options: &Options) -> anyhow::Result<Table> {
    let dims = options.vector_dims;
    let mut table = Table::new(
        "D. Vector index lookups (in-process, one thread)",
        &[
            "vectors",
            "dimensions",
            "build s",
            "memory MB",
            "lookup p50 µs",
            "lookup p99 µs",
            "found / exhaustive",
        ],
        0,
    );
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let common: Vec<f32> = unit(&(0..dims).map(|_| uniform(&mut state)).collect::<Vec<_>>());
    let scale = 3f32.sqrt() / (dims as f32).sqrt();
    for &n in &options.vector_sizes {
        crate::progress(&format!("part D: {n} vectors of {dims} dimensions"));
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(n);
        let mut index = VectorIndex::default();
        let started = Instant::now();
        for i in 0..n {
            let v: Vec<f32> = common
                .iter()
                .map(|c| 1.6 * c + uniform(&mut state) * scale)
                .collect();
            index
                .upsert(
                    &format!("e{i}"),
                    &v,
                    vec![0; 64],
                    Some(3_600_000),
                    0,
                    usize::MAX,
                )
                .map_err(anyhow::Error::msg)?;
            rows.push(unit(&v));
        }
        let build = started.elapsed().as_secs_f64();
        let query = |state: &mut u64, k: usize| -> (usize, Vec<f32>) {
            let target = (k * 7919) % n;
            let noise = 0.1 + (k % 3) as f32 * 0.15;
            let q = rows[target]
                .iter()
                .map(|x| x + uniform(state) * scale * noise)
                .collect();
            (target, q)
        };
        let mut samples = Vec::with_capacity(options.vector_queries);
        for k in 0..options.vector_queries + options.vector_queries / 10 {
            let (_, q) = query(&mut state, k);
            let t = Instant::now();
            let hits = index.query(&q, 4, 0.85, 1).map_err(anyhow::Error::msg)?;
            let elapsed = t.elapsed();
            anyhow::ensure!(!hits.is_empty(), "lookup {k} found nothing above 0.85");
            if k >= options.vector_queries / 10 {
                samples.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
            }
        }
        samples.sort_unstable();
        let mut found = 0;
        for k in 0..options.vector_recall_queries {
            let (_, q) = query(&mut state, k + 1_000_000);
            let qn = unit(&q);
            let best = (0..n)
                .max_by(|&a, &b| dot(&rows[a], &qn).total_cmp(&dot(&rows[b], &qn)))
                .unwrap_or(0);
            let hits = index.query(&q, 1, -1.0, 1).map_err(anyhow::Error::msg)?;
            if hits.first().is_some_and(|h| h.id == format!("e{best}")) {
                found += 1;
            }
        }
        table.row(vec![
            n.to_string(),
            dims.to_string(),
            format!("{build:.1}"),
            format!("{:.0}", index.bytes() as f64 / 1e6),
            us_int(percentile(&samples, 50.0), 0),
            us_int(percentile(&samples, 99.0), 0),
            format!("{found} / {}", options.vector_recall_queries),
        ]);
    }
    table.note(
        "From 4,096 vectors on, a lookup compares one-bit codes (the sign of each dimension of the vector minus \
         the index's mean) and scores the 512 nearest codes exactly; below, it scores every vector.",
    );
    table.note(
        "Vectors: a shared direction plus noise (unrelated pairs score ~0.7, as a small embedding model's do); \
         each lookup is a stored vector plus noise (cosine 0.9-0.98), limit 4, threshold 0.85.",
    );
    Ok(table)
}
