//! Preservation set stage (METHOD.md §3): the examples on which a compressed model must keep its
//! accuracy, chosen with a float reference model. The set has two parts, chosen the same way:
//! the **loss part** from the training split (a `safe` run trains on it, as in the paper), and the
//! **audit part** (`audit_share` of the set) from the validation split, which no run trains on, so
//! that the guard measures what the compressed model keeps of the reference's generalisation and
//! not of what it memorised.
//!
//! Every candidate example is scored by three criteria:
//! - **saliency**: Grad-CAM mass at the last conv layer ([`gradcam`]); the highest mass of each
//!   class in turn (raw mass favours digits with more ink, so a global ranking would fill the share
//!   with 8s). For text, gradient x embedding per position ([`text`]);
//! - **uncertainty**: the examples the reference gets wrong, then the smallest margins between the
//!   two largest softmax probabilities. For text, the highest mean next-character loss;
//! - **diversity**: k-means on the penultimate embeddings within each class ([`kmeans`]); the
//!   examples nearest each centroid, taken class by class in turn. For text, on the mean final
//!   hidden state of each window;
//! - and for text, optionally, the paper's criterion for names: windows holding the rarest
//!   bigrams of their split's text.
//!
//! The ensemble takes each criterion's share in that order, skipping examples already taken, and
//! fills any shortfall from the saliency ranking. The result is deterministic for a seed and is
//! saved as JSON listing every member's source index (an image's index in its file, a window's
//! character offset in its corpus), label, scores and the criterion that picked it; [`montage`]
//! draws an image set as a PNG with Grad-CAM overlays, and a text set is listed as plain text.

pub mod gradcam;
pub mod kmeans;
pub mod montage;
pub mod text;

use crate::data::{ImageSplit, InputOptions, Tensors};
use crate::data::{Split, TrainValidation};
use crate::error::{Error, Result};
use crate::models::Network;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Format tag of preservation-set files.
pub const FORMAT: &str = "sgsc-preservation-set-2";

/// How large the set is and how it is shared between the criteria.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreservationOptions {
    /// Number of examples in the set (both parts).
    pub size: usize,
    /// Share of the set drawn from the validation split as its audit part (`safety.audit_share`).
    pub audit_share: f64,
    /// Share of the set picked by Grad-CAM saliency.
    pub saliency_share: f64,
    /// Share picked by uncertainty (misclassified, then smallest margin).
    pub uncertainty_share: f64,
    /// Share picked by diversity (nearest to per-class k-means centroids).
    pub diversity_share: f64,
    /// Share picked by the rarest bigrams (text only; 0 by default).
    #[serde(default)]
    pub rare_bigram_share: f64,
    /// Lloyd iterations of k-means (at most).
    pub kmeans_iterations: usize,
    /// Seed of k-means.
    pub seed: u64,
}

impl Default for PreservationOptions {
    fn default() -> Self {
        PreservationOptions {
            size: 1000,
            audit_share: crate::config::DEFAULT_AUDIT_SHARE,
            saliency_share: 1.0 / 3.0,
            uncertainty_share: 1.0 / 3.0,
            diversity_share: 1.0 / 3.0,
            rare_bigram_share: 0.0,
            kmeans_iterations: 30,
            seed: 0,
        }
    }
}

impl PreservationOptions {
    /// Members of the loss part (training split) and of the audit part (validation split).
    pub fn part_sizes(&self) -> (usize, usize) {
        let audit = (self.audit_share * self.size as f64).round() as usize;
        (self.size.saturating_sub(audit), audit.min(self.size))
    }

    /// These options for one part: `size` members, by the same criteria.
    fn for_part(&self, size: usize) -> Self {
        PreservationOptions {
            size,
            ..self.clone()
        }
    }

