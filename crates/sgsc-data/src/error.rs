//! What can go wrong while finding, downloading or reading data: one variant per kind, each
//! naming the file (and the entry or offset where that applies).

use std::path::PathBuf;

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
    /// A header claims more data than any data set this tool reads; refused before anything is
    /// allocated.
    #[error("{file}: its header claims {claimed} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The file.
        file: String,
        /// Bytes the header claims (saturated at `u64::MAX`).
        claimed: u64,
        /// The largest size accepted.
        limit: u64,
    },
    /// The file is structurally wrong in another way (rank, trailing bytes, gzip, record size).
    #[error("{file}: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// An image file and its label file describe different numbers of examples.
    #[error("{images_file} holds {images} images but {labels_file} holds {labels} labels")]
    LabelCount {
        /// The image file.
        images_file: String,
        /// Images in it.
        images: usize,
        /// The label file.
        labels_file: String,
        /// Labels in it.
        labels: usize,
    },
    /// A label names no class of the data set.
    #[error("{file}: entry {entry} has label {label}, outside the {classes} classes")]
    LabelOutOfRange {
        /// The file.
        file: String,
        /// The example's index in the file.
        entry: usize,
        /// The label found.
        label: u32,
        /// Classes of the data set.
        classes: usize,
    },
    /// A class folder of an image folder holds no image.
    #[error("{folder}: the class folder holds no PNG or JPEG image")]
    EmptyClass {
        /// The folder.
        folder: PathBuf,
    },
    /// An image file could not be decoded.
    #[error("{file}: the image does not decode ({reason})")]
    Decode {
        /// The file.
        file: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The data's images do not have the shape the model reads.
    #[error(
        "{dataset}: images are {found:?} (channels, height, width) but model.input is {expected:?}"
    )]
    Shape {
        /// The data set (its kind and folder).
        dataset: String,
        /// The images' shape.
        found: Vec<usize>,
        /// The model's input shape.
        expected: Vec<usize>,
    },
    /// The data's images have another number of colour channels than the model reads (a
    /// 3-channel model on grey data, for example).
    #[error("the {dataset} holds images of {found} channel(s) but model.input has {expected}")]
    Channels {
        /// The data set.
        dataset: String,
        /// Channels of its images.
        found: usize,
        /// Channels of the model's input.
        expected: usize,
    },
    /// The data set has another number of classes than the classifier has outputs.
    #[error("{dataset} has {classes} classes but the classifier has {outputs} outputs")]
    ClassCount {
        /// The data set.
        dataset: String,
        /// Its classes.
        classes: usize,
        /// The model's outputs.
        outputs: usize,
    },
    /// A file's SHA-256 differs from the published (or pinned) one: it is corrupted or a
    /// different file.
    #[error("{path}: SHA-256 {found} does not match the expected {expected}; the file is corrupted or not the release it should be (delete it to download a known data set again)")]
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
    /// A user's data file or folder is in none of the data folders.
    #[error("{what} is not in any data folder ({searched}); give an absolute path, or put it in one of those folders or pass --data-dir")]
    Missing {
        /// The file or folder, as the config names it.
        what: String,
        /// The folders searched, in order.
        searched: String,
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
    /// The `[data]` settings do not describe a data set that can be loaded.
    #[error("data config: {0}")]
    Config(String),
}
