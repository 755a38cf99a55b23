//! Data stage: finding the data files, checking them, reading them and serving batches.
//!
//! - [`locate`] finds the data folder (`--data-dir`, `SGSC_DATA_DIR`, `./data`) and downloads
//!   missing files from the canonical mirrors with a SHA-256 check.
//! - [`idx`] reads MNIST's IDX files, validating every field.
//! - [`mnist`] splits MNIST into train/validation (by seed) and keeps test apart.
//! - [`text`] cuts a character corpus (names, Tiny Shakespeare) into train/validation/test blocks
//!   and serves windows of characters with their next characters as targets.
//! - [`sampler`] picks the examples of each step, reproducibly for a seed.
//! - [`augment`] applies the small random shifts and rotations used while training.

pub mod augment;
pub mod idx;
pub mod locate;
pub mod mnist;
pub mod sampler;
pub mod text;

use mnist::{ImageSplit, InputOptions};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::Tensor;
use text::{TextSplit, Vocabulary};

/// Characters per block when a text corpus is cut into train, validation and test.
pub const DEFAULT_BLOCK_SIZE: usize = 1024;

/// The `[data]` section of an experiment config: which data set and how it is split and fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `mnist`, or a character corpus: `names` or `tinyshakespeare`.
    pub dataset: String,
    /// Held out of training for validation: images of MNIST's train file, or characters of a
    /// corpus (rounded up to whole blocks).
    pub validation_size: usize,
    /// Characters of a corpus held out for the final test (text only; MNIST has its own test
    /// file).
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
        text::corpus_file(&self.dataset).is_some()
    }

    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.dataset != "mnist" && !self.is_text() {
            Some(format!(
                "data.dataset {:?} is not mnist, names or tinyshakespeare",
                self.dataset
            ))
        } else if self.is_text() && self.test_size.is_none() {
            Some("a text data set needs data.test_size (characters held out for the test)".into())
        } else if !self.is_text() && (self.test_size.is_some() || self.block_size.is_some()) {
            Some(
                "data.test_size and data.block_size are for text; MNIST has its own test file"
                    .into(),
            )
        } else {
            None
        }
    }

    fn block_split(&self) -> text::BlockSplit {
        text::BlockSplit {
            block_size: self.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
            validation_size: self.validation_size,
            test_size: self.test_size.unwrap_or(0),
            seed: self.split_seed,
        }
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

    /// Inputs and targets of the examples at `positions`: images `[n, c, h, w]` with labels
    /// `[n]` (randomly distorted when `rng` is given), or token ids `[n, context]` with
    /// next-character targets `[n * context]`.
    pub fn batch(
        &self,
        positions: &[usize],
        options: &InputOptions,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        match self {
            Split::Images(images) => images.batch(positions, options, rng),
            Split::Text(text) => text.batch(positions),
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

/// Training data for a run: the training split and the validation split held out of it.
#[derive(Debug, Clone)]
pub struct TrainValidation {
    /// Examples the model trains on.
    pub train: Split,
    /// Held-out examples for evaluation during training and model selection.
    pub validation: Split,
    /// The symbols of a text model (built from the training split); `None` for images.
    pub vocabulary: Option<Vocabulary>,
}

/// Characters per window of a language model: its input shape is `[context]`.
fn context(input: &[i64]) -> Result<usize, DataError> {
    match input {
        &[context] if context > 0 => Ok(context as usize),
        other => Err(DataError::Malformed {
            file: "config".into(),
            reason: format!(
                "a text data set needs a model whose input is [context], not {other:?}"
            ),
        }),
    }
}

/// Loads and splits the corpus that `config` names, in windows of the model's context.
fn load_text(
    config: &DataConfig,
    input: &[i64],
    data_dirs: &[PathBuf],
) -> Result<text::TextSplits, DataError> {
    text::load(
        &config.dataset,
        data_dirs,
        context(input)?,
        config.block_split(),
    )
}

/// Loads the training and validation splits that `config` describes, for a model whose input
/// has shape `input`.
pub fn load_train_validation(
    config: &DataConfig,
    input: &[i64],
    data_dirs: &[PathBuf],
) -> Result<TrainValidation, DataError> {
    if config.is_text() {
        let splits = load_text(config, input, data_dirs)?;
        Ok(TrainValidation {
            train: Split::Text(splits.train),
            validation: Split::Text(splits.validation),
            vocabulary: Some(splits.vocabulary),
        })
    } else {
        let pair =
            mnist::load_train_validation(data_dirs, config.validation_size, config.split_seed)?;
        Ok(TrainValidation {
            train: Split::Images(pair.train),
            validation: Split::Images(pair.validation),
            vocabulary: None,
        })
    }
}

/// Loads the test split that `config` describes. Only final reports call this.
pub fn load_test(
    config: &DataConfig,
    input: &[i64],
    data_dirs: &[PathBuf],
) -> Result<Split, DataError> {
    if config.is_text() {
        Ok(Split::Text(load_text(config, input, data_dirs)?.test))
    } else {
        Ok(Split::Images(mnist::load_test(data_dirs)?))
    }
}

/// What can go wrong while finding, downloading or reading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error (shown in the message, so not chained again).
        cause: std::io::Error,
    },
    /// The file does not start with the IDX magic number for unsigned bytes.
    #[error("{file}: not an unsigned-byte IDX file (magic number {found:#010x})")]
    BadMagic {
        /// The file.
        file: String,
        /// The first four bytes, big-endian.
        found: u32,
    },
    /// The file ends before the data its header declares.
    #[error("{file}: truncated ({found} bytes, header declares {expected})")]
    Truncated {
        /// The file.
        file: String,
        /// Bytes the header declares.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The file is structurally wrong in another way (rank, trailing bytes, labels, gzip).
    #[error("{file}: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A file's SHA-256 differs from the published one: it is corrupted or a different file.
    #[error("{path}: SHA-256 {found} does not match the published {expected}; the file is corrupted or not the canonical release (delete it to download it again)")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The published digest.
        expected: String,
        /// The digest of the file on disk.
        found: String,
    },
    /// Text contains a character outside the model's vocabulary.
    #[error("the character {symbol:?} at position {position} is not in the model's vocabulary")]
    UnknownSymbol {
        /// The character.
        symbol: char,
        /// Its position in the text, in characters.
        position: usize,
    },
    /// A token id names no symbol of the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocabulary} symbols")]
    UnknownId {
        /// The id.
        id: i64,
        /// Symbols in the vocabulary.
        vocabulary: usize,
    },
    /// The files are not on disk and could not be downloaded.
    #[error("{file} is not in any data folder ({searched}) and downloading it failed: {reason}. Put the data set in one of those folders or pass --data-dir.")]
    Unavailable {
        /// The missing file.
        file: String,
        /// The folders searched, in order.
        searched: String,
        /// Why each mirror failed.
        reason: String,
    },
}