    /// The defaults for a data set: equal shares of saliency, uncertainty and diversity, and for
    /// names (the paper's corpus) an equal fourth share of the rarest bigrams.
    pub fn for_dataset(dataset: crate::data::DatasetKind) -> Self {
        if dataset == crate::data::DatasetKind::Names {
            PreservationOptions {
                saliency_share: 0.25,
                uncertainty_share: 0.25,
                diversity_share: 0.25,
                rare_bigram_share: 0.25,
                ..PreservationOptions::default()
            }
        } else {
            PreservationOptions::default()
        }
    }
}

/// The criterion that put an example in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// High Grad-CAM mass.
    Saliency,
    /// Misclassified or small top-2 margin.
    Uncertainty,
    /// Nearest to a class cluster's centroid.
    Diversity,
    /// Holds one of its split's text's rarest bigrams.
    RareBigrams,
}

/// One example of the set, with every score, so the choice can be audited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Index of the example: in the MNIST training file, or a window's character offset in its
    /// corpus.
    pub index: u32,
    /// Its label (0 for text).
    pub label: u8,
    /// The criterion that picked it.
    pub criterion: Criterion,
    /// Saliency under the reference model: Grad-CAM mass, or for text the mean over positions
    /// of |gradient x embedding|.
    #[serde(alias = "cam_mass")]
    pub saliency: f32,
    /// Top-1 minus top-2 softmax probability (for text, the mean over positions).
    pub margin: f32,
    /// Whether the reference model gets it wrong.
    pub misclassified: bool,
    /// Its k-means cluster within its class.
    pub cluster: u32,
    /// Euclidean distance of its embedding to that cluster's centroid.
    pub centroid_distance: f32,
    /// Text: mean next-character loss (nats) under the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_nll: Option<f32>,
    /// Text: surprisal (nats) of the window's rarest bigram in its split's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rarest_bigram: Option<f32>,
}

/// Which train/validation split the set was drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitInfo {
    /// Always `train`: the training file, whose training part gives the loss part and whose
    /// validation part gives the audit part (the set never draws on test images).
    pub file: String,
    /// Validation images held out of the training file.
    pub validation_size: usize,
    /// Seed of the train/validation split.
    pub split_seed: u64,
}

impl SplitInfo {
    /// The train/validation split of the training file made with these settings (its training
    /// part gives the loss part, its validation part the audit part).
    pub fn train(validation_size: usize, split_seed: u64) -> Self {
        SplitInfo {
            file: "train".into(),
            validation_size,
            split_seed,
        }
    }
}

/// A preservation set as saved on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreservationSet {
    /// [`FORMAT`].
    pub format: String,
    /// The split the members come from.
    pub split: SplitInfo,
    /// The reference checkpoint it was built with.
    pub reference: String,
    /// How it was built.
    pub options: PreservationOptions,
    /// The loss part: training examples.
    pub members: Vec<Member>,
    /// The audit part: validation examples (their indices are the validation split's source
    /// indices), which no run trains on.
    pub audit: Vec<Member>,
}

/// Scores of every candidate example under the reference model.
#[derive(Debug)]
pub struct Scores {
    /// Grad-CAM mass, or gradient x embedding saliency for text.
    pub saliency: Vec<f32>,
    /// Top-1 minus top-2 softmax probability.
    pub margin: Vec<f32>,
    /// Wrong predictions.
    pub misclassified: Vec<bool>,
    /// Text: mean next-character loss, which then ranks uncertainty.
    pub mean_nll: Option<Vec<f32>>,
    /// Text: surprisal of the rarest bigram.
    pub rarest_bigram: Option<Vec<f32>>,
    /// Penultimate embeddings `[n, d]` (on the CPU).
    pub embeddings: Tensor,
}

/// The candidates the scores describe: their source indices (training or validation) and labels
/// (all 0 for text).
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    /// Source index of each candidate.
    pub source_indices: &'a [u32],
    /// Label of each candidate.
    pub labels: &'a [u8],
}

