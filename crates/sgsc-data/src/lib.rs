//! sgsc-data: the data sets sgsc trains on, from bytes on disk to batches of plain numbers. No
//! libtorch: the fuzzer builds the parsers on their own, and `sgsc` turns batches into tensors.
//!
//! - [`config`] is the `[data]` section: the kind of data set, its folder, its split.
//! - [`locate`] finds the data folder (`--data-dir`, `SGSC_DATA_DIR`, `./data`), resolves a
//!   user's folders and files in it, and downloads the known data sets with a SHA-256 check.
//! - [`idx`] reads IDX files (MNIST's format), [`cifar`] CIFAR's binary batches,
//!   [`image_folder`] folders of PNG and JPEG files; each validates every field.
//! - [`images`] holds labelled images of any shape, the seeded train/validation split and the
//!   per-channel normalisation measured on the training split.
//! - [`text`] cuts a character corpus into train/validation/test blocks and serves windows.
//! - [`sampler`] picks the examples of each step, reproducibly for a seed.
//! - [`augment`] applies the random shifts, rotations and flips used while training.
//!
//! The test split has its own loader ([`load_test`]) that only final reports call; nothing in
//! training or model selection can reach it.

pub mod augment;
pub mod cifar;
pub mod config;
mod error;
pub mod idx;
pub mod image_folder;
pub mod images;
pub mod locate;
pub mod sampler;
pub mod text;

pub use config::{DataConfig, DatasetKind, DEFAULT_BLOCK_SIZE};
pub use error::DataError;
pub use images::{ImageBatch, ImageShape, ImageSplit, InputOptions, Normalization};
pub use text::{TextSplit, Vocabulary};

use locate::{check_pin, find_or_download, resolve, MNIST_FILES, TEXT_FILES};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a trained model needs besides its weights to read inputs as training did; checkpoints
/// and model files record it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataDescription {
    /// The symbols of a text model, in id order (the ids it reads and writes mean nothing
    /// without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocabulary: Option<Vocabulary>,
    /// The class names of an image classifier, in output order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// The pixel normalisation of an image model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
}

impl DataDescription {
    /// This description with what the config alone fixes filled in where it is missing (for
    /// checkpoints written before they recorded classes and normalisation): MNIST's published
    /// normalisation, and the classes of MNIST, IDX and CIFAR data.
    pub fn or_from_config(mut self, config: &DataConfig) -> Self {
        if self.normalization.is_none() && config.dataset == DatasetKind::Mnist {
            self.normalization = Some(Normalization::mnist());
        }
        if self.classes.is_none() {
            self.classes = config.known_classes();
        }
        self
    }
}

/// The examples of one split: labelled images, or windows of text whose targets are the next
/// characters.
#[derive(Debug, Clone)]
pub enum Split {
    /// Labelled images.
    Images(ImageSplit),
    /// Windows of a character corpus.
    Text(TextSplit),
}

impl Split {
    /// Number of examples (images or windows).
    pub fn len(&self) -> usize {
        match self {
            Split::Images(images) => images.len(),
            Split::Text(text) => text.len(),
        }
    }

    /// True when the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `positions`, in that order.
    pub fn subset(&self, positions: &[usize]) -> Split {
        match self {
            Split::Images(images) => Split::Images(images.subset(positions)),
            Split::Text(text) => Split::Text(text.subset(positions)),
        }
    }

    /// Where each example came from, by position: an image's index in its file, a window's
    /// offset in its corpus. Preservation sets name their members by it.
    pub fn source_indices(&self) -> &[u32] {
        match self {
            Split::Images(images) => &images.source_indices,
            Split::Text(text) => &text.starts,
        }
    }

    /// Position of each example, by its source index.
    pub fn positions_by_index(&self) -> std::collections::HashMap<u32, usize> {
        self.source_indices()
            .iter()
            .enumerate()
            .map(|(position, &index)| (index, position))
            .collect()
    }

