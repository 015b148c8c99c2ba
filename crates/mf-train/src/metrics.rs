//! Distances between sample sets.
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::rng::Rng;

/// Sliced Wasserstein-1 distance between two equally sized point sets of `dims` dimensions:
/// the mean over `projections` random unit directions of the 1-D Wasserstein-1 distance
/// between the projected, sorted sets. Deterministic for a given `seed`.
pub fn sliced_wasserstein(a: &[f32], b: &[f32], dims: usize, projections: usize, seed: u64) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "sliced Wasserstein needs equally sized sets"
    );
    let n = a.len() / dims;
    let mut rng = Rng::seed_from_u64(seed);
    let mut total = 0.0;
    for _ in 0..projections {
        let mut dir: Vec<f64> = (0..dims).map(|_| StandardNormal.sample(&mut rng)).collect();
        let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
        dir.iter_mut().for_each(|v| *v /= norm);
        let project = |set: &[f32]| {
            let mut p: Vec<f64> = set
                .chunks_exact(dims)
                .map(|x| x.iter().zip(&dir).map(|(&xi, di)| xi as f64 * di).sum())
                .collect();
            p.sort_by(f64::total_cmp);
            p
        };
        let (pa, pb) = (project(a), project(b));
        total += pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum::<f64>() / n as f64;
    }
    total / projections as f64
}

/// Squared maximum mean discrepancy with a Gaussian kernel k(x, y) = exp(−|x − y|²/(2σ²)),
/// unbiased estimate (diagonal terms excluded), between point sets of `dims` dimensions.
/// Unlike one-dimensional projections, a kernel of small σ sees local structure such as the
/// edges of a checkerboard's cells.
pub fn mmd_rbf(a: &[f32], b: &[f32], dims: usize, sigma: f64) -> f64 {
    let (na, nb) = (a.len() / dims, b.len() / dims);
    let gamma = 1.0 / (2.0 * sigma * sigma);
    let k = |x: &[f32], y: &[f32]| {
        let d2: f64 = x
            .iter()
            .zip(y)
            .map(|(&p, &q)| ((p - q) as f64).powi(2))
            .sum();
        (-gamma * d2).exp()
    };
    let within = |s: &[f32], n: usize| {
        let mut total = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    total += k(&s[i * dims..(i + 1) * dims], &s[j * dims..(j + 1) * dims]);
                }
            }
        }
        total / (n * (n - 1)) as f64
    };
    let mut cross = 0.0;
    for i in 0..na {
        for j in 0..nb {
            cross += k(&a[i * dims..(i + 1) * dims], &b[j * dims..(j + 1) * dims]);
        }
    }
    within(a, na) + within(b, nb) - 2.0 * cross / (na * nb) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sets_are_at_distance_zero_and_shifts_are_measured() {
        let a: Vec<f32> = (0..200).map(|i| (i as f32 * 0.37).sin()).collect();
        assert_eq!(sliced_wasserstein(&a, &a, 2, 16, 0), 0.0);
        // Shifting every point by (1, 0) moves each projection by |cos θ|: mean 2/π.
        let b: Vec<f32> = a.chunks(2).flat_map(|p| [p[0] + 1.0, p[1]]).collect();
        let d = sliced_wasserstein(&a, &b, 2, 2000, 1);
        assert!((d - 2.0 / std::f64::consts::PI).abs() < 0.03, "{d}");
    }

    #[test]
    fn mmd_separates_shifted_sets_and_not_equal_ones() {
        let a: Vec<f32> = (0..400).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..400).map(|i| (i as f32 * 0.37 + 100.0).sin()).collect();
        let c: Vec<f32> = a.iter().map(|v| v + 0.5).collect();
        assert!(mmd_rbf(&a, &b, 2, 0.2).abs() < 0.02);
        assert!(mmd_rbf(&a, &c, 2, 0.2) > 0.1);
    }
}
