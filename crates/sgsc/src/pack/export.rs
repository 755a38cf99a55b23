//! Export: a trained network in the exact form the `.sgsc` file stores (see `docs/format.md`),
//! converted to the runtime crate's [`PackedModel`] and written as bytes.
//!
//! Before conversion the network is put in storage form ([`prepare_for_storage`]) and every
//! dead channel that the network's structure lets go is removed physically ([`prune::plan`]),
//! so the file holds live channels only, apart from the rows that write a transformer's residual
//! stream, which cost one width byte each.

use crate::config::ExperimentConfig;
use crate::data::DataDescription;
use crate::error::{Error, Result};
use crate::models::state_dict::float_state;
use crate::models::Network;
use crate::prune;
use crate::quant::QuantizedWeight;
use crate::size::live::live_channels;
use crate::size::prepare_for_storage;
use half::f16;
use sgsc_runtime::model::{
    self as packed, Metadata, Normalization, PackedModel, QuantizedMatrix, Storage, TensorData,
};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Floats of a tensor, in row-major order.
fn floats(tensor: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        &tensor
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_view([-1])?,
    )?)
}

/// A quantized weight as stored: its codes, each row's width, and its exponents in f16.
fn matrix(weight: &QuantizedWeight, name: &str) -> Result<QuantizedMatrix> {
    let rows = weight.weight.size()[0] as usize;
    let codes = Vec::<i64>::try_from(
        &weight
            .codes()?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?
            .f_view([-1])?,
    )?;
    let codes = codes
        .into_iter()
        .map(|code| {
            i32::try_from(code)
                .map_err(|_| Error::Model(format!("{name}: code {code} exceeds 32 bits")))
        })
        .collect::<Result<Vec<i32>>>()?;
    let widths = weight
        .channel_widths()?
        .into_iter()
        .map(|width| width as u8)
        .collect();
    let exponents = floats(&weight.stored_exponent()?)?
        .into_iter()
        .map(f16::from_f32)
        .collect();
    Ok(QuantizedMatrix {
        rows,
        columns: codes.len() / rows.max(1),
        widths,
        exponents,
        codes,
    })
}

/// Removes every dead channel the network's structure allows (outputs unchanged: a dead channel
/// has no codes, and no bias or shift unless it folds into the next layer's bias; its batch-norm
/// statistics are neutral in storage form).
pub fn remove_dead_channels(network: &mut Network) -> Result<usize> {
    prepare_for_storage(network)?;
    let removable: Vec<Vec<bool>> = live_channels(network)?
        .into_iter()
        .map(|alive| alive.into_iter().map(|a| !a).collect())
        .collect();
    let mut removed = 0;
    for (index, keep) in prune::plan(network, &removable)? {
        removed += network.quantized_weight(index).weight.size()[0] as usize - keep.len();
        prune::remove_channels(network, index, &keep)?;
    }
    Ok(removed)
}

