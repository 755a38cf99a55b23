//! Data stage: the data sets of [`sgsc_data`] (finding, checking and parsing files, splits,
//! augmentation, sampling; no libtorch there), and here the one step that needs libtorch:
//! turning a batch into tensors ([`Tensors`]).

pub use sgsc_data::*;

use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// Batches as tensors: inputs, and labels or next-character targets.
pub trait Tensors {
    /// Inputs and targets of the examples at `positions`: images `[n, c, h, w]` (f32) with
    /// labels `[n]` (randomly distorted when `rng` is given), or token ids `[n, context]` with
    /// next-character targets `[n * context]` (both i64; text ignores `options` and `rng`).
    fn tensors(
        &self,
        positions: &[usize],
        options: &InputOptions,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor), tch::TchError>;
}

impl Tensors for ImageSplit {
    fn tensors(
        &self,
        positions: &[usize],
        options: &InputOptions,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        let batch = self.batch(positions, options, rng);
        let shape = batch.shape.map(|d| d as i64);
        let inputs = Tensor::f_from_slice(&batch.inputs)?.f_view(shape)?;
        let labels = Tensor::f_from_slice(&batch.labels)?.f_to_kind(Kind::Int64)?;
        Ok((inputs, labels))
    }
}

impl Tensors for TextSplit {
    fn tensors(
        &self,
        positions: &[usize],
        _options: &InputOptions,
        _rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        let (inputs, targets) = self.batch(positions);
        let inputs =
            Tensor::f_from_slice(&inputs)?.f_view([positions.len() as i64, self.context as i64])?;
        Ok((inputs, Tensor::f_from_slice(&targets)?))
    }
}

impl Tensors for Split {
    fn tensors(
        &self,
        positions: &[usize],
        options: &InputOptions,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        match self {
            Split::Images(images) => images.tensors(positions, options, rng),
            Split::Text(text) => text.tensors(positions, options, rng),
        }
    }
}

/// The input shape of a model config (`[channels, height, width]` or `[context]`) as sizes;
/// a negative dimension becomes 0, which no loader accepts.
pub fn input_shape(input: &[i64]) -> Vec<usize> {
    input.iter().map(|&d| d.max(0) as usize).collect()
}

/// A model file's pixel normalisation as the data side's, one mean and deviation for each of
/// `channels` (a file holds one value for every channel, or one per channel).
pub fn from_file(
    normalization: &sgsc_runtime::model::Normalization,
    channels: usize,
) -> Normalization {
    let per_channel = |values: &[f32]| match values {
        [value] => vec![*value; channels],
        values => values.to_vec(),
    };
    Normalization {
        mean: per_channel(&normalization.mean),
        std: per_channel(&normalization.std),
    }
}

/// The data side's pixel normalisation as a model file records it.
pub fn to_file(normalization: &Normalization) -> sgsc_runtime::model::Normalization {
    sgsc_runtime::model::Normalization {
        mean: normalization.mean.clone(),
        std: normalization.std.clone(),
    }
}

/// [`sgsc_data::load_train_validation`] for a model config's input shape.
pub fn load_train_validation(
    config: &DataConfig,
    input: &[i64],
    data_dirs: &[std::path::PathBuf],
) -> Result<TrainValidation, DataError> {
    sgsc_data::load_train_validation(config, &input_shape(input), data_dirs)
}

/// [`sgsc_data::load_test`] for a model config's input shape. Only final reports call this.
pub fn load_test(
    config: &DataConfig,
    input: &[i64],
    data_dirs: &[std::path::PathBuf],
    normalization: Option<&Normalization>,
) -> Result<Split, DataError> {
    sgsc_data::load_test(config, &input_shape(input), data_dirs, normalization)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tensors_hold_the_batch_values_in_shape() {
        let shape = ImageShape::new(3, 1, 2);
        let split = ImageSplit {
            shape,
            images: vec![0, 255, 51, 102, 0, 0, 255, 255, 255, 255, 255, 255],
            labels: vec![4, 7],
            source_indices: vec![0, 1],
            normalization: Normalization {
                mean: vec![0.0, 0.5, 0.0],
                std: vec![1.0, 0.5, 2.0],
            },
        };
        let (inputs, labels) = split
            .tensors(&[0, 1], &InputOptions::default(), None)
            .unwrap();
        assert_eq!(inputs.size(), vec![2, 3, 1, 2]);
        assert_eq!(inputs.double_value(&[0, 0, 0, 1]), 1.0);
        // Channel 1 of image 0: (51 / 255 - 0.5) / 0.5 = -0.6.
        assert!((inputs.double_value(&[0, 1, 0, 0]) + 0.6).abs() < 1e-6);
        assert_eq!(inputs.double_value(&[1, 2, 0, 0]), 0.5);
        assert_eq!(Vec::<i64>::try_from(&labels).unwrap(), vec![4, 7]);
    }
}