    /// The label of the example at `position`: an image's class; text has none.
    pub fn label(&self, position: usize) -> Option<u8> {
        match self {
            Split::Images(images) => images.labels.get(position).copied(),
            Split::Text(_) => None,
        }
    }

    /// The images, for stages that only make sense on images (Grad-CAM, montages).
    pub fn images(&self) -> Option<&ImageSplit> {
        match self {
            Split::Images(images) => Some(images),
            Split::Text(_) => None,
        }
    }
}

/// Training data for a run: the training split and the validation split held out of it, with
/// what a model file must record to read inputs the way training did.
#[derive(Debug, Clone)]
pub struct TrainValidation {
    /// Examples the model trains on.
    pub train: Split,
    /// Held-out examples for evaluation during training and model selection.
    pub validation: Split,
    /// The symbols of a text model (built from the training split); `None` for images.
    pub vocabulary: Option<Vocabulary>,
    /// The class names of an image data set, in label order; `None` for text.
    pub classes: Option<Vec<String>>,
}

impl TrainValidation {
    /// The pixel normalisation of an image data set (measured on the training split, or
    /// MNIST's published one); `None` for text.
    pub fn normalization(&self) -> Option<&Normalization> {
        self.train.images().map(|images| &images.normalization)
    }

    /// What a model trained on this data must record.
    pub fn description(&self) -> DataDescription {
        DataDescription {
            vocabulary: self.vocabulary.clone(),
            classes: self.classes.clone(),
            normalization: self.normalization().cloned(),
        }
    }

    /// Checks that a classifier with `outputs` outputs fits the data set's classes.
    pub fn check_outputs(&self, config: &DataConfig, outputs: usize) -> Result<(), DataError> {
        match &self.classes {
            Some(classes) if classes.len() != outputs => Err(DataError::ClassCount {
                dataset: config.describe(),
                classes: classes.len(),
                outputs,
            }),
            _ => Ok(()),
        }
    }
}

/// Which part of a data set's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The training files (train and validation are cut from them).
    Train,
    /// The test files.
    Test,
}

/// The IDX file of `stem` in `dir`: the plain file or its `.gz`, whichever exists.
fn idx_file(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    [stem.to_string(), format!("{stem}.gz")]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| DataError::Missing {
            what: format!("{stem} (or {stem}.gz)"),
            searched: dir.display().to_string(),
        })
}

/// Reads an IDX image file and its label file into a split of `classes` classes, checking
/// that they describe the same images.
fn read_idx_pair(
    images_path: &Path,
    labels_path: &Path,
    classes: usize,
) -> Result<ImageSplit, DataError> {
    let images = idx::read_idx(images_path, 3)?;
    let labels = idx::read_idx(labels_path, 1)?;
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::LabelCount {
            images_file: images_path.display().to_string(),
            images: images.dims[0],
            labels_file: labels_path.display().to_string(),
            labels: labels.dims[0],
        });
    }
    images::check_labels(&labels.data, classes, &labels_path.display().to_string())?;
    Ok(ImageSplit {
        shape: ImageShape::new(1, images.dims[1], images.dims[2]),
        images: images.data,
        source_indices: (0..labels.dims[0] as u32).collect(),
        labels: labels.data,
        normalization: Normalization::identity(1),
    })
}

/// The folder `config.dir` names (or a CIFAR kind's default), resolved in the data folders.
fn data_folder(config: &DataConfig, data_dirs: &[PathBuf]) -> Result<PathBuf, DataError> {
    let default = config.dataset.cifar().map(|cifar| cifar.default_dir());
    let dir = match (&config.dir, default) {
        (Some(dir), _) => dir.clone(),
        (None, Some(default)) => PathBuf::from(default),
        (None, None) => {
            return Err(DataError::Config(format!(
                "data.dataset = {:?} needs data.dir",
                config.dataset.name()
            )))
        }
    };
    resolve(&dir, data_dirs)
}

