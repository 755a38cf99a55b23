//! MNIST: the train file split into train and validation by seed, and the test file kept apart.
//!
//! The test split has its own loader ([`load_test`]) that only final reports call; nothing in
//! training or model selection can reach it.

use super::augment::Augmentation;
use super::idx::read_idx_gz;
use super::locate::{find_or_download, MNIST_FILES};
use super::DataError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Side of an MNIST image in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per MNIST image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes (digits).
pub const CLASSES: usize = 10;
/// Mean and standard deviation of MNIST training pixels in [0, 1], for normalisation.
pub const PIXEL_MEAN: f32 = 0.1307;
/// See [`PIXEL_MEAN`].
pub const PIXEL_STD: f32 = 0.3081;

/// A set of labelled images, each remembering its index in the original file.
#[derive(Debug, Clone, Default)]
pub struct ImageSplit {
    /// Pixels, `IMAGE_PIXELS` bytes per image, row-major.
    pub images: Vec<u8>,
    /// Digit of each image.
    pub labels: Vec<u8>,
    /// Index of each image in the file it came from (for audit trails such as the preservation
    /// set, which must name training indices only).
    pub source_indices: Vec<u32>,
}

/// How pixels become model inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputOptions {
    /// Subtract the MNIST mean and divide by its standard deviation (after scaling to [0, 1]).
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

impl ImageSplit {
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
        &self.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
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
        let mut subset = ImageSplit::default();
        for &i in positions {
            subset.images.extend_from_slice(self.image(i));
            subset.labels.push(self.labels[i]);
            subset.source_indices.push(self.source_indices[i]);
        }
        subset
    }

    /// Builds the input tensor `[n, 1, 28, 28]` (f32) and label tensor `[n]` (i64) for the
    /// images at `positions`. With `rng`, each image gets the configured random distortion.
    pub fn batch(
        &self,
        positions: &[usize],
        options: &InputOptions,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        let mut pixels = Vec::with_capacity(positions.len() * IMAGE_PIXELS);
        let mut labels = Vec::with_capacity(positions.len());
        let mut augment = rng.filter(|_| !options.augmentation.is_identity());
        let (mean, std) = if options.normalize {
            (PIXEL_MEAN, PIXEL_STD)
        } else {
            (0.0, 1.0)
        };
        for &i in positions {
            let image: Vec<f32> = self.image(i).iter().map(|&p| p as f32 / 255.0).collect();
            let image = match augment.as_deref_mut() {
                Some(rng) => options.augmentation.apply(&image, IMAGE_SIDE, rng),
                None => image,
            };
            pixels.extend(image.iter().map(|&p| (p - mean) / std));
            labels.push(self.labels[i] as i64);
        }
        let n = positions.len() as i64;
        let inputs =
            Tensor::f_from_slice(&pixels)?.f_view([n, 1, IMAGE_SIDE as i64, IMAGE_SIDE as i64])?;
        let labels = Tensor::f_from_slice(&labels)?.f_to_kind(Kind::Int64)?;
        Ok((inputs, labels))
    }
}

/// Reads an image file and its label file, checking that they describe the same images.
fn read_pair(images_path: &Path, labels_path: &Path) -> Result<ImageSplit, DataError> {
    let images = read_idx_gz(images_path, 3)?;
    let labels = read_idx_gz(labels_path, 1)?;
    let file = images_path.display().to_string();
    if images.dims[1..] != [IMAGE_SIDE, IMAGE_SIDE] {
        return Err(DataError::Malformed {
            file,
            reason: format!("images are {:?}, expected 28x28", &images.dims[1..]),
        });
    }
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::Malformed {
            file,
            reason: format!(
                "{} images but {} labels in {}",
                images.dims[0],
                labels.dims[0],
                labels_path.display()
            ),
        });
    }
    if let Some(bad) = labels.data.iter().find(|&&label| label as usize >= CLASSES) {
        return Err(DataError::Malformed {
            file: labels_path.display().to_string(),
            reason: format!("label {bad} is not a digit"),
        });
    }
    Ok(ImageSplit {
        images: images.data,
        source_indices: (0..labels.dims[0] as u32).collect(),
        labels: labels.data,
    })
}

/// MNIST's train file cut in two: training images and a validation set drawn by seed.
#[derive(Debug, Clone)]
pub struct ImagePair {
    /// Images the model trains on.
    pub train: ImageSplit,
    /// Held-out images for evaluation during training and model selection.
    pub validation: ImageSplit,
}

/// Loads MNIST's train file and splits off `validation_size` images, chosen by `seed`.
pub fn load_train_validation(
    data_dirs: &[PathBuf],
    validation_size: usize,
    seed: u64,
) -> Result<ImagePair, DataError> {
    let images = find_or_download(&MNIST_FILES[0], data_dirs)?;
    let labels = find_or_download(&MNIST_FILES[1], data_dirs)?;
    let all = read_pair(&images, &labels)?;
    split_train_validation(&all, validation_size, seed)
}

/// Loads MNIST's test file. Only final reports call this.
pub fn load_test(data_dirs: &[PathBuf]) -> Result<ImageSplit, DataError> {
    let images = find_or_download(&MNIST_FILES[2], data_dirs)?;
    let labels = find_or_download(&MNIST_FILES[3], data_dirs)?;
    read_pair(&images, &labels)
}

/// Splits `all` into train and validation: a seeded shuffle picks the validation images; both
/// parts keep the original file order.
pub fn split_train_validation(
    all: &ImageSplit,
    validation_size: usize,
    seed: u64,
) -> Result<ImagePair, DataError> {
    if validation_size >= all.len() {
        return Err(DataError::Malformed {
            file: "train split".into(),
            reason: format!(
                "validation size {validation_size} leaves no training images out of {}",
                all.len()
            ),
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_split(n: usize) -> ImageSplit {
        ImageSplit {
            images: (0..n * IMAGE_PIXELS)
                .map(|i| (i / IMAGE_PIXELS) as u8)
                .collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            source_indices: (0..n as u32).collect(),
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
        split.images[IMAGE_PIXELS] = 255;
        let options = InputOptions {
            normalize: false,
            augmentation: Augmentation::default(),
        };
        let (inputs, labels) = split.batch(&[1, 0], &options, None).unwrap();
        assert_eq!(inputs.size(), vec![2, 1, 28, 28]);
        assert_eq!(inputs.double_value(&[0, 0, 0, 0]), 1.0);
        assert!((inputs.double_value(&[0, 0, 0, 1]) - 1.0 / 255.0).abs() < 1e-7);
        assert_eq!(Vec::<i64>::try_from(&labels).unwrap(), vec![1, 0]);
        let normalized = InputOptions::default();
        let (inputs, _) = split.batch(&[0], &normalized, None).unwrap();
        let expected = (0.0 - PIXEL_MEAN) / PIXEL_STD;
        assert!((inputs.double_value(&[0, 0, 0, 0]) - expected as f64).abs() < 1e-6);
    }

    #[test]
    fn too_large_validation_is_an_error() {
        assert!(matches!(
            split_train_validation(&toy_split(10), 10, 0),
            Err(DataError::Malformed { .. })
        ));
    }
}
