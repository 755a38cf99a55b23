//! Labelled images of any shape: the splits every image data set is read into, the seeded
//! train/validation split, the per-channel normalisation measured on the training split, and
//! the batches (as plain numbers; `sgsc` turns them into tensors).

use crate::augment::Augmentation;
use crate::DataError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Most classes an image data set may have (labels are stored in one byte).
pub const MAX_CLASSES: usize = 256;

/// The shape of one image: channels (1 grey, 3 RGB), rows and columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Channels (1 for grey, 3 for RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// The shape `channels` x `height` x `width`.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        ImageShape {
            channels,
            height,
            width,
        }
    }

    /// Values of one image (channels x rows x columns).
    pub fn values(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The shape as `[channels, height, width]`.
    pub fn dims(&self) -> Vec<usize> {
        vec![self.channels, self.height, self.width]
    }
}

/// Per-channel normalisation of pixels scaled to [0, 1]: `(pixel / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of each channel.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel.
    pub std: Vec<f32>,
}

impl Normalization {
    /// MNIST's published constants (kept for the `mnist` data set, so that its figures stay the
    /// same; every other data set measures its own).
    pub fn mnist() -> Self {
        Normalization {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// No normalisation (mean 0, deviation 1) for each of `channels`: what a split holds until
    /// its data set's normalisation is known.
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Mean and (population) standard deviation of each channel over every pixel of `split`, in
    /// [0, 1]. A constant channel gets a standard deviation of 1, so that nothing divides by 0.
    pub fn measure(split: &ImageSplit) -> Self {
        let channels = split.shape.channels;
        let plane = split.shape.height * split.shape.width;
        let mut sums = vec![0u64; channels];
        let mut squares = vec![0u64; channels];
        for image in split.images.chunks_exact(split.shape.values().max(1)) {
            for (channel, values) in image.chunks_exact(plane.max(1)).enumerate() {
                for &value in values {
                    sums[channel] += u64::from(value);
                    squares[channel] += u64::from(value) * u64::from(value);
                }
            }
        }
        let count = (split.len() * plane).max(1) as f64;
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for channel in 0..channels {
            let mu = sums[channel] as f64 / count / 255.0;
            let variance = squares[channel] as f64 / count / (255.0 * 255.0) - mu * mu;
            let sigma = variance.max(0.0).sqrt();
            mean.push(mu as f32);
            std.push(if sigma > 1e-6 { sigma as f32 } else { 1.0 });
        }
        Normalization { mean, std }
    }
}

/// A set of labelled images, each remembering its index in the original file (or listing).
#[derive(Debug, Clone)]
pub struct ImageSplit {
    /// The shape of every image.
    pub shape: ImageShape,
    /// Pixels, `shape.values()` bytes per image, channel-major then row-major.
    pub images: Vec<u8>,
    /// Class of each image.
    pub labels: Vec<u8>,
    /// Index of each image in the file it came from (for audit trails such as the preservation
    /// set, whose members name images by it).
    pub source_indices: Vec<u32>,
    /// The normalisation batches use: measured on the training split (or published), and the
    /// same for every split of a data set.
    pub normalization: Normalization,
}

/// How pixels become model inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputOptions {
    /// Subtract each channel's mean and divide by its standard deviation (after scaling to
    /// [0, 1]), as the split's [`Normalization`] says.
    pub normalize: bool,
    /// Random distortions for training batches.
    pub augmentation: Augmentation,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            normalize: true,
            augmentation: Augmentation::default(),
        }
    }
}

/// The inputs of a batch, `[n, channels, height, width]` row-major, and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    /// `[n, channels, height, width]`.
    pub shape: [usize; 4],
    /// The normalised (and perhaps distorted) pixels.
    pub inputs: Vec<f32>,
    /// The class of each image.
    pub labels: Vec<i64>,
}