/// The images of one part of an image data set, as its files hold them (not yet normalised),
/// with its class names.
fn read_images(
    config: &DataConfig,
    shape: ImageShape,
    data_dirs: &[PathBuf],
    part: Part,
) -> Result<(ImageSplit, Vec<String>), DataError> {
    let names = if part == Part::Train {
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    } else {
        ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    };
    let split = match config.dataset {
        DatasetKind::Mnist => {
            let files = if part == Part::Train {
                &MNIST_FILES[..2]
            } else {
                &MNIST_FILES[2..]
            };
            let images = find_or_download(&files[0], data_dirs)?;
            let labels = find_or_download(&files[1], data_dirs)?;
            (read_idx_pair(&images, &labels, 10)?, config.known_classes())
        }
        DatasetKind::Idx => {
            let dir = data_folder(config, data_dirs)?;
            let classes = config.known_classes().unwrap_or_default();
            let images = idx_file(&dir, names[0])?;
            let labels = idx_file(&dir, names[1])?;
            check_pin(&images, &config.sha256)?;
            check_pin(&labels, &config.sha256)?;
            (
                read_idx_pair(&images, &labels, classes.len())?,
                Some(classes),
            )
        }
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let cifar = config
                .dataset
                .cifar()
                .ok_or_else(|| DataError::Config("not a CIFAR kind".into()))?;
            let dir = data_folder(config, data_dirs)?;
            let files = if part == Part::Train {
                cifar.train_files()
            } else {
                vec![cifar.test_file().to_string()]
            };
            let mut split = ImageSplit::empty(cifar::SHAPE, Normalization::identity(3));
            for name in files {
                let path = dir.join(&name);
                if !path.is_file() {
                    return Err(DataError::Missing {
                        what: name,
                        searched: dir.display().to_string(),
                    });
                }
                check_pin(&path, &config.sha256)?;
                let batch =
                    cifar::parse_batch(&locate::read(&path)?, cifar, &path.display().to_string())?;
                let start = split.labels.len() as u32;
                split
                    .source_indices
                    .extend(start..start + batch.labels.len() as u32);
                split.images.extend(batch.images);
                split.labels.extend(batch.labels);
            }
            (split, config.known_classes())
        }
        DatasetKind::ImageFolder => {
            let dir = data_folder(config, data_dirs)?;
            let classes = image_folder::classes(&dir)?;
            let folder = if part == Part::Train { "train" } else { "test" };
            let split = image_folder::load_split(&dir, folder, &classes, shape)?;
            (split, Some(classes))
        }
        DatasetKind::Names | DatasetKind::Tinyshakespeare | DatasetKind::Text => {
            return Err(DataError::Config(format!(
                "{} is a text data set, not images",
                config.dataset.name()
            )))
        }
    };
    let (split, classes) = split;
    if split.shape != shape {
        return Err(DataError::Shape {
            dataset: config.describe(),
            found: split.shape.dims(),
            expected: shape.dims(),
        });
    }
    if split.is_empty() {
        return Err(DataError::Config(format!(
            "the {} has no images in its {} files",
            config.describe(),
            if part == Part::Train {
                "training"
            } else {
                "test"
            }
        )));
    }
    Ok((split, classes.unwrap_or_default()))
}

/// The image shape of a model input `[channels, height, width]`.
fn shape_of(config: &DataConfig, input: &[usize]) -> Result<ImageShape, DataError> {
    DataConfig::image_shape(input).ok_or_else(|| {
        DataError::Config(format!(
            "the {} needs model.input = [channels, height, width], not {input:?}",
            config.describe()
        ))
    })
}