/// Scores every example of `split` with the float `reference` network (evaluation mode).
pub fn score(
    reference: &Network,
    split: &ImageSplit,
    input: &InputOptions,
    batch_size: usize,
    device: Device,
) -> Result<Scores> {
    let feature = gradcam::feature_layer(reference)?;
    let embedding = reference.embedding_layer().ok_or_else(|| {
        Error::Model("the reference has no layer before its classifier to embed with".into())
    })?;
    let (mut saliency, mut margin, mut misclassified, mut embeddings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let positions: Vec<usize> = (0..split.len()).collect();
    for chunk in positions.chunks(batch_size.max(1)) {
        let (inputs, labels) = split.tensors(chunk, input, None)?;
        let (inputs, labels) = (inputs.f_to_device(device)?, labels.f_to_device(device)?);
        let (logits, taps) = reference.forward_with_taps(
            &inputs,
            false,
            crate::models::Weights::Float,
            &[feature, embedding],
        )?;
        let cam = gradcam::class_activation_maps(&taps[0], &logits)?;
        let _no_grad = tch::no_grad_guard();
        saliency.extend(Vec::<f32>::try_from(
            &cam.f_sum_dim_intlist([1, 2].as_slice(), false, Kind::Float)?
                .f_to_device(Device::Cpu)?,
        )?);
        let (top, _) = logits
            .f_softmax(-1, Kind::Float)?
            .f_topk(2, -1, true, true)?;
        let top = top.f_to_device(Device::Cpu)?;
        margin.extend(Vec::<f32>::try_from(
            &top.f_select(1, 0)?.f_sub(&top.f_select(1, 1)?)?,
        )?);
        let wrong = logits
            .f_argmax(-1, false)?
            .f_ne_tensor(&labels)?
            .f_to_device(Device::Cpu)?;
        misclassified.extend(Vec::<bool>::try_from(&wrong)?);
        embeddings.push(
            taps[1]
                .f_detach()?
                .f_flatten(1, -1)?
                .f_to_device(Device::Cpu)?,
        );
    }
    Ok(Scores {
        saliency,
        margin,
        misclassified,
        mean_nll: None,
        rarest_bigram: None,
        embeddings: Tensor::f_cat(&embeddings, 0)?,
    })
}

/// Picks the preservation set from the scored `candidates` (see the module docs).
pub fn select(
    scores: &Scores,
    candidates: Candidates,
    options: &PreservationOptions,
) -> Result<Vec<Member>> {
    let n = candidates.source_indices.len();
    let shares = [
        options.saliency_share,
        options.uncertainty_share,
        options.diversity_share,
        options.rare_bigram_share,
    ];
    let total_share: f64 = shares.iter().sum();
    if options.size == 0
        || options.size > n
        || shares.iter().any(|&s| s.is_nan() || s < 0.0)
        || total_share.is_nan()
        || total_share <= 0.0
    {
        return Err(Error::Model(format!(
            "preservation set: size {} of {n} examples with shares {shares:?} is not possible",
            options.size
        )));
    }
    if options.rare_bigram_share > 0.0 && scores.rarest_bigram.is_none() {
        return Err(Error::Model(
            "the rare-bigram share needs text scored for bigrams".into(),
        ));
    }
    let quota = |share: f64| (options.size as f64 * share / total_share).round() as usize;
    let saliency_quota = quota(shares[0]);
    let uncertainty_quota = quota(shares[1]);
    let rare_bigram_quota = quota(shares[3]);
    let diversity_quota = options
        .size
        .saturating_sub(saliency_quota + uncertainty_quota + rare_bigram_quota);

    let descending = |values: &[f32]| {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        order
    };
    let by_saliency = classes_in_turn(&descending(&scores.saliency), candidates.labels);
    let by_uncertainty = match &scores.mean_nll {
        Some(mean_nll) => descending(mean_nll),
        None => {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| {
                (!scores.misclassified[a], scores.margin[a])
                    .partial_cmp(&(!scores.misclassified[b], scores.margin[b]))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(&b))
            });
            order
        }
    };
    let by_rare_bigrams = scores
        .rarest_bigram
        .as_deref()
        .map(descending)
        .unwrap_or_default();
    let (clusters, distances, by_diversity) =
        diversity_order(scores, candidates.labels, diversity_quota, options)?;

    let mut taken = vec![false; n];
    let mut members = Vec::with_capacity(options.size);
    let mut take =
        |order: &[usize], quota: usize, criterion: Criterion, members: &mut Vec<Member>| {
            let goal = members.len() + quota;
            for &position in order {
                if members.len() >= goal.min(options.size) {
                    break;
                }
                if !taken[position] {
                    taken[position] = true;
                    members.push(Member {
                        index: candidates.source_indices[position],
                        label: candidates.labels[position],
                        criterion,
                        saliency: scores.saliency[position],
                        margin: scores.margin[position],
                        misclassified: scores.misclassified[position],
                        cluster: clusters[position],
                        centroid_distance: distances[position],
                        mean_nll: scores.mean_nll.as_ref().map(|v| v[position]),
                        rarest_bigram: scores.rarest_bigram.as_ref().map(|v| v[position]),
                    });
                }
            }
        };
    take(
        &by_saliency,
        saliency_quota,
        Criterion::Saliency,
        &mut members,
    );
    take(
        &by_uncertainty,
        uncertainty_quota,
        Criterion::Uncertainty,
        &mut members,
    );
    take(
        &by_rare_bigrams,
        rare_bigram_quota,
        Criterion::RareBigrams,
        &mut members,
    );
    take(
        &by_diversity,
        diversity_quota,
        Criterion::Diversity,
        &mut members,
    );
    let shortfall = options.size - members.len();
    take(&by_saliency, shortfall, Criterion::Saliency, &mut members);
    Ok(members)
}

