//! Precision and recall of a sample set against a real set (Kynkäänniemi et al. 2019): each
//! set's manifold is the union of balls reaching each point's k-th nearest neighbour; precision
//! is the share of samples inside the real manifold, recall the share of real points inside
//! the samples'.
use anyhow::ensure;
use nalgebra::DMatrix;

/// Neighbours that set each point's manifold radius (Kynkäänniemi et al. 2019 use 3).
pub const NEIGHBOURS: usize = 3;

/// Rows per block of the pairwise distances (a block of 512 × 10,000 distances is 41 MB).
const BLOCK: usize = 512;

/// A feature set and the squared distance of each point to its k-th nearest neighbour: the
/// union of those balls estimates the set's manifold.
pub struct Manifold {
    /// The points as columns `[d, n]`, transposed once for every block's product.
    columns: DMatrix<f64>,
    norms: Vec<f64>,
    radii: Vec<f64>,
}

impl Manifold {
    /// The manifold of `features` `[n, d]` (n > [`NEIGHBOURS`]).
    pub fn new(features: &[f64], d: usize) -> anyhow::Result<Manifold> {
        let n = features.len() / d;
        ensure!(
            n > NEIGHBOURS,
            "precision/recall need more than {NEIGHBOURS} samples, got {n}"
        );
        let points = DMatrix::from_row_slice(n, d, features);
        let norms: Vec<f64> = points.row_iter().map(|r| r.norm_squared()).collect();
        let mut manifold = Manifold {
            columns: points.transpose(),
            norms,
            radii: Vec::new(),
        };
        let mut radii = Vec::with_capacity(n);
        manifold.each_block(&points, |distances| {
            for row in distances.row_iter() {
                let mut row: Vec<f64> = row.iter().copied().collect();
                // The point itself is its nearest neighbour, at distance zero.
                let (_, kth, _) = row.select_nth_unstable_by(NEIGHBOURS, f64::total_cmp);
                radii.push(*kth);
            }
        });
        manifold.radii = radii;
        Ok(manifold)
    }

    /// The share of `features` `[m, d]` inside the manifold (within some point's radius).
    pub fn coverage(&self, features: &[f64]) -> f64 {
        let d = self.columns.nrows();
        let m = features.len() / d;
        let queries = DMatrix::from_row_slice(m, d, features);
        let mut inside = 0usize;
        self.each_block(&queries, |distances| {
            inside += distances
                .row_iter()
                .filter(|row| row.iter().zip(&self.radii).any(|(x, r)| x <= r))
                .count();
        });
        inside as f64 / m as f64
    }

    /// Calls `f(squared distances [rows, n])` for blocks of `queries`' rows against
    /// every point.
    fn each_block(&self, queries: &DMatrix<f64>, mut f: impl FnMut(DMatrix<f64>)) {
        for start in (0..queries.nrows()).step_by(BLOCK) {
            let rows = BLOCK.min(queries.nrows() - start);
            let block = queries.rows(start, rows);
            let mut distances = block * &self.columns;
            for (i, q) in block.row_iter().enumerate() {
                let qn = q.norm_squared();
                for (j, &pn) in self.norms.iter().enumerate() {
                    distances[(i, j)] = (qn + pn - 2.0 * distances[(i, j)]).max(0.0);
                }
            }
            f(distances);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points of a 2-D Gaussian (σ = 1) around `(x, y)`.
    fn cluster(noise: &mut mf_core::noise::Noise, n: usize, x: f64, y: f64) -> Vec<f64> {
        (0..n)
            .flat_map(|_| [x + noise.gaussian() as f64, y + noise.gaussian() as f64])
            .collect()
    }

    #[test]
    fn precision_and_recall_tell_dropped_modes_from_samples_off_the_manifold() {
        let mut noise = mf_core::noise::Noise::new(7);
        let mut real = cluster(&mut noise, 500, -6.0, 0.0);
        real.extend(cluster(&mut noise, 500, 6.0, 0.0));
        let reference = Manifold::new(&real, 2).unwrap();
        let score = |samples: &[f64]| {
            let manifold = Manifold::new(samples, 2).unwrap();
            (reference.coverage(samples), manifold.coverage(&real))
        };
        // The real set against itself: every point inside its own ball.
        assert_eq!(score(&real), (1.0, 1.0));
        // Fresh samples of both modes: most inside, both ways.
        let mut fresh = cluster(&mut noise, 500, -6.0, 0.0);
        fresh.extend(cluster(&mut noise, 500, 6.0, 0.0));
        let (p, r) = score(&fresh);
        assert!(
            p > 0.85 && r > 0.85,
            "fresh samples: precision {p}, recall {r}"
        );
        // One mode dropped: precise, but half the real set is not covered.
        let (p, r) = score(&cluster(&mut noise, 1000, -6.0, 0.0));
        assert!(
            p > 0.85 && (0.4..0.55).contains(&r),
            "one mode: precision {p}, recall {r}"
        );
        // Samples between the modes (a blur of the two): off the manifold.
        let (p, r) = score(&cluster(&mut noise, 1000, 0.0, 0.0));
        assert!(
            p < 0.1 && r < 0.2,
            "between modes: precision {p}, recall {r}"
        );
    }
}
