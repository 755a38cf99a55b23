//! The crate's error type: one variant per kind of failure, so callers (and tests) can tell a
//! corrupted data file from a bad config or a diverged run without parsing messages.

use std::path::PathBuf;

/// Everything that can go wrong in sgsc's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file is missing, corrupted or not what its name says.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A config file could not be read or does not describe a valid experiment.
    #[error("config {path}: {message}")]
    Config {
        /// The file (or `<inline>` for configs built in code).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A checkpoint could not be written, or read back as a valid checkpoint.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A float state dict does not hold the network the config describes: every missing,
    /// unexpected and mis-shaped tensor, at once.
    #[error(
        "{path}: the state dict does not fit the model: {}",
        state_dict_problems(missing, unexpected, misshaped)
    )]
    StateDict {
        /// The safetensors file.
        path: PathBuf,
        /// Tensors the model needs that the file lacks.
        missing: Vec<String>,
        /// Tensors of the file that the model has no place for.
        unexpected: Vec<String>,
        /// Tensors of the wrong shape or type, each with both shapes.
        misshaped: Vec<String>,
    },
    /// A model does not fit its input or its saved state (wrong shapes, unknown layers).
    #[error("model: {0}")]
    Model(String),
    /// Training could not continue (for example, non-finite losses even after rolling back).
    #[error("training: {0}")]
    Training(String),
    /// A plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// A packed model file could not be written or read (see `sgsc_runtime::RuntimeError`).
    #[error("packed model: {0}")]
    Packed(#[from] sgsc_runtime::RuntimeError),
    /// A libtorch operation failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error (shown in the message, so not chained again).
        cause: std::io::Error,
    },
}

/// The problems of a state dict, for [`Error::StateDict`]'s message.
fn state_dict_problems(missing: &[String], unexpected: &[String], misshaped: &[String]) -> String {
    let mut parts = Vec::new();
    for (what, names) in [
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", misshaped),
    ] {
        if !names.is_empty() {
            parts.push(format!("{what}: {}", names.join(", ")));
        }
    }
    parts.join("; ")
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }
}
