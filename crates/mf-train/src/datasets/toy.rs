//! Toy 2-D distributions generated in code, for fast end-to-end checks of the objective.
use rand::RngExt;
use rand_distr::StandardNormal;

use crate::rng::Rng;

/// A 2-D distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toy {
    /// Uniform on the eight dark squares of a 4×4 board on [-2, 2]².
    Checkerboard,
    /// Two interleaved half circles with Gaussian noise (σ = 0.05), scaled to about [-2, 2].
    Moons,
    /// Eight Gaussians (σ = 0.1) on a circle of radius 2.
    Gaussians8,
}

impl Toy {
    /// The set with this config name, if any.
    pub fn from_name(name: &str) -> Option<Toy> {
        match name {
            "checkerboard" => Some(Toy::Checkerboard),
            "moons" => Some(Toy::Moons),
            "gaussians8" => Some(Toy::Gaussians8),
            _ => None,
        }
    }

    /// `n` fresh points, `[n, 2]` row-major.
    pub fn sample(self, rng: &mut Rng, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let (x, y) = match self {
                Toy::Checkerboard => {
                    // Pick one of the 8 dark cells (i + j even), then a point inside it.
                    let cell = rng.random_range(0..8);
                    let (i, j) = (cell / 2, 2 * (cell % 2) + (cell / 2) % 2);
                    let x = -2.0 + i as f64 + rng.random::<f64>();
                    let y = -2.0 + j as f64 + rng.random::<f64>();
                    (x, y)
                }
                Toy::Moons => {
                    let a = std::f64::consts::PI * rng.random::<f64>();
                    let (x, y) = if rng.random::<bool>() {
                        (a.cos(), a.sin())
                    } else {
                        (1.0 - a.cos(), 0.5 - a.sin())
                    };
                    let nx: f64 = rng.sample(StandardNormal);
                    let ny: f64 = rng.sample(StandardNormal);
                    ((x - 0.5 + 0.05 * nx) * 1.6, (y - 0.25 + 0.05 * ny) * 1.6)
                }
                Toy::Gaussians8 => {
                    let k = rng.random_range(0..8) as f64;
                    let a = k * std::f64::consts::FRAC_PI_4;
                    let nx: f64 = rng.sample(StandardNormal);
                    let ny: f64 = rng.sample(StandardNormal);
                    (2.0 * a.cos() + 0.1 * nx, 2.0 * a.sin() + 0.1 * ny)
                }
            };
            out.push(x as f32);
            out.push(y as f32);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn checkerboard_points_lie_on_dark_cells() {
        let mut rng = Rng::seed_from_u64(0);
        let pts = Toy::Checkerboard.sample(&mut rng, 2000);
        let mut cells = std::collections::HashSet::new();
        for p in pts.chunks(2) {
            let (i, j) = ((p[0] + 2.0).floor() as i32, (p[1] + 2.0).floor() as i32);
            assert!((0..4).contains(&i) && (0..4).contains(&j));
            assert_eq!((i + j) % 2, 0, "point {p:?} on a light cell");
            cells.insert((i, j));
        }
        assert_eq!(cells.len(), 8);
    }

    #[test]
    fn gaussians_sit_on_the_circle() {
        let mut rng = Rng::seed_from_u64(1);
        let pts = Toy::Gaussians8.sample(&mut rng, 1000);
        let mean_r: f32 = pts.chunks(2).map(|p| p[0].hypot(p[1])).sum::<f32>() / 1000.0;
        assert!((mean_r - 2.0).abs() < 0.05, "{mean_r}");
    }
}
