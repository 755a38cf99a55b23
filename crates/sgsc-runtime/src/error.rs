//! What can go wrong when reading or running a packed model. Every failure of a file is typed,
//! so callers (and tests) can tell a truncated file from a corrupted one.

use crate::prelude::*;
use thiserror::Error;

/// A packed model that cannot be read, or an input it cannot run on.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// Reading the file from disk failed.
    #[cfg(feature = "std")]
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file does not start with the `SGSC` magic bytes.
    #[error("not an sgsc model file (bad magic bytes)")]
    BadMagic,
    /// The file has a format version this runtime does not read.
    #[error("format version {found} is not supported (this runtime reads version {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Version this runtime reads.
        supported: u16,
    },
    /// The file ends before a structure it announces.
    #[error("file truncated: {what} needs {needed} bytes at offset {offset}, {available} left")]
    Truncated {
        /// What was being read.
        what: String,
        /// Byte offset where it starts.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A section's stored checksum does not match its bytes.
    #[error("section {section}: checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// Section tag.
        section: String,
        /// CRC-32 in the file.
        stored: u32,
        /// CRC-32 of the bytes read.
        computed: u32,
    },
    /// The sections are not the ones the format version defines, in order.
    #[error("unexpected section layout: {0}")]
    Sections(String),
    /// The metadata section is not valid JSON of the expected shape.
    #[error("metadata: {0}")]
    Metadata(String),
    /// Shapes, widths or lengths that contradict each other or exceed the format's limits.
    #[error("invalid model: {0}")]
    Invalid(String),
    /// A model or calibration that the integer arithmetic cannot hold (a layer kind without
    /// an integer kernel, an accumulator that could overflow 32 bits, a scale out of range).
    #[error("integer path: {0}")]
    Integer(String),
    /// An input that does not fit the model (wrong length, unknown token, ...).
    #[error("input: {0}")]
    Input(String),
}

/// Result with [`RuntimeError`].
pub type Result<T> = core::result::Result<T, RuntimeError>;