/// The training part of an image data set split into train and validation, both normalised
/// by the training images' statistics (MNIST: its published constants).
fn image_pair(
    config: &DataConfig,
    shape: ImageShape,
    data_dirs: &[PathBuf],
) -> Result<(images::ImagePair, Vec<String>), DataError> {
    let (all, classes) = read_images(config, shape, data_dirs, Part::Train)?;
    let mut pair = images::split_train_validation(&all, config.validation_size, config.split_seed)?;
    let normalization = match config.dataset {
        DatasetKind::Mnist => Normalization::mnist(),
        _ => Normalization::measure(&pair.train),
    };
    pair.train.normalization = normalization.clone();
    pair.validation.normalization = normalization;
    Ok((pair, classes))
}

/// The path of a text data set's corpus: a known corpus (found or downloaded, pinned) or the
/// `text` kind's `path`.
fn corpus_path(config: &DataConfig, data_dirs: &[PathBuf]) -> Result<PathBuf, DataError> {
    if let Some((_, file)) = TEXT_FILES
        .iter()
        .find(|(name, _)| *name == config.dataset.name())
    {
        return find_or_download(file, data_dirs);
    }
    let path = config
        .path
        .as_ref()
        .ok_or_else(|| DataError::Config("the text kind needs data.path".into()))?;
    let path = resolve(path, data_dirs)?;
    check_pin(&path, &config.sha256)?;
    Ok(path)
}

/// Loads and splits the corpus that `config` names, in windows of the model's context.
fn load_text(
    config: &DataConfig,
    input: &[usize],
    data_dirs: &[PathBuf],
) -> Result<text::TextSplits, DataError> {
    let context = match input {
        &[context] if context > 0 => context,
        other => {
            return Err(DataError::Config(format!(
                "a text data set needs a model whose input is [context], not {other:?}"
            )))
        }
    };
    let split = text::BlockSplit {
        block_size: config.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
        validation_size: config.validation_size,
        test_size: config.test_size.unwrap_or(0),
        seed: config.split_seed,
    };
    text::load(&corpus_path(config, data_dirs)?, context, split)
}

/// Loads the training and validation splits that `config` describes, for a model whose input
/// has shape `input`. Images whose shape differs from `input` are an error.
pub fn load_train_validation(
    config: &DataConfig,
    input: &[usize],
    data_dirs: &[PathBuf],
) -> Result<TrainValidation, DataError> {
    if let Some(problem) = config.problem(input, None) {
        return Err(problem);
    }
    if config.is_text() {
        let splits = load_text(config, input, data_dirs)?;
        return Ok(TrainValidation {
            train: Split::Text(splits.train),
            validation: Split::Text(splits.validation),
            vocabulary: Some(splits.vocabulary),
            classes: None,
        });
    }
    let (pair, classes) = image_pair(config, shape_of(config, input)?, data_dirs)?;
    Ok(TrainValidation {
        train: Split::Images(pair.train),
        validation: Split::Images(pair.validation),
        vocabulary: None,
        classes: Some(classes),
    })
}

/// Loads the test split that `config` describes, normalised by `normalization` (the training
/// split's, which the caller holds); `None` normalises as training did, which for data measured
/// on its training split reads the training files again. Only final reports call this.
pub fn load_test(
    config: &DataConfig,
    input: &[usize],
    data_dirs: &[PathBuf],
    normalization: Option<&Normalization>,
) -> Result<Split, DataError> {
    if let Some(problem) = config.problem(input, None) {
        return Err(problem);
    }
    if config.is_text() {
        return Ok(Split::Text(load_text(config, input, data_dirs)?.test));
    }
    let shape = shape_of(config, input)?;
    let (mut test, _) = read_images(config, shape, data_dirs, Part::Test)?;
    test.normalization = match (normalization, config.dataset) {
        (Some(normalization), _) => normalization.clone(),
        (None, DatasetKind::Mnist) => Normalization::mnist(),
        (None, _) => image_pair(config, shape, data_dirs)?.0.train.normalization,
    };
    Ok(Split::Images(test))
}
