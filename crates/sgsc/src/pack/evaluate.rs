//! Measuring a packed model through the pure-Rust runtime, on a split of the data it was trained
//! for: the figures a deployed `.sgsc` file really gives, through the f32 path or the integer
//! path (calibrated here, as the C export and the guard's final gate calibrate it).

use crate::data::{Split, Tensors};
use crate::error::{Error, Result};
use sgsc_data::ImageSplit;
use sgsc_runtime::integer::Saturation;
use sgsc_runtime::{IntegerModel, Model};
use tch::Kind;

/// Examples (images or windows) per runtime call.
const BATCH: usize = 256;

/// Accuracy and mean cross-entropy of a packed model on a split, with every prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedEvaluation {
    /// Fraction of predictions (images, or characters) that are right.
    pub accuracy: f64,
    /// Mean cross-entropy, nats.
    pub loss: f64,
    /// The predicted class (or next character id) of every prediction, in split order.
    pub predictions: Vec<u32>,
}

/// The index of the largest of each `outputs`-long row, and the row's cross-entropy at `label`.
fn score_rows(logits: &[f32], outputs: usize, labels: &[i64]) -> (Vec<u32>, f64) {
    let mut predictions = Vec::with_capacity(labels.len());
    let mut loss = 0.0;
    for (row, &label) in logits.chunks_exact(outputs).zip(labels) {
        let (best, largest) =
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                });
        let total: f64 = row.iter().map(|&v| f64::from(v - largest).exp()).sum();
        loss += total.ln() - f64::from(row[label as usize] - largest);
        predictions.push(best as u32);
    }
    (predictions, loss)
}

/// Runs `model` over every example of `split` (images through their raw pixels, so the runtime's
/// own normalisation is what is measured; text through its evaluation windows).
pub fn evaluate_packed(model: &Model, split: &Split) -> Result<PackedEvaluation> {
    evaluate_with(split, model.outputs(), |chunk| match split {
        Split::Images(images) => model
            .classify_pixels(&pixels_of(images, chunk), chunk.len())
            .map_err(Error::from),
        Split::Text(_) => {
            let (inputs, _) = split.tensors(chunk, &Default::default(), None)?;
            let ids: Vec<u32> =
                Vec::<i64>::try_from(&inputs.f_to_kind(Kind::Int64)?.f_view([-1])?)?
                    .into_iter()
                    .map(|id| id as u32)
                    .collect();
            Ok(model.next_token_logits(&ids, chunk.len())?)
        }
    })
}

/// The integer path's figures on a split, and how many codes sat at the ends of their range.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegerEvaluation {
    /// Accuracy, loss and predictions.
    pub evaluation: PackedEvaluation,
    /// Per saturating operation, over every image of the split.
    pub saturation: Vec<Saturation>,
}

impl IntegerEvaluation {
    /// The saturation counts in one line: `conv 0: 12 of 5760000, add 4: 0 of 640000, ...`.
    pub fn saturation_line(&self) -> String {
        self.saturation
            .iter()
            .map(|entry| {
                format!(
                    "{} {}: {} of {}",
                    entry.kind, entry.op, entry.at_ends, entry.codes
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs the integer path of an image classifier over every image of `split`; its 32-bit
/// logits are scored at their real values (`logit * output_scale`).
pub fn evaluate_integer(model: &IntegerModel, split: &Split) -> Result<IntegerEvaluation> {
    let Split::Images(images) = split else {
        return Err(Error::Model(
            "the integer path runs image classifiers".into(),
        ));
    };
    let scale = model.output_scale();
    let mut saturation = model.saturation_counters();
    let evaluation = evaluate_with(split, model.outputs(), |chunk| {
        let logits = model.classify_counting_saturation(
            &pixels_of(images, chunk),
            chunk.len(),
            &mut saturation,
        )?;
        Ok(logits
            .iter()
            .map(|&logit| (f64::from(logit) * scale) as f32)
            .collect())
    })?;
    Ok(IntegerEvaluation {
        evaluation,
        saturation,
    })
}

/// Training images that calibrate the integer path's activation ranges by default.
pub const CALIBRATION_IMAGES: usize = 1000;

/// The largest magnitude of each layer's output over the calibration images: `count` images
/// evenly spaced through `train` (the training split; [`CALIBRATION_IMAGES`] by default).
pub fn calibration_ranges(model: &Model, train: &ImageSplit, count: usize) -> Result<Vec<f32>> {
    let count = count.clamp(1, train.len().max(1));
    let positions: Vec<usize> = (0..count).map(|i| i * train.len() / count).collect();
    Ok(model.layer_ranges(&pixels_of(train, &positions), count)?)
}

/// The integer model of `model` with `bits`-bit activations and the calibrated `ranges` (as a
/// certificate records them).
pub fn integer_model(model: &Model, ranges: &[f64], bits: u32) -> Result<IntegerModel> {
    let ranges: Vec<f32> = ranges.iter().map(|&range| range as f32).collect();
    Ok(IntegerModel::new(model.packed(), &ranges, bits)?)
}

/// The pixels of the images at `positions`, one after another.
pub fn pixels_of(images: &ImageSplit, positions: &[usize]) -> Vec<u8> {
    positions
        .iter()
        .flat_map(|&i| images.image(i).to_vec())
        .collect()
}

/// Scores the logits that `logits_of` gives for each chunk of `split`'s positions against the
/// split's labels.
fn evaluate_with(
    split: &Split,
    outputs: usize,
    mut logits_of: impl FnMut(&[usize]) -> Result<Vec<f32>>,
) -> Result<PackedEvaluation> {
    let mut predictions = Vec::new();
    let mut correct = 0usize;
    let mut loss = 0.0;
    let mut count = 0usize;
    let positions: Vec<usize> = (0..split.len()).collect();
    for chunk in positions.chunks(BATCH) {
        let labels: Vec<i64> = match split {
            Split::Images(images) => chunk.iter().map(|&i| i64::from(images.labels[i])).collect(),
            Split::Text(_) => {
                let (_, targets) = split.tensors(chunk, &Default::default(), None)?;
                Vec::<i64>::try_from(&targets.f_view([-1])?)?
            }
        };
        let logits = logits_of(chunk)?;
        if labels.iter().any(|&l| l < 0 || l as usize >= outputs) {
            return Err(Error::Model(format!(
                "labels outside the model's {outputs} outputs"
            )));
        }
        let (chunk_predictions, chunk_loss) = score_rows(&logits, outputs, &labels);
        correct += chunk_predictions
            .iter()
            .zip(&labels)
            .filter(|(p, &l)| **p as i64 == l)
            .count();
        count += labels.len();
        loss += chunk_loss;
        predictions.extend(chunk_predictions);
    }
    Ok(PackedEvaluation {
        accuracy: correct as f64 / count.max(1) as f64,
        loss: loss / count.max(1) as f64,
        predictions,
    })
}
