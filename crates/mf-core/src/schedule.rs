//! Sampling schedules: the (t, r) pairs of each network evaluation, from noise (t = 1) to data
//! (t = 0), and how a step moves z.

/// How a model is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "lowercase"))]
pub enum Sampler {
    /// MeanFlow: z_r = z_t − (t − r)·u(z_t, r, t) with r the next time; one step is
    /// x = z₁ − u(z₁, 0, 1).
    MeanFlow,
    /// Flow matching: Euler steps with the instantaneous velocity, z_r = z_t − (t − r)·u(z_t, t, t).
    Euler,
}

impl Sampler {
    /// The `(t, r)` fed to the network at step `i` of `steps` (uniform times 1 → 0).
    pub fn times(self, i: usize, steps: usize) -> (f32, f32) {
        let t = 1.0 - i as f32 / steps as f32;
        let next = 1.0 - (i + 1) as f32 / steps as f32;
        match self {
            Sampler::MeanFlow => (t, next),
            Sampler::Euler => (t, t),
        }
    }

    /// The step size t − r of step `i` (the same for both samplers).
    pub fn span(self, i: usize, steps: usize) -> f32 {
        let t = 1.0 - i as f32 / steps as f32;
        let next = 1.0 - (i + 1) as f32 / steps as f32;
        t - next
    }
}

/// One step in place: `z ← z − span·u`.
pub fn step(z: &mut [f32], u: &[f32], span: f32) {
    z.iter_mut().zip(u).for_each(|(z, &u)| *z -= span * u);
}

/// Maps a model value in [-1, 1] (clipped) to a pixel: `round((x + 1)·127.5)`.
pub fn to_pixel(x: f32) -> u8 {
    let x = if x.is_nan() { -1.0 } else { x.clamp(-1.0, 1.0) };
    // round half away from zero, written without std's `round`
    let v = (x + 1.0) * 127.5 + 0.5;
    v as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_meanflow_goes_from_noise_to_data() {
        assert_eq!(Sampler::MeanFlow.times(0, 1), (1.0, 0.0));
        assert_eq!(Sampler::MeanFlow.times(1, 2), (0.5, 0.0));
        assert_eq!(Sampler::Euler.times(1, 2), (0.5, 0.5));
        assert_eq!(Sampler::Euler.span(0, 4), 0.25);
    }

    #[test]
    fn pixels_clip_and_round() {
        assert_eq!(to_pixel(-1.0), 0);
        assert_eq!(to_pixel(1.0), 255);
        assert_eq!(to_pixel(5.0), 255);
        assert_eq!(to_pixel(0.0), 128);
        assert_eq!(to_pixel(f32::NAN), 0);
    }
}
