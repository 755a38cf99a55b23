//! Scores of text windows for the preservation set (METHOD.md §3, text column), under a float
//! reference language model:
//! - **saliency**: the gradient of the window's total next-character loss with respect to the
//!   input embeddings, times the embeddings; its norm per position, averaged over the window (the
//!   Grad-CAM analogue: how strongly the prediction rests on the characters it reads);
//! - **uncertainty**: the mean next-character loss;
//! - **diversity**: the mean final hidden state (after the last layer norm), for k-means;
//! - **rare bigrams**: the surprisal `ln(total / count)` of the window's rarest bigram in the
//!   text of the split it comes from (the paper's criterion for names).
//!
//! The candidates are the split's non-overlapping windows (every `context`-th start of a
//! training block; every validation window), so a part's members share no characters and
//! scoring reads each character about once.

use super::{Member, Scores};
use crate::data::{Tensors, TextSplit, Vocabulary};
use crate::error::{Error, Result};
use crate::models::network::Layer;
use crate::models::{Network, Weights};
use std::fmt::Write as _;
use std::path::Path;
use tch::{Device, Kind, Reduction, Tensor};

/// Scores the non-overlapping windows of `split` (training or validation). Returns the
/// candidates' window starts (their source indices) and their scores.
pub fn score(
    reference: &Network,
    split: &TextSplit,
    batch_size: usize,
    device: Device,
) -> Result<(Vec<u32>, Scores)> {
    let embedding_layer = reference
        .layers
        .iter()
        .position(|layer| matches!(layer, Layer::Embedding(_)))
        .ok_or_else(|| Error::Model("text saliency needs an embedding layer".into()))?;
    let hidden_layer = reference.embedding_layer().ok_or_else(|| {
        Error::Model("the reference has no layer before its head to embed with".into())
    })?;
    let positions = candidate_positions(split);
    let starts: Vec<u32> = positions.iter().map(|&p| split.starts[p]).collect();
    let context = split.context as i64;
    let (mut saliency, mut margin, mut mean_nll, mut embeddings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for chunk in positions.chunks(batch_size.max(1)) {
        let (inputs, targets) = split.tensors(chunk, &Default::default(), None)?;
        let (inputs, targets) = (inputs.f_to_device(device)?, targets.f_to_device(device)?);
        let windows = chunk.len() as i64;
        let (logits, taps) = reference.forward_with_taps(
            &inputs,
            false,
            Weights::Float,
            &[embedding_layer, hidden_layer],
        )?;
        let losses =
            logits.f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::None, -100, 0.0)?;
        let total = losses.f_sum(Kind::Float)?;
        let gradients = Tensor::f_run_backward(&[&total], &[&taps[0]], false, false)?;
        let _no_grad = tch::no_grad_guard();
        let per_window = |values: &Tensor| -> Result<Vec<f32>> {
            Ok(Vec::<f32>::try_from(
                &values
                    .f_view([windows, context])?
                    .f_mean_dim(1, false, Kind::Float)?
                    .f_to_device(Device::Cpu)?,
            )?)
        };
        let attribution = gradients[0]
            .f_mul(&taps[0].f_detach()?)?
            .f_square()?
            .f_sum_dim_intlist(-1, false, Kind::Float)?
            .f_sqrt()?;
        saliency.extend(per_window(&attribution)?);
        mean_nll.extend(per_window(&losses.f_detach()?)?);
        let (top, _) = logits
            .f_detach()?
            .f_softmax(-1, Kind::Float)?
            .f_topk(2, -1, true, true)?;
        margin.extend(per_window(
            &top.f_select(1, 0)?.f_sub(&top.f_select(1, 1)?)?,
        )?);
        embeddings.push(
            taps[1]
                .f_detach()?
                .f_mean_dim(1, false, Kind::Float)?
                .f_to_device(Device::Cpu)?,
        );
    }
    let rarest_bigram = rarest_bigrams(split, &starts);
    let scores = Scores {
        misclassified: vec![false; starts.len()],
        saliency,
        margin,
        mean_nll: Some(mean_nll),
        rarest_bigram: Some(rarest_bigram),
        embeddings: Tensor::f_cat(&embeddings, 0)?,
    };
    Ok((starts, scores))
}