/// Per-class k-means on the embeddings: each example's cluster and distance to its centroid, and
/// a diversity order that visits the classes in turn and, within a class, the clusters in turn,
/// nearest examples first.
fn diversity_order(
    scores: &Scores,
    labels: &[u8],
    quota: usize,
    options: &PreservationOptions,
) -> Result<(Vec<u32>, Vec<f32>, Vec<usize>)> {
    let n = labels.len();
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(1);
    let clusters_per_class = quota.div_ceil(classes).max(1);
    let mut cluster_of = vec![0u32; n];
    let mut distance_of = vec![0f32; n];
    let mut class_queues: Vec<Vec<usize>> = Vec::with_capacity(classes);
    for class in 0..classes {
        let positions: Vec<usize> = (0..n).filter(|&i| labels[i] as usize == class).collect();
        if positions.is_empty() {
            class_queues.push(Vec::new());
            continue;
        }
        let index = Tensor::f_from_slice(&positions.iter().map(|&p| p as i64).collect::<Vec<_>>())?;
        let points = scores.embeddings.f_index_select(0, &index)?;
        let k = clusters_per_class.min(positions.len());
        let clustering = kmeans::kmeans(
            &points,
            k,
            options.kmeans_iterations,
            options.seed.wrapping_add(class as u64),
        )?;
        let distances = kmeans::squared_distances(&points, &clustering.centroids)?;
        let own = Vec::<f32>::try_from(
            &distances
                .f_gather(
                    1,
                    &Tensor::f_from_slice(&clustering.assignments)?.f_unsqueeze(1)?,
                    false,
                )?
                .f_view([-1])?,
        )?;
        let mut by_cluster: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (local, &position) in positions.iter().enumerate() {
            let cluster = clustering.assignments[local] as usize;
            cluster_of[position] = cluster as u32;
            distance_of[position] = own[local].sqrt();
            by_cluster[cluster].push(position);
        }
        for members in &mut by_cluster {
            members.sort_by(|&a, &b| distance_of[a].total_cmp(&distance_of[b]).then(a.cmp(&b)));
        }
        class_queues.push(interleave(&by_cluster));
    }
    Ok((cluster_of, distance_of, interleave(&class_queues)))
}