impl ImageSplit {
    /// An empty split of images of `shape`.
    pub fn empty(shape: ImageShape, normalization: Normalization) -> Self {
        ImageSplit {
            shape,
            images: Vec::new(),
            labels: Vec::new(),
            source_indices: Vec::new(),
            normalization,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.shape.values();
        &self.images[i * size..(i + 1) * size]
    }

    /// Position of each image in this split, by its index in the original file.
    pub fn positions_by_index(&self) -> std::collections::HashMap<u32, usize> {
        self.source_indices
            .iter()
            .enumerate()
            .map(|(position, &index)| (index, position))
            .collect()
    }

    /// The images at `positions`, in that order.
    pub fn subset(&self, positions: &[usize]) -> ImageSplit {
        let mut subset = ImageSplit::empty(self.shape, self.normalization.clone());
        for &i in positions {
            subset.images.extend_from_slice(self.image(i));
            subset.labels.push(self.labels[i]);
            subset.source_indices.push(self.source_indices[i]);
        }
        subset
    }

    /// The inputs and labels of the images at `positions`. With `rng`, each image gets the
    /// configured random distortion (before normalisation, on pixels in [0, 1]).
    pub fn batch(
        &self,
        positions: &[usize],
        options: &InputOptions,
        rng: Option<&mut ChaCha8Rng>,
    ) -> ImageBatch {
        let plane = self.shape.height * self.shape.width;
        let mut inputs = Vec::with_capacity(positions.len() * self.shape.values());
        let mut labels = Vec::with_capacity(positions.len());
        let mut augment = rng.filter(|_| !options.augmentation.is_identity());
        for &i in positions {
            let image: Vec<f32> = self.image(i).iter().map(|&p| p as f32 / 255.0).collect();
            let image = match augment.as_deref_mut() {
                Some(rng) => options.augmentation.apply(&image, self.shape, rng),
                None => image,
            };
            for (channel, values) in image.chunks_exact(plane).enumerate() {
                let (mean, std) = if options.normalize {
                    (
                        self.normalization.mean[channel],
                        self.normalization.std[channel],
                    )
                } else {
                    (0.0, 1.0)
                };
                inputs.extend(values.iter().map(|&p| (p - mean) / std));
            }
            labels.push(self.labels[i] as i64);
        }
        ImageBatch {
            shape: [
                positions.len(),
                self.shape.channels,
                self.shape.height,
                self.shape.width,
            ],
            inputs,
            labels,
        }
    }
}

/// A data set's training file cut in two: training images and a validation set drawn by seed.
#[derive(Debug, Clone)]
pub struct ImagePair {
    /// Images the model trains on.
    pub train: ImageSplit,
    /// Held-out images for evaluation during training and model selection.
    pub validation: ImageSplit,
}

/// Splits `all` into train and validation: a seeded shuffle picks the validation images; both
/// parts keep the original file order.
pub fn split_train_validation(
    all: &ImageSplit,
    validation_size: usize,
    seed: u64,
) -> Result<ImagePair, DataError> {
    if validation_size >= all.len() {
        return Err(DataError::Config(format!(
            "validation size {validation_size} leaves no training images out of {}",
            all.len()
        )));
    }
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut validation = order[..validation_size].to_vec();
    let mut train = order[validation_size..].to_vec();
    validation.sort_unstable();
    train.sort_unstable();
    Ok(ImagePair {
        train: all.subset(&train),
        validation: all.subset(&validation),
    })
}

/// Checks that every label names one of `classes` classes; the error names the file and entry.
pub fn check_labels(labels: &[u8], classes: usize, file: &str) -> Result<(), DataError> {
    match labels.iter().position(|&label| label as usize >= classes) {
        Some(entry) => Err(DataError::LabelOutOfRange {
            file: file.to_string(),
            entry,
            label: labels[entry] as u32,
            classes,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_split(n: usize) -> ImageSplit {
        let shape = ImageShape::new(1, 28, 28);
        ImageSplit {
            shape,
            images: (0..n * shape.values())
                .map(|i| (i / shape.values()) as u8)
                .collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            source_indices: (0..n as u32).collect(),
            normalization: Normalization::mnist(),
        }
    }

    #[test]
    fn split_is_disjoint_complete_and_seeded() {
        let all = toy_split(100);
        let a = split_train_validation(&all, 20, 7).unwrap();
        let b = split_train_validation(&all, 20, 7).unwrap();
        let c = split_train_validation(&all, 20, 8).unwrap();
        assert_eq!(a.validation.source_indices, b.validation.source_indices);
        assert_ne!(a.validation.source_indices, c.validation.source_indices);
        let mut seen: Vec<u32> = a.train.source_indices.clone();
        seen.extend(&a.validation.source_indices);
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<u32>>());
        // Images travel with their indices.
        let position = 3;
        assert_eq!(
            a.train.image(position)[0] as u32,
            a.train.source_indices[position]
        );
    }

    #[test]
    fn batch_normalises_pixels_and_labels() {
        let mut split = toy_split(2);
        split.images[28 * 28] = 255;
        let options = InputOptions {
            normalize: false,
            augmentation: Augmentation::default(),
        };
        let batch = split.batch(&[1, 0], &options, None);
        assert_eq!(batch.shape, [2, 1, 28, 28]);
        assert_eq!(batch.inputs[0], 1.0);
        assert!((batch.inputs[1] - 1.0 / 255.0).abs() < 1e-7);
        assert_eq!(batch.labels, vec![1, 0]);
        let normalized = InputOptions::default();
        let batch = split.batch(&[0], &normalized, None);
        let expected = (0.0 - 0.1307f32) / 0.3081;
        assert!((batch.inputs[0] - expected).abs() < 1e-6);
    }

    #[test]
    fn colour_batches_normalise_each_channel_by_its_own_statistics() {
        // Two 1x2 RGB images: channel c of image i holds pixels (10c + i, 255).
        let shape = ImageShape::new(3, 1, 2);
        let images = vec![0, 255, 10, 255, 20, 255, 1, 255, 11, 255, 21, 255];
        let mut split = ImageSplit {
            shape,
            images,
            labels: vec![0, 1],
            source_indices: vec![0, 1],
            normalization: Normalization::mnist(),
        };
        let measured = Normalization::measure(&split);
        // Channel 0 holds 0, 255, 1, 255: mean 511 / 4 / 255.
        let mean0 = 511.0 / 4.0 / 255.0;
        let second0 = (255.0f64.powi(2) * 2.0 + 1.0) / 4.0 / 255.0f64.powi(2);
        assert!((measured.mean[0] as f64 - mean0).abs() < 1e-6);
        assert!((measured.std[0] as f64 - (second0 - mean0 * mean0).sqrt()).abs() < 1e-6);
        assert!((measured.mean[2] as f64 - 551.0 / 4.0 / 255.0).abs() < 1e-6);
        split.normalization = measured.clone();
        let batch = split.batch(&[1], &InputOptions::default(), None);
        assert_eq!(batch.shape, [1, 3, 1, 2]);
        let expected = (11.0 / 255.0 - measured.mean[1]) / measured.std[1];
        assert!((batch.inputs[2] - expected).abs() < 1e-6);
        // A constant channel is divided by 1, not 0.
        let flat = ImageSplit {
            images: vec![7; 6],
            labels: vec![0],
            source_indices: vec![0],
            ..split
        };
        assert_eq!(Normalization::measure(&flat).std, vec![1.0; 3]);
    }

    #[test]
    fn too_large_validation_and_stray_labels_are_errors() {
        assert!(matches!(
            split_train_validation(&toy_split(10), 10, 0),
            Err(DataError::Config(_))
        ));
        assert!(matches!(
            check_labels(&[0, 2, 3, 1], 3, "labels"),
            Err(DataError::LabelOutOfRange {
                entry: 2,
                label: 3,
                classes: 3,
                ..
            })
        ));
        assert!(check_labels(&[0, 2, 1], 3, "labels").is_ok());
    }
}
