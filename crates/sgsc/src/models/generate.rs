//! Text generation from a character-level language model: the model reads the last `context`
//! characters and the next one is drawn from its softened, top-k-truncated prediction, with a
//! seeded generator so that a sample can be reproduced.

use super::Network;
use crate::data::text::Vocabulary;
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// How characters are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// Characters to generate after the prompt.
    pub length: usize,
    /// Softmax temperature: below 1 sharper, above 1 flatter.
    pub temperature: f64,
    /// Draw only among the `top_k` most likely characters (0: all of them).
    pub top_k: usize,
    /// Seed of the draws.
    pub seed: u64,
}

/// Continues `prompt` by `options.length` characters with `network` (quantized when
/// `quantize`). Characters outside the vocabulary, a non-positive temperature or a network that
/// does not read token windows are errors.
pub fn generate(
    network: &Network,
    vocabulary: &Vocabulary,
    prompt: &str,
    options: SamplingOptions,
    quantize: bool,
    device: Device,
) -> Result<String> {
    let &[context] = network.config.input.as_slice() else {
        return Err(Error::Model(
            "sampling needs a language model (input [context])".into(),
        ));
    };
    if !(options.temperature > 0.0 && options.temperature.is_finite()) {
        return Err(Error::Model(format!(
            "temperature {} must be positive",
            options.temperature
        )));
    }
    let mut ids: Vec<i64> = vocabulary
        .encode(prompt)?
        .into_iter()
        .map(i64::from)
        .collect();
    if ids.is_empty() {
        return Err(Error::Model(
            "the prompt must hold at least one character".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let _no_grad = tch::no_grad_guard();
    for _ in 0..options.length {
        let window = &ids[ids.len().saturating_sub(context as usize)..];
        let input = Tensor::f_from_slice(window)?
            .f_view([1, window.len() as i64])?
            .f_to_device(device)?;
        let logits = network.forward(&input, false, quantize)?;
        let last = logits
            .f_select(0, window.len() as i64 - 1)?
            .f_div_scalar(options.temperature)?
            .f_to_kind(Kind::Double)?
            .f_to_device(Device::Cpu)?;
        let mut scores = Vec::<f64>::try_from(&last)?;
        if options.top_k > 0 && options.top_k < scores.len() {
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let threshold = sorted[options.top_k - 1];
            for score in &mut scores {
                if *score < threshold {
                    *score = f64::NEG_INFINITY;
                }
            }
        }
        ids.push(draw(&scores, rng.random::<f64>()) as i64);
    }
    Ok(vocabulary.decode(&ids)?)
}

/// The index that `uniform` (in [0, 1)) picks from the softmax of `scores`.
fn draw(scores: &[f64], uniform: f64) -> usize {
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|&s| (s - top).exp()).collect();
    let mut remaining = uniform * weights.iter().sum::<f64>();
    for (index, &weight) in weights.iter().enumerate() {
        if remaining < weight {
            return index;
        }
        remaining -= weight;
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fixtures::tiny_transformer;

    #[test]
    fn draws_follow_the_softmax() {
        // Weights 1 : 3 (scores ln 1, ln 3): [0, 0.25) picks 0, [0.25, 1) picks 1.
        let scores = [0.0, 3f64.ln(), f64::NEG_INFINITY];
        assert_eq!(draw(&scores, 0.0), 0);
        assert_eq!(draw(&scores, 0.2499), 0);
        assert_eq!(draw(&scores, 0.2501), 1);
        assert_eq!(draw(&scores, 0.9999), 1);
    }

    #[test]
    fn samples_are_reproducible_and_prompts_checked() {
        let network = tiny_transformer();
        let vocabulary = Vocabulary::from_text("\nabcd");
        let options = SamplingOptions {
            length: 20,
            temperature: 1.0,
            top_k: 3,
            seed: 5,
        };
        let sample =
            |options| generate(&network, &vocabulary, "ab", options, true, Device::Cpu).unwrap();
        let first = sample(options);
        assert_eq!(first.chars().count(), 22);
        assert!(first.starts_with("ab"));
        assert_eq!(sample(options), first);
        // top_k = 1 is greedy: the same whatever the seed.
        let greedy = SamplingOptions {
            top_k: 1,
            ..options
        };
        assert_eq!(
            sample(greedy),
            sample(SamplingOptions { seed: 9, ..greedy })
        );
        assert!(matches!(
            generate(&network, &vocabulary, "az", options, true, Device::Cpu),
            Err(Error::Data(_))
        ));
        assert!(matches!(
            generate(
                &network,
                &vocabulary,
                "a",
                SamplingOptions {
                    temperature: 0.0,
                    ..options
                },
                true,
                Device::Cpu
            ),
            Err(Error::Model(_))
        ));
    }
}
