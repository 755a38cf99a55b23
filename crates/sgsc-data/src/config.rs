//! The `[data]` section of an experiment config: which data set, where its files are, and how
//! it is split and fed.

use crate::cifar::Cifar;
use crate::images::{ImageShape, InputOptions, MAX_CLASSES};
use crate::DataError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Characters per block when a text corpus is cut into train, validation and test.
pub const DEFAULT_BLOCK_SIZE: usize = 1024;

/// Largest image side accepted (the runtime's largest dimension).
pub const MAX_SIDE: usize = 1 << 20;

/// Largest number of values in one image (channels x rows x columns).
pub const MAX_IMAGE_VALUES: usize = 1 << 24;

/// The kinds of data set sgsc reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// MNIST from `mnist/` (downloaded if missing, SHA-256 pinned, published normalisation).
    Mnist,
    /// Any IDX image and label files under MNIST's standard names in `dir` (plain or `.gz`).
    Idx,
    /// CIFAR-10's binary batches in `dir` (default `cifar-10-batches-bin`).
    Cifar10,
    /// CIFAR-100's binary `train.bin` and `test.bin` in `dir` (default `cifar-100-binary`),
    /// fine labels.
    Cifar100,
    /// `dir/train/<class>/*.png|jpg` and `dir/test/<class>/...`.
    ImageFolder,
    /// The names corpus of the seed paper (`names/names.txt`, pinned, downloaded if missing).
    Names,
    /// Tiny Shakespeare (`tinyshakespeare/input.txt`, pinned, downloaded if missing).
    Tinyshakespeare,
    /// Any UTF-8 text file at `path`, for character-level language models.
    Text,
}

impl DatasetKind {
    /// True for character corpora.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            DatasetKind::Names | DatasetKind::Tinyshakespeare | DatasetKind::Text
        )
    }

    /// The CIFAR variant, for the CIFAR kinds.
    pub fn cifar(self) -> Option<Cifar> {
        match self {
            DatasetKind::Cifar10 => Some(Cifar::Ten),
            DatasetKind::Cifar100 => Some(Cifar::Hundred),
            _ => None,
        }
    }

    /// The name a config uses.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Idx => "idx",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::ImageFolder => "image_folder",
            DatasetKind::Names => "names",
            DatasetKind::Tinyshakespeare => "tinyshakespeare",
            DatasetKind::Text => "text",
        }
    }
}

/// The `[data]` section of an experiment config: which data set and how it is split and fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The kind of data set.
    pub dataset: DatasetKind,
    /// The data set's folder (`idx`, `cifar10`, `cifar100`, `image_folder`): absolute, or
    /// relative to the data folders searched (`--data-dir`, `SGSC_DATA_DIR`, `./data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The corpus file of the `text` kind, absolute or relative to the data folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Class names of an `idx` data set, in label order (default the digits 0-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// SHA-256 pins of a user's files, by file name (lowercase hex); unpinned files are read as
    /// they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
    /// Held out of training for validation: images of the training files, or characters of a
    /// corpus (rounded up to whole blocks).
    pub validation_size: usize,
    /// Characters of a corpus held out for the final test (text only; image data sets have
    /// their own test files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_size: Option<usize>,
    /// Characters per block when a corpus is split (text only; default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    /// Seed of the split. Separate from `train.seed`, so that runs of several seeds, and the
    /// preservation set built from a reference run, share one validation split. Default 0.
    #[serde(default)]
    pub split_seed: u64,
    /// Normalisation and augmentation of training images.
    #[serde(flatten)]
    pub input: InputOptions,
}

impl DataConfig {
    /// True for a character corpus.
    pub fn is_text(&self) -> bool {
        self.dataset.is_text()
    }

    /// A short description for messages: the kind and its folder or file.
    pub fn describe(&self) -> String {
        match (&self.dir, &self.path) {
            (Some(dir), _) => format!("{} data set {}", self.dataset.name(), dir.display()),
            (None, Some(path)) => format!("{} data set {}", self.dataset.name(), path.display()),
            (None, None) => format!("{} data set", self.dataset.name()),
        }
    }