/// A ranking reordered to visit the classes in turn: the best of each class, then the second best
/// of each, and so on.
fn classes_in_turn(ranking: &[usize], labels: &[u8]) -> Vec<usize> {
    let mut per_class: Vec<Vec<usize>> = Vec::new();
    for &position in ranking {
        let class = labels[position] as usize;
        if per_class.len() <= class {
            per_class.resize(class + 1, Vec::new());
        }
        per_class[class].push(position);
    }
    interleave(&per_class)
}

/// The first element of each list, then the second of each, and so on.
fn interleave(lists: &[Vec<usize>]) -> Vec<usize> {
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|rank| lists.iter().filter_map(move |list| list.get(rank).copied()))
        .collect()
}

/// Builds the preservation set of `reference` (a float network) on `data`: its loss part from the
/// training split, its audit part from the validation split, with batches of `batch_size`, and
/// saves it to `out`. An image set is drawn as a montage at `picture` (both parts, sorted by
/// criterion and class); a text set is listed at `picture` with the extension `.txt`, part by
/// part. Returns the set and the path of its picture or listing.
#[allow(clippy::too_many_arguments)]
pub fn build_and_save(
    reference: &Network,
    reference_path: &Path,
    data: &TrainValidation,
    split: SplitInfo,
    input: &InputOptions,
    options: PreservationOptions,
    batch_size: usize,
    device: Device,
    out: &Path,
    picture: &Path,
) -> Result<(PreservationSet, PathBuf)> {
    let (loss_size, audit_size) = options.part_sizes();
    let candidates = |split: &Split| match split {
        Split::Images(images) => images.len(),
        Split::Text(text) => text::candidate_count(text),
    };
    if loss_size == 0 || loss_size > candidates(&data.train) {
        return Err(Error::Model(format!(
            "the loss part needs 1 to {} training examples, and a set of {} with an audit share of {} gives it {loss_size}",
            candidates(&data.train),
            options.size,
            options.audit_share
        )));
    }
    if audit_size > candidates(&data.validation) {
        return Err(Error::Model(format!(
            "the audit part needs {audit_size} validation examples, and the validation split has {}: lower the set's size or safety.audit_share, or raise data.validation_size",
            candidates(&data.validation)
        )));
    }
    let assemble = |members: Vec<Member>, audit: Vec<Member>| PreservationSet {
        format: FORMAT.into(),
        split: split.clone(),
        reference: reference_path.display().to_string(),
        options: options.clone(),
        members,
        audit,
    };
    // One part of `size` members from one split, scored by the reference; none when the size
    // is 0.
    let part = |split: &Split, size: usize| -> Result<Vec<Member>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let (source_indices, labels, scores) = match split {
            Split::Images(images) => (
                images.source_indices.clone(),
                images.labels.clone(),
                score(reference, images, input, batch_size, device)?,
            ),
            Split::Text(text) => {
                let (starts, scores) = text::score(reference, text, batch_size, device)?;
                let labels = vec![0; starts.len()];
                (starts, labels, scores)
            }
        };
        let candidates = Candidates {
            source_indices: &source_indices,
            labels: &labels,
        };
        select(&scores, candidates, &options.for_part(size))
    };
    match (&data.train, &data.validation) {
        (Split::Images(train), Split::Images(validation)) => {
            let set = assemble(
                part(&data.train, loss_size)?,
                part(&data.validation, audit_size)?,
            );
            set.save(out)?;
            let (mut members, mut images, mut inputs) = (Vec::new(), Vec::new(), Vec::new());
            for (chosen, split) in [(&set.members, train), (&set.audit, validation)] {
                if chosen.is_empty() {
                    continue;
                }
                let position_of = split.positions_by_index();
                let positions: Vec<usize> = chosen
                    .iter()
                    .map(|member| position_of[&member.index])
                    .collect();
                inputs.push(split.tensors(&positions, input, None)?.0);
                images.extend(positions.iter().map(|&p| split.image(p)));
                members.extend(chosen.iter().cloned());
            }
            let inputs = Tensor::f_cat(&inputs, 0)?;
            let (cams, _) = gradcam::grad_cam(reference, &inputs.f_to_device(device)?)?;
            montage::write_montage(
                picture,
                &members,
                &images,
                &cams.f_to_device(Device::Cpu)?,
                train.shape,
            )?;
            Ok((set, picture.to_path_buf()))
        }
        (Split::Text(train), Split::Text(validation)) => {
            let vocabulary = data.vocabulary.as_ref().ok_or_else(|| {
                Error::Model("a text split needs its vocabulary to list the set".into())
            })?;
            let set = assemble(
                part(&data.train, loss_size)?,
                part(&data.validation, audit_size)?,
            );
            set.save(out)?;
            let listing = picture.with_extension("txt");
            text::write_listing(
                &listing,
                &[
                    ("loss part (training windows)", &set.members, train),
                    ("audit part (validation windows)", &set.audit, validation),
                ],
                vocabulary,
            )?;
            Ok((set, listing))
        }
        _ => Err(Error::Model(
            "the training and validation splits are of different kinds".into(),
        )),
    }
}

