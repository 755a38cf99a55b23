//! Reader for the IDX format of MNIST (`train-images-idx3-ubyte.gz` and friends), which many
//! drop-in data sets (Fashion-MNIST, KMNIST, EMNIST) share.
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then each
//! dimension as a big-endian u32, then the data. Every field is checked; nothing is trusted.

use crate::DataError;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Largest decoded data file accepted (MNIST's largest IDX file is 47 MB, CIFAR-100's training
/// file 154 MB); stops a corrupt header from asking for an absurd allocation.
pub const MAX_DECODED_BYTES: usize = 256 << 20;

/// An unsigned-byte IDX array: its dimensions and its values in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The values, `dims.iter().product()` of them.
    pub data: Vec<u8>,
}

/// Parses an (already decompressed) unsigned-byte IDX file with `expected_rank` dimensions.
pub fn parse_idx(bytes: &[u8], expected_rank: usize, file: &str) -> Result<IdxArray, DataError> {
    let bad = |reason: String| DataError::Malformed {
        file: file.to_string(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(bad(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(DataError::BadMagic {
            file: file.to_string(),
            found: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        });
    }
    let rank = bytes[3] as usize;
    if rank != expected_rank {
        return Err(bad(format!("{rank} dimensions, expected {expected_rank}")));
    }
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        return Err(DataError::Truncated {
            file: file.to_string(),
            expected: header_len,
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|chunk| u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize)
        .collect();
    let claimed = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    if claimed > MAX_DECODED_BYTES as u64 {
        return Err(DataError::TooLarge {
            file: file.to_string(),
            claimed,
            limit: MAX_DECODED_BYTES as u64,
        });
    }
    let count = claimed as usize;
    let payload = &bytes[header_len..];
    if payload.len() < count {
        return Err(DataError::Truncated {
            file: file.to_string(),
            expected: header_len + count,
            found: bytes.len(),
        });
    }
    if payload.len() > count {
        return Err(bad(format!(
            "{} trailing bytes after the {count} values its header declares",
            payload.len() - count
        )));
    }
    Ok(IdxArray {
        dims,
        data: payload.to_vec(),
    })
}

/// Decompresses gzip bytes, refusing outputs larger than the IDX size limit.
pub fn gunzip(bytes: &[u8], file: &str) -> Result<Vec<u8>, DataError> {
    let mut decoded = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_DECODED_BYTES as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|error| DataError::Malformed {
            file: file.to_string(),
            reason: format!("not valid gzip: {error}"),
        })?;
    if decoded.len() > MAX_DECODED_BYTES {
        return Err(DataError::Malformed {
            file: file.to_string(),
            reason: "decompresses to more than 256 MiB".into(),
        });
    }
    Ok(decoded)
}

/// True for bytes that start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// `bytes`, decompressed when they are gzip (whatever the file's name says); `file` labels
/// errors.
pub fn maybe_gunzip(bytes: Vec<u8>, file: &str) -> Result<Vec<u8>, DataError> {
    if is_gzip(&bytes) {
        gunzip(&bytes, file)
    } else {
        Ok(bytes)
    }
}

/// The bytes of `path`, decompressed when they are gzip.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    maybe_gunzip(crate::locate::read(path)?, &path.display().to_string())
}

/// Reads and parses an IDX file, gzip-compressed or plain.
pub fn read_idx(path: &Path, expected_rank: usize) -> Result<IdxArray, DataError> {
    parse_idx(
        &read_maybe_gzip(path)?,
        expected_rank,
        &path.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn parses_a_valid_file() {
        let array = parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5, 6]), 2, "t").unwrap();
        assert_eq!(array.dims, vec![2, 3]);
        assert_eq!(array.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_wrong_magic() {
        let mut bytes = idx(&[2], &[1, 2]);
        bytes[2] = 0x0D; // float data, not unsigned bytes
        assert!(matches!(
            parse_idx(&bytes, 1, "t"),
            Err(DataError::BadMagic { found: 0x0D01, .. })
        ));
    }

    #[test]
    fn rejects_truncated_files_at_every_length() {
        let bytes = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        for len in 0..bytes.len() {
            let result = parse_idx(&bytes[..len], 2, "t");
            assert!(
                matches!(
                    result,
                    Err(DataError::Truncated { .. }) | Err(DataError::Malformed { .. })
                ),
                "length {len}: {result:?}"
            );
        }
    }

    #[test]
    fn rejects_trailing_bytes_and_wrong_rank() {
        assert!(matches!(
            parse_idx(&idx(&[2], &[1, 2, 3]), 1, "t"),
            Err(DataError::Malformed { .. })
        ));
        assert!(matches!(
            parse_idx(&idx(&[2], &[1, 2]), 3, "t"),
            Err(DataError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_absurd_dimensions_without_allocating() {
        let bytes = idx(&[u32::MAX, u32::MAX, 16], &[]);
        assert!(matches!(
            parse_idx(&bytes, 3, "t"),
            Err(DataError::TooLarge {
                claimed: u64::MAX,
                ..
            })
        ));
        // Three billion 28x28 images on a 16-byte file.
        let bytes = idx(&[3_000_000_000, 28, 28], &[]);
        assert!(matches!(
            parse_idx(&bytes, 3, "t"),
            Err(DataError::TooLarge {
                claimed: 2_352_000_000_000,
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_gzip() {
        assert!(matches!(
            gunzip(b"definitely not gzip", "t"),
            Err(DataError::Malformed { .. })
        ));
    }
}
