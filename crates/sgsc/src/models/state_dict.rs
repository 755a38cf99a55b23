//! Float weights in PyTorch's naming: a safetensors state dict of the network the config
//! describes, as `torch.save(model.state_dict())` converted with `safetensors.torch.save_file`
//! would hold it for an `nn.Sequential` named `layers` (and as `sgsc export --format
//! safetensors` writes it for a model that still has all its channels). Names, per layer kind, with `i` the layer's index in `[model]`
//! (every layer counts, ReLU and flatten too):
//!
//! - conv2d, linear: `layers.i.weight` (`[out, in, k, k]` or `[out, in]`), `layers.i.bias`;
//! - batch_norm: `layers.i.running_mean`, `layers.i.running_var`, and with `affine`
//!   `layers.i.weight`, `layers.i.bias` (PyTorch's `layers.i.num_batches_tracked` is ignored);
//! - embedding: `layers.i.token.weight` (`[vocab, d_model]`), `layers.i.position.weight`;
//! - layer_norm: `layers.i.weight`, `layers.i.bias`;
//! - transformer_block: `layers.i.attention_norm.{weight,bias}`, `layers.i.query.weight`,
//!   `layers.i.key.weight`, `layers.i.value.weight`, `layers.i.projection.weight`,
//!   `layers.i.mlp_norm.{weight,bias}`, `layers.i.mlp_in.weight`, `layers.i.mlp_out.weight` (and
//!   `.bias` of each linear part where the config has biases).
//!
//! Bit depths and exponents are not part of it: the quantizers start afresh from the weights.

use super::Network;
use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::Tensor;

/// PyTorch's name of a network tensor: the network's own name, with `.weight` after the
/// embedding's `token` and `position` tables (PyTorch's `nn.Embedding` holds a `weight`).
fn pytorch_name(name: &str) -> String {
    if name.ends_with(".token") || name.ends_with(".position") {
        format!("{name}.weight")
    } else {
        name.to_string()
    }
}

/// True for the tensors a float state dict holds (not the quantizers' bit depths and exponents).
fn is_float_state(name: &str) -> bool {
    !name.ends_with(".bit_depth") && !name.ends_with(".exponent")
}

/// The network's float tensors under PyTorch's names, with the network's own tensors (shared
/// storage).
pub fn float_state(network: &Network) -> Vec<(String, Tensor)> {
    network
        .state()
        .into_iter()
        .filter(|(name, _)| is_float_state(name))
        .map(|(name, tensor)| (pytorch_name(&name), tensor))
        .collect()
}

/// Tensors of a state dict that PyTorch writes but sgsc has no use for.
fn is_ignored(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

/// The values of a safetensors tensor as f32 (from F32, F16, BF16 or F64).
fn values(view: &safetensors::tensor::TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Loads a float state dict from the safetensors bytes of `path` into `network` (whose
/// quantizers are then reset by the caller). Every tensor must be there with the network's
/// shape and nothing else may be: otherwise nothing is loaded, and the error lists every
/// missing, unexpected and mis-shaped tensor at once.
pub fn load_float_state(network: &Network, bytes: &[u8], path: &Path) -> Result<()> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("not a valid safetensors file: {e}"),
    })?;
    let expected: BTreeMap<String, Tensor> = float_state(network).into_iter().collect();
    let mut found: HashMap<String, Tensor> = HashMap::new();
    let (mut unexpected, mut misshaped, mut unreadable) = (Vec::new(), Vec::new(), Vec::new());
    let mut names = file.names();
    names.sort();
    let present: std::collections::HashSet<&str> = names.iter().copied().collect();
    for name in names.iter().copied() {
        let view = file.tensor(name).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let Some(target) = expected.get(name) else {
            if !is_ignored(name) {
                unexpected.push(name.to_string());
            }
            continue;
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if shape != target.size() {
            misshaped.push(format!(
                "{name} is {shape:?} in the file, {:?} in the model",
                target.size()
            ));
            continue;
        }
        match values(&view) {
            Some(values) => {
                found.insert(
                    name.to_string(),
                    Tensor::f_from_slice(&values)?.f_reshape(shape.as_slice())?,
                );
            }
            None => unreadable.push(format!("{name} is {:?}, not a float type", view.dtype())),
        }
    }
    misshaped.extend(unreadable);
    let missing: Vec<String> = expected
        .keys()
        .filter(|name| !present.contains(name.as_str()))
        .cloned()
        .collect();
    if !(missing.is_empty() && unexpected.is_empty() && misshaped.is_empty()) {
        return Err(Error::StateDict {
            path: path.to_path_buf(),
            missing,
            unexpected,
            misshaped,
        });
    }
    tch::no_grad(|| -> Result<()> {
        for (name, target) in &expected {
            let device = target.device();
            target
                .shallow_clone()
                .f_copy_(&found[name].f_to_device(device)?)?;
        }
        Ok(())
    })
}