/// The positions of the candidate windows of `split`: its non-overlapping windows in corpus
/// order, a window being one when it starts at or after the end of the last one taken (every
/// `context`-th window of a training block; every validation window).
fn candidate_positions(split: &TextSplit) -> Vec<usize> {
    let mut by_start: Vec<usize> = (0..split.len()).collect();
    by_start.sort_by_key(|&position| split.starts[position]);
    let mut positions = Vec::new();
    let mut free_from = 0u32;
    for position in by_start {
        let start = split.starts[position];
        if start >= free_from {
            positions.push(position);
            free_from = start.saturating_add(split.context as u32);
        }
    }
    positions
}

/// How many candidate windows [`score`] scores in `split`.
pub fn candidate_count(split: &TextSplit) -> usize {
    candidate_positions(split).len()
}

/// For each window starting at `starts`, the surprisal `ln(total / count)` of its rarest bigram,
/// with bigrams counted over the split's text (every character some window of `split` covers).
pub fn rarest_bigrams(split: &TextSplit, starts: &[u32]) -> Vec<f32> {
    let symbols = split
        .tokens
        .iter()
        .map(|&t| t as usize + 1)
        .max()
        .unwrap_or(1);
    let mut counts = vec![0u64; symbols * symbols];
    let bigram = |at: usize| split.tokens[at] as usize * symbols + split.tokens[at + 1] as usize;
    // Each window covers the bigrams starting at start..start + context; count each once.
    let mut counted_until = 0usize;
    for &start in &split.starts {
        let (start, end) = (start as usize, start as usize + split.context);
        for at in start.max(counted_until)..end {
            counts[bigram(at)] += 1;
        }
        counted_until = counted_until.max(end);
    }
    let total = counts.iter().sum::<u64>().max(1) as f64;
    starts
        .iter()
        .map(|&start| {
            (start as usize..start as usize + split.context)
                .map(|at| (total / counts[bigram(at)].max(1) as f64).ln() as f32)
                .fold(0.0, f32::max)
        })
        .collect()
}