    /// The class names, where the config alone fixes them: MNIST's digits, CIFAR's published
    /// names, an IDX set's `classes` (default the digits). `None` for image folders (their
    /// sub-folders name them) and text.
    pub fn known_classes(&self) -> Option<Vec<String>> {
        let digits = || (0..10).map(|d| d.to_string()).collect();
        match self.dataset {
            DatasetKind::Mnist => Some(digits()),
            DatasetKind::Idx => Some(self.classes.clone().unwrap_or_else(digits)),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Some(
                self.dataset
                    .cifar()?
                    .classes()
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The number of colour channels the data set's images have, where it is fixed: 1 for
    /// MNIST and IDX files, 3 for CIFAR; `None` for image folders (converted as the model asks)
    /// and text.
    pub fn fixed_channels(&self) -> Option<usize> {
        match self.dataset {
            DatasetKind::Mnist | DatasetKind::Idx => Some(1),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Some(3),
            _ => None,
        }
    }

    /// What is wrong with these settings for a model reading `input` (`[channels, height,
    /// width]` or `[context]`) with `outputs` classes (`None` when the model is not a
    /// classifier of a fixed width), if anything. Checked before anything is loaded.
    pub fn problem(&self, input: &[usize], outputs: Option<usize>) -> Option<DataError> {
        let config = |message: String| Some(DataError::Config(message));
        let needs_dir = matches!(self.dataset, DatasetKind::Idx | DatasetKind::ImageFolder);
        if needs_dir && self.dir.is_none() {
            return config(format!(
                "data.dataset = {:?} needs data.dir (the folder of its files)",
                self.dataset.name()
            ));
        }
        if self.dataset == DatasetKind::Text && self.path.is_none() {
            return config("data.dataset = \"text\" needs data.path (a UTF-8 text file)".into());
        }
        if self.dir.is_some() && (self.is_text() || self.dataset == DatasetKind::Mnist) {
            return config(format!(
                "data.dir is for idx, cifar10, cifar100 and image_folder data, not {}",
                self.dataset.name()
            ));
        }
        if self.path.is_some() && self.dataset != DatasetKind::Text {
            return config("data.path is for the text kind; image data sets take data.dir".into());
        }
        if self.classes.is_some() && self.dataset != DatasetKind::Idx {
            return config(
                "data.classes is for IDX data; CIFAR has published names and image folders name their classes".into(),
            );
        }
        if let Some(problem) = self.pin_problem() {
            return Some(problem);
        }
        let augmentation = &self.input.augmentation;
        if augmentation.max_shift_pixels > 1024
            || !(0.0..=180.0).contains(&augmentation.max_rotation_degrees)
        {
            return config(
                "data.augmentation: max_shift_pixels must be at most 1024 and max_rotation_degrees between 0 and 180".into(),
            );
        }
        if self.is_text() {
            if self.test_size.is_none() {
                return config(
                    "a text data set needs data.test_size (characters held out for the test)"
                        .into(),
                );
            }
            if !matches!(input, [_]) {
                return config(format!(
                    "a text data set needs model.input = [context], not {input:?}"
                ));
            }
            return None;
        }
        if self.test_size.is_some() || self.block_size.is_some() {
            return config(
                "data.test_size and data.block_size are for text; image data sets have their own test files".into(),
            );
        }
        let [channels, height, width] = *input else {
            return config(format!(
                "an image data set needs model.input = [channels, height, width], not {input:?}"
            ));
        };
        let values = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width));
        if height == 0
            || width == 0
            || height > MAX_SIDE
            || width > MAX_SIDE
            || values.is_none_or(|v| v > MAX_IMAGE_VALUES)
        {
            return config(format!(
                "model.input {input:?}: image sides must be between 1 and {MAX_SIDE}, and an image at most {MAX_IMAGE_VALUES} values"
            ));
        }
        if let Some(fixed) = self.fixed_channels() {
            if channels != fixed {
                return Some(DataError::Channels {
                    dataset: self.describe(),
                    found: fixed,
                    expected: channels,
                });
            }
        }
        if self.dataset.cifar().is_some() && (height, width) != (32, 32) {
            return Some(DataError::Shape {
                dataset: self.describe(),
                found: vec![3, 32, 32],
                expected: input.to_vec(),
            });
        }
        if self.dataset == DatasetKind::ImageFolder && channels != 1 && channels != 3 {
            return config(format!(
                "an image folder is read as grey (1 channel) or RGB (3), not {channels} channels"
            ));
        }
        if let Some(classes) = self.known_classes() {
            if classes.is_empty() || classes.len() > MAX_CLASSES {
                return config(format!(
                    "data.classes lists {} classes; between 1 and {MAX_CLASSES} are supported",
                    classes.len()
                ));
            }
            if let Some(outputs) = outputs.filter(|&outputs| outputs != classes.len()) {
                return Some(DataError::ClassCount {
                    dataset: self.describe(),
                    classes: classes.len(),
                    outputs,
                });
            }
        }
        None
    }

    /// The file names a `sha256` pin may name for this kind (the user's own files; the known
    /// data sets are pinned already, and an image folder's thousands of files are not).
    fn pinnable(&self) -> Vec<String> {
        let with_gz = |names: &[&str]| -> Vec<String> {
            names
                .iter()
                .flat_map(|name| [name.to_string(), format!("{name}.gz")])
                .collect()
        };
        match self.dataset {
            DatasetKind::Idx => with_gz(&[
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ]),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
                let Some(cifar) = self.dataset.cifar() else {
                    return Vec::new();
                };
                let mut names = cifar.train_files();
                names.push(cifar.test_file().to_string());
                names
            }
            DatasetKind::Text => self
                .path
                .as_ref()
                .and_then(|path| path.file_name())
                .map(|name| vec![name.to_string_lossy().into_owned()])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// A `sha256` pin that names no file this data set reads (a typo would switch the check
    /// off), or that is not a SHA-256 in hex.
    fn pin_problem(&self) -> Option<DataError> {
        let pinnable = self.pinnable();
        self.sha256.iter().find_map(|(name, digest)| {
            if !pinnable.contains(name) {
                Some(DataError::Config(format!(
                    "data.sha256 pins {name:?}, which the {} does not read (it reads {})",
                    self.describe(),
                    if pinnable.is_empty() {
                        "no file that can be pinned".to_string()
                    } else {
                        pinnable.join(", ")
                    }
                )))
            } else if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                Some(DataError::Config(format!(
                    "data.sha256 for {name:?} is not 64 hexadecimal digits"
                )))
            } else {
                None
            }
        })
    }

    /// The shape images are read at: the model's input.
    pub fn image_shape(input: &[usize]) -> Option<ImageShape> {
        match *input {
            [channels, height, width] => Some(ImageShape::new(channels, height, width)),
            _ => None,
        }
    }
}
