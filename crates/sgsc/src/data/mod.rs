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
