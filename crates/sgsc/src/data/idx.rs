//! Reader for the IDX format of MNIST (`train-images-idx3-ubyte.gz` and friends).
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then each
//! dimension as a big-endian u32, then the data. Every field is checked; nothing is trusted.

use super::DataError;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Largest decoded IDX file accepted (MNIST's largest is 47 MB); stops a corrupt header from
/// asking for an absurd allocation.
const MAX_DECODED_BYTES: usize = 256 << 20;

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
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_DECODED_BYTES)
        .ok_or_else(|| bad(format!("dimensions {dims:?} are absurdly large")))?;
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

/// Reads and parses a gzip-compressed IDX file.
pub fn read_idx_gz(path: &Path, expected_rank: usize) -> Result<IdxArray, DataError> {
    let name = path.display().to_string();
    let compressed = std::fs::read(path).map_err(|cause| DataError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    parse_idx(&gunzip(&compressed, &name)?, expected_rank, &name)
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
            Err(DataError::Malformed { .. })
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
