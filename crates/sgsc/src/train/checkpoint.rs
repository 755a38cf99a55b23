//! Checkpoints: every tensor of the model and optimizer in one safetensors file, with the run's
//! metadata (config, mode, step) and a SHA-256 of the tensor data in its header.
//!
//! Writes are atomic (temporary file, fsync, rename), so an interrupted run leaves either the old
//! checkpoint or the new one, never half of one. Loading checks the format, the digest, every
//! dtype and every shape before any tensor reaches the model.

use crate::data::DataDescription;
use crate::error::{Error, Result};
use crate::files::write_atomically;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// Format tag stored in every checkpoint.
pub const FORMAT: &str = "sgsc-checkpoint-1";

/// What a checkpoint records besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// [`FORMAT`].
    pub format: String,
    /// Training mode (`baseline`, `unsafe`).
    pub mode: String,
    /// Optimizer steps completed.
    pub step: i64,
    /// The full experiment config as TOML.
    pub config: String,
    /// Weight count of the starting network (N0).
    pub original_weights: i64,
    /// The safety guard's bookkeeping in a `safe` run (JSON; its tensors are named `guard.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    /// The pressure law's state and the best state within the size target so far (JSON; the
    /// best state's tensors are named `best.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<String>,
    /// The vocabulary, class names and normalisation the model reads its inputs with.
    #[serde(flatten)]
    pub data: DataDescription,
}

/// Writes `tensors` (all converted to f32) and `info` to `path` atomically.
pub fn save(path: &Path, info: &CheckpointInfo, tensors: &[(String, Tensor)]) -> Result<()> {
    let fail = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let values = Vec::<f32>::try_from(
            &tensor
                .f_to_kind(Kind::Float)?
                .f_flatten(0, -1)?
                .f_to_device(tch::Device::Cpu)?,
        )?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        buffers.push((
            name.clone(),
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    buffers.sort_by(|a, b| a.0.cmp(&b.0));
    let digest = data_digest(
        buffers
            .iter()
            .map(|(name, _, bytes)| (name.as_str(), bytes.as_slice())),
    );
    let metadata = HashMap::from([
        (
            "sgsc".to_string(),
            serde_json::to_string(info).map_err(|e| fail(e.to_string()))?,
        ),
        ("sha256".to_string(), digest),
    ]);
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| fail(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| fail(e.to_string()))?;
    write_atomically(path, &bytes)
}

/// True for the bytes of a safetensors file with sgsc's checkpoint metadata (anything else,
/// such as a PyTorch state dict or `sgsc export --format safetensors`, is not a checkpoint).
pub fn is_checkpoint(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes).is_ok_and(|(_, header)| {
        header
            .metadata()
            .as_ref()
            .and_then(|metadata| metadata.get("sgsc"))
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
            .is_some_and(|info| info.get("format").and_then(|f| f.as_str()) == Some(FORMAT))
    })
}

/// Loads a checkpoint written by [`save`], verifying its format and data digest.
pub fn load(path: &Path) -> Result<(CheckpointInfo, HashMap<String, Tensor>)> {
    let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
    parse(&bytes, path)
}

/// Parses the bytes of a checkpoint read from `path` (which labels errors), as [`load`] does.
pub fn parse(bytes: &[u8], path: &Path) -> Result<(CheckpointInfo, HashMap<String, Tensor>)> {
    let fail = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| fail(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let info: CheckpointInfo = metadata
        .get("sgsc")
        .ok_or_else(|| fail("no sgsc metadata: not an sgsc checkpoint".into()))
        .and_then(|text| {
            serde_json::from_str(text).map_err(|e| fail(format!("bad metadata: {e}")))
        })?;
    if info.format != FORMAT {
        return Err(fail(format!("format {:?} is not {FORMAT:?}", info.format)));
    }
    let mut named = file.tensors();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let digest = data_digest(
        named
            .iter()
            .map(|(name, view)| (name.as_str(), view.data())),
    );
    if metadata.get("sha256") != Some(&digest) {
        return Err(fail(
            "tensor data does not match its SHA-256: the file is corrupted".into(),
        ));
    }
    let mut tensors = HashMap::new();
    for (name, view) in named {
        if view.dtype() != Dtype::F32 {
            return Err(fail(format!("{name} is {:?}, expected F32", view.dtype())));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(
            name,
            Tensor::f_from_slice(&values)?.f_reshape(shape.as_slice())?,
        );
    }
    Ok((info, tensors))
}

/// SHA-256 over each tensor's name and bytes, in name order.
fn data_digest<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (name, bytes) in tensors {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> CheckpointInfo {
        CheckpointInfo {
            format: FORMAT.into(),
            mode: "unsafe".into(),
            step: 7,
            config: "x = 1".into(),
            original_weights: 120,
            guard: Some("{}".into()),
            pressure: Some("{\"law\": 1}".into()),
            data: DataDescription {
                vocabulary: Some(crate::data::Vocabulary::from_text("ab\n")),
                classes: Some(vec!["a".into(), "b".into()]),
                normalization: Some(crate::data::Normalization {
                    mean: vec![0.5, 0.25],
                    std: vec![0.125, 1.0],
                }),
            },
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let a =
            Tensor::from_slice(&[1.5f32, -0.0, f32::MIN_POSITIVE, 3.25e-7, -7.0, 2.0]).view([2, 3]);
        let b = Tensor::from_slice(&[42.0f32]);
        save(
            &path,
            &info(),
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
        )
        .unwrap();
        let (loaded_info, tensors) = load(&path).unwrap();
        assert_eq!(loaded_info, info());
        assert_eq!(tensors["a"].size(), vec![2, 3]);
        assert!(tensors["a"].equal(&a));
        assert!(tensors["b"].equal(&b));
    }

    #[test]
    fn corruption_is_detected_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        save(&path, &info(), &[("a".into(), a)]).unwrap();
        let good = std::fs::read(&path).unwrap();
        // A flipped bit in the last tensor byte: structure intact, digest wrong.
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(
            matches!(load(&path), Err(Error::Checkpoint { message, .. }) if message.contains("SHA-256"))
        );
        // Truncations anywhere are rejected, never a panic.
        for len in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(
                matches!(load(&path), Err(Error::Checkpoint { .. })),
                "length {len}"
            );
        }
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }
}
