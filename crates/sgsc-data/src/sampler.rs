//! Which training examples each step sees: a seeded permutation per epoch, and a seeded random
//! generator per step for augmentation. Both are pure functions of (seed, step), so a resumed run
//! sees exactly the batches the uninterrupted run would have seen, without saving any RNG state.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Serves batch positions for any step of a run over `len` examples.
#[derive(Debug)]
pub struct EpochSampler {
    len: usize,
    batch_size: usize,
    seed: u64,
    cached: Option<(u64, Vec<usize>)>,
}

impl EpochSampler {
    /// A sampler of batches of `batch_size` (at most `len`) from `len` examples.
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Self {
        EpochSampler {
            len,
            batch_size: batch_size.min(len).max(1),
            seed,
            cached: None,
        }
    }

    /// Positions of the examples in the batch of `step` (an incomplete last batch of an epoch is
    /// skipped, so every batch has the same size).
    pub fn positions(&mut self, step: i64) -> &[usize] {
        let batches_per_epoch = (self.len / self.batch_size).max(1) as u64;
        let step = step.max(0) as u64;
        let epoch = step / batches_per_epoch;
        let start = (step % batches_per_epoch) as usize * self.batch_size;
        if self.cached.as_ref().map(|(cached, _)| *cached) != Some(epoch) {
            let mut order: Vec<usize> = (0..self.len).collect();
            order.shuffle(&mut stream(self.seed, 1, epoch));
            self.cached = Some((epoch, order));
        }
        let (_, order) = self.cached.as_ref().expect("filled above");
        &order[start..start + self.batch_size]
    }
}

/// The augmentation generator of `step`.
pub fn step_rng(seed: u64, step: i64) -> ChaCha8Rng {
    stream(seed, 2, step.max(0) as u64)
}

/// The generator of `step`'s preservation batch (a stream apart from the training batches').
pub fn preservation_rng(seed: u64, step: i64) -> ChaCha8Rng {
    stream(seed, 3, step.max(0) as u64)
}

/// An independent ChaCha stream for (seed, purpose, index).
fn stream(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(purpose);
    rng.set_word_pos(u128::from(index) << 20);
    ChaCha8Rng::from_rng(&mut rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_and_steps_are_reproducible() {
        let mut sampler = EpochSampler::new(10, 3, 5);
        let mut epoch: Vec<usize> = (0..3)
            .flat_map(|step| sampler.positions(step).to_vec())
            .collect();
        assert_eq!(epoch.len(), 9);
        epoch.sort_unstable();
        epoch.dedup();
        assert_eq!(epoch.len(), 9, "no example twice in one epoch");
        let late = sampler.positions(7).to_vec();
        let mut fresh = EpochSampler::new(10, 3, 5);
        assert_eq!(fresh.positions(7), late.as_slice());
        assert_ne!(
            EpochSampler::new(10, 3, 6).positions(0),
            EpochSampler::new(10, 3, 5).positions(0)
        );
    }

    #[test]
    fn step_generators_differ_by_step_and_repeat_by_seed() {
        use rand::Rng;
        let a: u64 = step_rng(1, 10).random();
        let b: u64 = step_rng(1, 11).random();
        let c: u64 = step_rng(1, 10).random();
        assert_ne!(a, b);
        assert_eq!(a, c);
    }
}
