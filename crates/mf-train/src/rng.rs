//! The one random stream of a run: ChaCha8, seeded from the config, with a state that a
//! checkpoint can store and restore exactly.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The run's generator.
pub type Rng = ChaCha8Rng;

/// A generator's position: seed and words consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The seed the stream started from.
    pub seed: u64,
    /// 32-bit words consumed so far (as a decimal string in JSON, since it is a u128).
    #[serde(with = "u128_string")]
    pub word_pos: u128,
}

impl RngState {
    /// Captures where `rng` (seeded with `seed`) stands.
    pub fn capture(seed: u64, rng: &Rng) -> Self {
        RngState {
            seed,
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator at exactly this position.
    pub fn restore(self) -> Rng {
        let mut rng = Rng::seed_from_u64(self.seed);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn restored_stream_continues_identically() {
        let mut a = Rng::seed_from_u64(9);
        let _: Vec<u32> = (0..37).map(|_| a.random()).collect();
        let state = RngState::capture(9, &a);
        let json = serde_json::to_string(&state).unwrap();
        let mut b = serde_json::from_str::<RngState>(&json).unwrap().restore();
        let xa: Vec<u64> = (0..10).map(|_| a.random()).collect();
        let xb: Vec<u64> = (0..10).map(|_| b.random()).collect();
        assert_eq!(xa, xb);
    }
}
