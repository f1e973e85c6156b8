//! Exact cosine top-k over a row-major f32 matrix of unit-normalised rows: a blocked, parallel dot product with a
//! keep-predicate applied before ranking, so k results come back whenever k rows pass. Ties break by row index,
//! so results are deterministic. Exact search is the right tool below ~10⁶ vectors.

use rayon::prelude::*;

/// One neighbour: its row index and cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub score: f32,
}

/// Scale `v` to unit length in place; a zero (or non-finite) vector becomes all zeros, so it scores 0 with any
/// query instead of NaN.
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    let inv = if norm.is_finite() && norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
    v.iter_mut().for_each(|x| *x = if inv == 0.0 { 0.0 } else { *x * inv });
}

/// Dot product with eight independent accumulators (lets the compiler vectorise it).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Does `a` rank before `b` (higher score, then lower index)?
fn better(a: &Hit, b: &Hit) -> bool {
    a.score > b.score || (a.score == b.score && a.index < b.index)
}

fn push(top: &mut Vec<Hit>, k: usize, h: Hit) {
    if top.len() == k && !top.last().is_some_and(|w| better(&h, w)) {
        return;
    }
    let at = top.partition_point(|x| better(x, &h));
    top.insert(at, h);
    top.truncate(k);
}

/// The `k` rows of `matrix` (`dim` columns) most similar to `query` among those `keep` accepts, best first.
pub fn top_k(matrix: &[f32], dim: usize, query: &[f32], k: usize, keep: impl Fn(usize) -> bool + Sync) -> Vec<Hit> {
    if k == 0 || dim == 0 || query.len() != dim {
        return Vec::new();
    }
    const BLOCK: usize = 2048;
    let local: Vec<Vec<Hit>> = matrix
        .par_chunks(BLOCK * dim)
        .enumerate()
        .map(|(b, chunk)| {
            let mut top = Vec::with_capacity(k + 1);
            for (i, row) in chunk.chunks_exact(dim).enumerate() {
                let index = b * BLOCK + i;
                if keep(index) {
                    push(&mut top, k, Hit { index, score: dot(row, query) });
                }
            }
            top
        })
        .collect();
    let mut top = Vec::with_capacity(k + 1);
    for h in local.into_iter().flatten() {
        push(&mut top, k, h);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_matches_a_full_sort_and_filters_before_ranking() {
        let (n, dim) = (5000, 13);
        let mut m: Vec<f32> = (0..n * dim).map(|i| ((i * 7919 % 1009) as f32 - 500.0) / 100.0).collect();
        m.chunks_exact_mut(dim).for_each(normalise);
        let mut q: Vec<f32> = (0..dim).map(|i| i as f32 - 6.0).collect();
        normalise(&mut q);
        let mut all: Vec<Hit> = (0..n).map(|i| Hit { index: i, score: dot(&m[i * dim..(i + 1) * dim], &q) }).collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        assert_eq!(top_k(&m, dim, &q, 10, |_| true), all[..10].to_vec());
        let odd: Vec<Hit> = all.iter().filter(|h| h.index % 2 == 1).take(10).copied().collect();
        assert_eq!(top_k(&m, dim, &q, 10, |i| i % 2 == 1), odd);
        assert_eq!(top_k(&m, dim, &q, 10, |i| i < 3).len(), 3);
        let mut zero = vec![0.0; dim];
        normalise(&mut zero);
        assert!(zero.iter().all(|x| *x == 0.0));
    }
}