impl PreservationSet {
    /// Writes the set as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| Error::Training(e.to_string()))?;
        crate::files::write_atomically(path, text.as_bytes())
    }

    /// Reads and checks a set written by [`PreservationSet::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let fail = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| fail(format!("not a preservation set: {e}")))?;
        let format = value
            .get("format")
            .and_then(|format| format.as_str())
            .unwrap_or("none");
        if format != FORMAT {
            let remedy = if format.starts_with("sgsc-preservation-set-") {
                " (a set of an older format has no held-out audit part: rebuild it with `sgsc preserve`)"
            } else {
                ""
            };
            return Err(fail(format!("format {format:?} is not {FORMAT}{remedy}")));
        }
        let set: PreservationSet = serde_json::from_value(value)
            .map_err(|e| fail(format!("not a preservation set: {e}")))?;
        if set.split.file != "train" {
            return Err(fail(format!(
                "split {:?} is not the train split",
                set.split.file
            )));
        }
        if set.members.is_empty() {
            return Err(fail("the set's loss part has no members".into()));
        }
        for part in [&set.members, &set.audit] {
            let mut indices: Vec<u32> = part.iter().map(|m| m.index).collect();
            indices.sort_unstable();
            indices.dedup();
            if indices.len() != part.len() {
                return Err(fail("an example appears twice".into()));
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(split: &ImageSplit) -> Candidates<'_> {
        Candidates {
            source_indices: &split.source_indices,
            labels: &split.labels,
        }
    }

    fn toy(n: usize) -> (ImageSplit, Scores) {
        let split = ImageSplit {
            shape: crate::data::ImageShape::new(1, 28, 28),
            images: vec![0; n * 28 * 28],
            labels: (0..n).map(|i| (i % 2) as u8).collect(),
            source_indices: (0..n as u32).map(|i| 100 + i).collect(),
            normalization: crate::data::Normalization::mnist(),
        };
        // Embeddings: class 0 at x = position, class 1 at x = -position.
        let embeddings: Vec<f32> = (0..n)
            .flat_map(|i| [if i % 2 == 0 { i as f32 } else { -(i as f32) }, 0.0])
            .collect();
        let scores = Scores {
            saliency: (0..n).map(|i| i as f32).collect(),
            margin: (0..n).map(|i| 1.0 - i as f32 / n as f32).collect(),
            misclassified: (0..n).map(|i| i == 3).collect(),
            mean_nll: None,
            rarest_bigram: None,
            embeddings: Tensor::from_slice(&embeddings).view([n as i64, 2]),
        };
        (split, scores)
    }

    #[test]
    fn ensemble_takes_each_share_without_duplicates() {
        let (split, scores) = toy(40);
        let options = PreservationOptions {
            size: 9,
            ..PreservationOptions::default()
        };
        let members = select(&scores, candidates(&split), &options).unwrap();
        assert_eq!(members.len(), 9);
        // Saliency: the largest CAM masses, classes in turn: class 0 (even positions) 38, class 1
        // 39, class 0 again 36.
        let saliency: Vec<u32> = members
            .iter()
            .filter(|m| m.criterion == Criterion::Saliency)
            .map(|m| m.index)
            .collect();
        assert_eq!(saliency, vec![138, 139, 136]);
        // Uncertainty: the misclassified position 3 first, then the smallest margins not yet taken
        // (37, 35).
        let uncertain: Vec<u32> = members
            .iter()
            .filter(|m| m.criterion == Criterion::Uncertainty)
            .map(|m| m.index)
            .collect();
        assert_eq!(uncertain, vec![103, 137, 135]);
        // Diversity alternates between the classes.
        let diverse: Vec<u8> = members
            .iter()
            .filter(|m| m.criterion == Criterion::Diversity)
            .map(|m| m.label)
            .collect();
        assert_eq!(diverse.len(), 3);
        assert!(diverse.windows(2).all(|w| w[0] != w[1]), "{diverse:?}");
        let mut indices: Vec<u32> = members.iter().map(|m| m.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), 9);
        // Same options, same set.
        assert_eq!(
            select(&scores, candidates(&split), &options).unwrap(),
            members
        );
    }

    #[test]
    fn part_sizes_split_the_set_by_the_audit_share() {
        let sizes = |size, audit_share| {
            PreservationOptions {
                size,
                audit_share,
                ..PreservationOptions::default()
            }
            .part_sizes()
        };
        assert_eq!(sizes(1000, 0.5), (500, 500));
        assert_eq!(sizes(7, 0.5), (3, 4));
        assert_eq!(sizes(10, 0.0), (10, 0));
        assert_eq!(sizes(10, 0.25), (7, 3));
    }

    #[test]
    fn impossible_sizes_are_errors() {
        let (split, scores) = toy(10);
        let too_big = PreservationOptions {
            size: 11,
            ..PreservationOptions::default()
        };
        assert!(matches!(
            select(&scores, candidates(&split), &too_big),
            Err(Error::Model(_))
        ));
        let no_share = PreservationOptions {
            saliency_share: 0.0,
            uncertainty_share: 0.0,
            diversity_share: 0.0,
            ..PreservationOptions::default()
        };
        assert!(matches!(
            select(&scores, candidates(&split), &no_share),
            Err(Error::Model(_))
        ));
    }

    #[test]
    fn file_round_trip_and_rejection() {
        let (split, scores) = toy(20);
        let options = PreservationOptions {
            size: 6,
            ..PreservationOptions::default()
        };
        let set = PreservationSet {
            format: FORMAT.into(),
            split: SplitInfo::train(5, 1),
            reference: "ref.safetensors".into(),
            members: select(&scores, candidates(&split), &options).unwrap(),
            audit: select(
                &scores,
                candidates(&split),
                &PreservationOptions {
                    size: 4,
                    ..options.clone()
                },
            )
            .unwrap(),
            options,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.json");
        set.save(&path).unwrap();
        assert_eq!(PreservationSet::load(&path).unwrap(), set);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"train\"", "\"test\"", 1)).unwrap();
        assert!(matches!(
            PreservationSet::load(&path),
            Err(Error::Config { .. })
        ));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            PreservationSet::load(&path),
            Err(Error::Config { .. })
        ));
        // A set of the first format (no audit part) is refused by its format, with the remedy.
        let old = text.replacen(FORMAT, "sgsc-preservation-set-1", 1);
        std::fs::write(&path, old).unwrap();
        match PreservationSet::load(&path) {
            Err(Error::Config { message, .. }) => assert!(message.contains("sgsc preserve")),
            other => panic!("{other:?}"),
        }
    }
}
