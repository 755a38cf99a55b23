//! Finding data files: `--data-dir`, then `SGSC_DATA_DIR`, then `./data`, then (for the known
//! data sets) a download from the canonical mirrors. Every known file is checked against its
//! published SHA-256, wherever it came from, so a corrupted file is reported instead of silently
//! training on garbage; a user's own files are checked when the config pins them.

use crate::DataError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Environment variable naming the data folder when `--data-dir` is not given.
pub const DATA_DIR_ENV: &str = "SGSC_DATA_DIR";

/// A data file the project knows: where it lives under the data folder, its digest, its mirrors.
#[derive(Debug, Clone, Copy)]
pub struct KnownFile {
    /// Path relative to the data folder, e.g. `mnist/train-images-idx3-ubyte.gz`.
    pub relative_path: &'static str,
    /// Published SHA-256 of the file, lowercase hex.
    pub sha256: &'static str,
    /// Base URLs the file name is appended to, tried in order.
    pub mirrors: &'static [&'static str],
}

const MNIST_MIRRORS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// The four MNIST files: train images, train labels, test images, test labels.
pub const MNIST_FILES: [KnownFile; 4] = [
    KnownFile {
        relative_path: "mnist/train-images-idx3-ubyte.gz",
        sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        mirrors: MNIST_MIRRORS,
    },
    KnownFile {
        relative_path: "mnist/train-labels-idx1-ubyte.gz",
        sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        mirrors: MNIST_MIRRORS,
    },
    KnownFile {
        relative_path: "mnist/t10k-images-idx3-ubyte.gz",
        sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        mirrors: MNIST_MIRRORS,
    },
    KnownFile {
        relative_path: "mnist/t10k-labels-idx1-ubyte.gz",
        sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        mirrors: MNIST_MIRRORS,
    },
];

/// The character-level corpora, by the `dataset` name a config uses.
pub const TEXT_FILES: [(&str, KnownFile); 2] = [
    (
        "names",
        KnownFile {
            relative_path: "names/names.txt",
            sha256: "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
            mirrors: &["https://raw.githubusercontent.com/karpathy/makemore/master/"],
        },
    ),
    (
        "tinyshakespeare",
        KnownFile {
            relative_path: "tinyshakespeare/input.txt",
            sha256: "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            mirrors: &[
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",
            ],
        },
    ),
];

/// The data folders to search, in priority order: the flag, the environment variable, `./data`.
pub fn candidate_dirs(flag: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = flag {
        dirs.push(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("data"));
    dirs
}

/// Returns the path of `file`, verified against its SHA-256: the first candidate folder holding
/// it, or else a fresh download into the first candidate folder.
pub fn find_or_download(file: &KnownFile, candidates: &[PathBuf]) -> Result<PathBuf, DataError> {
    if let Some(path) = candidates
        .iter()
        .map(|dir| dir.join(file.relative_path))
        .find(|path| path.is_file())
    {
        verify_sha256(&path, file.sha256)?;
        return Ok(path);
    }
    let target_dir = candidates.first().cloned().unwrap_or_else(|| "data".into());
    download(file, &target_dir.join(file.relative_path), candidates)
}

/// The folder or file `relative` names: itself when absolute, else the first candidate data
/// folder holding it.
pub fn resolve(relative: &Path, candidates: &[PathBuf]) -> Result<PathBuf, DataError> {
    if relative.is_absolute() {
        return if relative.exists() {
            Ok(relative.to_path_buf())
        } else {
            Err(DataError::Missing {
                what: relative.display().to_string(),
                searched: "an absolute path".into(),
            })
        };
    }
    candidates
        .iter()
        .map(|dir| dir.join(relative))
        .find(|path| path.exists())
        .ok_or_else(|| DataError::Missing {
            what: relative.display().to_string(),
            searched: searched(candidates),
        })
}

/// Checks `path` against the digest `pins` gives its file name, if any (a user's own data is
/// pinned only where the config says so).
pub fn check_pin(path: &Path, pins: &BTreeMap<String, String>) -> Result<(), DataError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    match name.and_then(|name| pins.get(&name)) {
        Some(expected) => verify_sha256(path, &expected.to_ascii_lowercase()),
        None => Ok(()),
    }
}

/// The folders searched, for messages.
fn searched(candidates: &[PathBuf]) -> String {
    candidates
        .iter()
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bytes of a file, with the path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|cause| DataError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Checks a file's SHA-256 against the expected lowercase hex digest.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), DataError> {
    let bytes = read(path)?;
    let found = sha256_hex(&bytes);
    if found != expected {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The bytes at `url` (at most 512 MiB, within five minutes).
#[cfg(feature = "download")]
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .new_agent();
    agent
        .get(url)
        .call()
        .and_then(|mut response| {
            response
                .body_mut()
                .with_config()
                .limit(512 << 20)
                .read_to_vec()
        })
        .map_err(|error| error.to_string())
}

/// Without the `download` feature nothing is fetched.
#[cfg(not(feature = "download"))]
fn fetch(_url: &str) -> Result<Vec<u8>, String> {
    Err("this build has no downloads (the `download` feature is off)".into())
}

/// Downloads `file` into `target`, trying each mirror; the bytes are checked before they are
/// written (to a temporary name, then renamed), so a failed download leaves nothing behind.
fn download(file: &KnownFile, target: &Path, candidates: &[PathBuf]) -> Result<PathBuf, DataError> {
    let name = file
        .relative_path
        .rsplit('/')
        .next()
        .unwrap_or(file.relative_path);
    let mut failures = Vec::new();
    for mirror in file.mirrors {
        let url = format!("{mirror}{name}");
        tracing::info!("downloading {url}");
        let bytes = match fetch(&url) {
            Ok(bytes) => bytes,
            Err(error) => {
                failures.push(format!("{url}: {error}"));
                continue;
            }
        };
        let digest = sha256_hex(&bytes);
        if digest != file.sha256 {
            failures.push(format!("{url}: SHA-256 {digest} is not the published one"));
            continue;
        }
        let io_error = |cause| DataError::Io {
            path: target.to_path_buf(),
            cause,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let partial = target.with_extension("partial");
        std::fs::write(&partial, &bytes).map_err(io_error)?;
        std::fs::rename(&partial, target).map_err(io_error)?;
        return Ok(target.to_path_buf());
    }
    Err(DataError::Unavailable {
        file: file.relative_path.to_string(),
        searched: searched(candidates),
        reason: failures.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_string() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn flag_comes_before_environment_and_default() {
        let dirs = candidate_dirs(Some(Path::new("/flag")));
        assert_eq!(dirs.first().unwrap(), Path::new("/flag"));
        assert_eq!(dirs.last().unwrap(), Path::new("data"));
    }

    #[test]
    fn corrupted_file_is_reported_as_checksum_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = &MNIST_FILES[1];
        let path = dir.path().join(file.relative_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"not the labels").unwrap();
        let result = find_or_download(file, &[dir.path().to_path_buf()]);
        assert!(
            matches!(result, Err(DataError::Checksum { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn unreachable_mirror_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = KnownFile {
            relative_path: "mnist/missing.gz",
            sha256: "00",
            mirrors: &["http://127.0.0.1:9/"],
        };
        let result = find_or_download(&file, &[dir.path().to_path_buf()]);
        match result {
            Err(DataError::Unavailable { file, reason, .. }) => {
                assert_eq!(file, "mnist/missing.gz");
                assert!(reason.contains("127.0.0.1:9"), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(!dir.path().join("mnist/missing.gz").exists());
    }
}