/// Converts `network` (in storage form, dead channels removed: see [`remove_dead_channels`]) and
/// `metadata` into the model a `.sgsc` file holds.
pub fn to_packed(network: &Network, metadata: Metadata) -> Result<PackedModel> {
    // The file names its float tensors as PyTorch does, like the float state dict.
    let float_state: HashMap<String, Tensor> = float_state(network).into_iter().collect();
    let mut layers = Vec::with_capacity(network.layers.len());
    for index in 0..network.layers.len() {
        let spec = network.layer_spec(index);
        let tensors = spec
            .stored_tensors()
            .iter()
            .map(|stored| -> Result<TensorData> {
                let name = format!("layers.{index}.{}", stored.name);
                Ok(match stored.storage {
                    Storage::Codes => {
                        let prefix = name.strip_suffix(".weight").unwrap_or(&name);
                        let quantized = network
                            .quantized
                            .iter()
                            .position(|info| info.name == prefix)
                            .ok_or_else(|| Error::Model(format!("{name} is not quantized")))?;
                        TensorData::Codes(matrix(network.quantized_weight(quantized), &name)?)
                    }
                    Storage::Floats | Storage::NonNegative => TensorData::Floats(floats(
                        float_state
                            .get(&name)
                            .ok_or_else(|| Error::Model(format!("the network has no {name}")))?,
                    )?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        layers.push(packed::Layer { spec, tensors });
    }
    Ok(PackedModel { metadata, layers })
}

/// The metadata of a model trained with `config` on data described by `description`: input
/// shape, pixel normalisation and class names (images) or vocabulary (text), the data set's
/// config, and the run's certificate and summary as JSON.
pub fn metadata(
    config: &ExperimentConfig,
    description: &DataDescription,
    certificate: Option<serde_json::Value>,
    summary: Option<serde_json::Value>,
) -> Result<Metadata> {
    let description = description.clone().or_from_config(&config.data);
    let normalization = match (&description.normalization, config.data.is_text()) {
        (_, true) => None,
        // Trained on pixels / 255 as they are: the file says so.
        (_, false) if !config.data.input.normalize => Some(Normalization::uniform(0.0, 1.0)),
        (Some(n), false) => Some(crate::data::to_file(n)),
        (None, false) => {
            return Err(Error::Model(format!(
                "the run records no pixel normalisation for its {}; retrain it with this version of sgsc",
                config.data.describe()
            )))
        }
    };
    Ok(Metadata {
        input: config.model.input.iter().map(|&d| d as usize).collect(),
        normalization,
        vocabulary: description
            .vocabulary
            .map(|vocabulary| vocabulary.symbols.iter().collect()),
        classes: description.classes,
        data: Some(serde_json::to_value(&config.data).map_err(|e| Error::Model(e.to_string()))?),
        certificate,
        summary,
    })
}

/// Rounds a figure to 6 decimals, as a file's metadata carries it: then its JSON is at most as
/// long as that of the placeholders of [`LONGEST_ACCURACY`] and [`LONGEST_LOSS`] (for losses
/// below 100), so the length of a file can be known before its figures are.
pub fn round_figure(value: f64) -> f64 {
    if value.is_finite() {
        (value * 1e6).round() / 1e6
    } else {
        value
    }
}

/// An accuracy (a fraction) whose rounded JSON is as long as any.
pub const LONGEST_ACCURACY: f64 = 0.123456;
/// A loss whose rounded JSON is as long as any below 100 nats.
pub const LONGEST_LOSS: f64 = 12.345678;

/// What a run's file records of its run (the metadata's `summary`), figures rounded by
/// [`round_figure`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PackedSummary {
    /// The run's mode.
    pub mode: String,
    /// Its training seed.
    pub seed: u64,
    /// Its steps.
    pub steps: i64,
    /// The config's gamma (where the target law started, in a run with a target).
    pub gamma: Option<f64>,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
    /// Mean loss on the test split.
    pub test_loss: f64,
    /// The run's size target in bytes, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_bytes: Option<i64>,
}

impl PackedSummary {
    /// The summary as metadata JSON, figures rounded.
    pub fn to_json(&self) -> serde_json::Value {
        let rounded = PackedSummary {
            test_accuracy: round_figure(self.test_accuracy),
            test_loss: round_figure(self.test_loss),
            ..self.clone()
        };
        serde_json::to_value(rounded).expect("a summary always serialises")
    }
}

/// The length of the `.sgsc` file that `network` would make now with `metadata`, without
/// changing `network`: a copy with its channel counts is exported. What the target law steers on.
pub fn stored_length(
    network: &Network,
    model: &crate::models::ModelConfig,
    metadata: Metadata,
) -> Result<usize> {
    Ok(stored_bytes(network, model, metadata)?.len())
}

/// The bytes of the `.sgsc` file that `network` would make now with `metadata`, without changing
/// `network` (a copy with its channel counts is exported).
pub fn stored_bytes(
    network: &Network,
    model: &crate::models::ModelConfig,
    metadata: Metadata,
) -> Result<Vec<u8>> {
    let device = network.quantized_weight(0).weight.device();
    let mut copy = Network::new(model, 1.0, device)?;
    copy.set_integer_exponents(network.integer_exponents());
    for index in 0..copy.quantized.len() {
        let channels = network.quantized_weight(index).weight.size()[0];
        if channels < copy.quantized_weight(index).weight.size()[0] {
            prune::remove_channels(&mut copy, index, &(0..channels).collect::<Vec<i64>>())?;
        }
    }
    copy.load_state(&network.state().into_iter().collect())?;
    let (bytes, _) = export(&mut copy, metadata, ExportFormat::Sgsc)?;
    Ok(bytes)
}

/// File formats a model can be exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The packed `.sgsc` file (codes at their exact widths).
    Sgsc,
    /// Dequantized float32 weights in a safetensors file, named as PyTorch would.
    Safetensors,
    /// ONNX in QDQ form: int8 codes, per-channel scales, `DequantizeLinear` (image models).
    Onnx,
}

/// The bytes of `network` in `format`, and how many dead channels were removed first (the
/// network is cut in place; its outputs do not change).
pub fn export(
    network: &mut Network,
    metadata: Metadata,
    format: ExportFormat,
) -> Result<(Vec<u8>, usize)> {
    let removed = remove_dead_channels(network)?;
    let model = to_packed(network, metadata)?;
    let bytes = match format {
        ExportFormat::Sgsc => sgsc_runtime::format::encode(&model)?,
        ExportFormat::Safetensors => to_safetensors(&model)?,
        ExportFormat::Onnx => super::onnx::to_onnx(&model)?,
    };
    Ok((bytes, removed))
}

/// The dequantized float tensors of a packed model, named as PyTorch would name the modules'
/// state (`layers.0.weight`, `layers.3.running_mean`, `layers.1.query.weight`, ...), with shapes.
pub fn float_tensors(model: &PackedModel) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut tensors = Vec::new();
    for (index, layer) in model.layers.iter().enumerate() {
        for (stored, data) in layer.spec.stored_tensors().into_iter().zip(&layer.tensors) {
            let values = match data {
                TensorData::Codes(matrix) => matrix.dequantize(),
                TensorData::Floats(values) => values.clone(),
            };
            tensors.push((
                format!("layers.{index}.{}", stored.name),
                stored.shape,
                values,
            ));
        }
    }
    tensors
}

/// A safetensors file of the model's dequantized float weights ([`float_tensors`]), with the
/// packed metadata (JSON) under the key `sgsc`.
pub fn to_safetensors(model: &PackedModel) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = float_tensors(model)
        .into_iter()
        .map(|(name, shape, values)| {
            (
                name,
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::Model(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = std::collections::HashMap::from([(
        "sgsc".to_string(),
        serde_json::to_string(&model.metadata).map_err(|e| Error::Model(e.to_string()))?,
    )]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Model(e.to_string()))
}