/// Writes the set as plain text, one section per part and one member per line: criterion,
/// window offset, its scores and the window itself (escaped, so a newline shows as `\n`).
pub fn write_listing(
    path: &Path,
    sections: &[(&str, &[Member], &TextSplit)],
    vocabulary: &Vocabulary,
) -> Result<()> {
    let mut listing = String::from(
        "# criterion\toffset\tmean_nll\tsaliency\trarest_bigram\twindow (context + next character)\n",
    );
    for (heading, members, split) in sections {
        let _ = writeln!(listing, "## {heading}: {} windows", members.len());
        for member in members.iter() {
            let start = member.index as usize;
            let ids: Vec<i64> = split
                .tokens
                .get(start..start + split.context + 1)
                .ok_or_else(|| Error::Model(format!("window {start} lies outside the corpus")))?
                .iter()
                .map(|&id| id as i64)
                .collect();
            let window = vocabulary.decode(&ids)?;
            let _ = writeln!(
                listing,
                "{:?}\t{}\t{:.3}\t{:.4}\t{:.2}\t{:?}",
                member.criterion,
                member.index,
                member.mean_nll.unwrap_or(f32::NAN),
                member.saliency,
                member.rarest_bigram.unwrap_or(f32::NAN),
                window
            );
        }
    }
    crate::files::write_atomically(path, listing.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::text::{split_corpus, BlockSplit};
    use crate::models::fixtures::tiny_transformer;
    use crate::preserve::{select, Candidates, Criterion, PreservationOptions};

    #[test]
    fn rarest_bigram_surprisal_matches_hand_counts() {
        // One training block "aaaab" plus the rest: windows of 2 over tokens a=0, b=1.
        let tokens = std::sync::Arc::new(vec![0u16, 0, 0, 0, 1, 1]);
        let split = TextSplit {
            tokens,
            starts: vec![0, 1, 2, 3],
            context: 2,
        };
        // Windows cover bigrams at 0..5: aa aa aa ab bb -> aa 3, ab 1, bb 1; total 5.
        let scores = rarest_bigrams(&split, &[0, 2, 3]);
        let expected = [
            (5.0f64 / 3.0).ln() as f32,
            (5.0f64).ln() as f32,
            (5.0f64).ln() as f32,
        ];
        for (score, expected) in scores.iter().zip(expected) {
            assert!((score - expected).abs() < 1e-6, "{score} vs {expected}");
        }
    }

    #[test]
    fn text_sets_come_from_their_own_blocks() {
        let text: String = (0..400)
            .map(|i| ['a', 'b', 'c', 'd', '\n'][(i * 7 + i / 3) % 5])
            .collect();
        let splits = split_corpus(
            &text,
            6,
            BlockSplit {
                block_size: 40,
                validation_size: 80,
                test_size: 80,
                seed: 1,
            },
        )
        .unwrap();
        let network = tiny_transformer();
        let (starts, scores) = score(&network, &splits.train, 16, Device::Cpu).unwrap();
        assert_eq!(starts.len(), scores.saliency.len());
        assert_eq!(scores.embeddings.size(), vec![starts.len() as i64, 8]);
        assert!(scores.saliency.iter().all(|&s| s.is_finite() && s > 0.0));
        let labels = vec![0; starts.len()];
        let options = PreservationOptions {
            size: 12,
            saliency_share: 1.0,
            uncertainty_share: 1.0,
            diversity_share: 1.0,
            rare_bigram_share: 1.0,
            ..PreservationOptions::default()
        };
        let candidates = Candidates {
            source_indices: &starts,
            labels: &labels,
        };
        let members = select(&scores, candidates, &options).unwrap();
        assert_eq!(members.len(), 12);
        assert_eq!(
            members
                .iter()
                .filter(|m| m.criterion == Criterion::RareBigrams)
                .count(),
            3
        );
        let held_out: Vec<usize> = splits
            .validation
            .starts
            .iter()
            .chain(&splits.test.starts)
            .map(|&s| s as usize / 40)
            .collect();
        for member in &members {
            assert!(splits.train.starts.contains(&member.index));
            let block = member.index as usize / 40;
            assert!(
                !held_out.contains(&block),
                "member {} is held out",
                member.index
            );
            assert_eq!(block, (member.index as usize + 6) / 40);
        }
        // The highest mean loss leads the uncertainty share, unless the saliency share (the first
        // three members) took it already. Windows repeat in this text, so the highest loss can
        // belong to several windows: compare losses, not positions.
        let mean_nll = scores.mean_nll.as_ref().unwrap();
        let highest = mean_nll.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let loss_of =
            |member: &Member| mean_nll[starts.iter().position(|&s| s == member.index).unwrap()];
        let first_uncertain = members
            .iter()
            .find(|m| m.criterion == Criterion::Uncertainty)
            .unwrap();
        assert!(
            loss_of(first_uncertain) == highest
                || members[..3].iter().any(|m| loss_of(m) == highest),
            "the first uncertainty pick has loss {}, the highest is {highest}",
            loss_of(first_uncertain)
        );
        // Training candidates do not overlap; every validation window (already disjoint) is a
        // candidate of the audit part.
        assert!(starts.windows(2).all(|pair| pair[1] >= pair[0] + 6));
        let (validation_starts, _) = score(&network, &splits.validation, 16, Device::Cpu).unwrap();
        let mut every_window = splits.validation.starts.clone();
        every_window.sort_unstable();
        assert_eq!(validation_starts, every_window);
    }
}
