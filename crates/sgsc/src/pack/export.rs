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
use crate::models::network::{Layer, Linear, BATCH_NORM_EPS};
use crate::models::transformer::{self, LAYER_NORM_EPS};
use crate::models::Network;
use crate::prune;
use crate::quant::QuantizedWeight;
use crate::size::live::live_channels;
use crate::size::prepare_for_storage;
use half::f16;
use sgsc_runtime::model::{
    self as packed, Dense, Metadata, Normalization, PackedModel, QuantizedMatrix,
};
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
    let exponents = floats(&weight.exponent)?
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

fn dense(linear: &Linear, name: &str) -> Result<Dense> {
    Ok(Dense {
        weight: matrix(&linear.weight, name)?,
        bias: linear.bias.as_ref().map(floats).transpose()?,
    })
}

fn norm(norm: &transformer::LayerNorm) -> Result<packed::Norm> {
    Ok(packed::Norm {
        weight: floats(&norm.weight)?,
        bias: floats(&norm.bias)?,
        eps: LAYER_NORM_EPS as f32,
    })
}

/// Removes every dead channel the network's structure allows (outputs unchanged: a dead channel
/// has no codes and no bias or shift, and its batch-norm statistics are neutral in storage form).
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
    let mut layers = Vec::with_capacity(network.layers.len());
    for (index, layer) in network.layers.iter().enumerate() {
        let name = format!("layers.{index}");
        layers.push(match layer {
            Layer::Conv2d(conv) => {
                let size = conv.weight.weight.size();
                packed::Layer::Conv2d {
                    in_channels: (size[1] * conv.groups) as usize,
                    kernel: size[2] as usize,
                    stride: conv.stride as usize,
                    padding: conv.padding as usize,
                    groups: conv.groups as usize,
                    dense: Dense {
                        weight: matrix(&conv.weight, &name)?,
                        bias: conv.bias.as_ref().map(floats).transpose()?,
                    },
                }
            }
            Layer::Linear(linear) => packed::Layer::Linear(dense(linear, &name)?),
            Layer::Relu => packed::Layer::Relu,
            Layer::BatchNorm(batch_norm) => packed::Layer::BatchNorm(packed::BatchNorm {
                mean: floats(&batch_norm.running_mean)?,
                variance: floats(&batch_norm.running_var)?,
                affine: batch_norm
                    .affine
                    .as_ref()
                    .map(|(scale, shift)| -> Result<_> { Ok((floats(scale)?, floats(shift)?)) })
                    .transpose()?,
                eps: BATCH_NORM_EPS as f32,
            }),
            Layer::MaxPool(pool) => packed::Layer::MaxPool(*pool),
            Layer::AvgPool(pool) => packed::Layer::AvgPool(*pool),
            Layer::GlobalAvgPool => packed::Layer::GlobalAvgPool,
            Layer::Flatten => packed::Layer::Flatten,
            Layer::Residual => packed::Layer::Residual,
            Layer::Add(projection) => packed::Layer::Add {
                projection: projection
                    .as_ref()
                    .map(|conv| -> Result<_> {
                        let weight = matrix(&conv.weight, &format!("{name}.projection"))?;
                        Ok((Dense { weight, bias: None }, conv.stride as usize))
                    })
                    .transpose()?,
            },
            Layer::Embedding(embedding) => {
                let token = embedding.token.size();
                packed::Layer::Embedding {
                    token: floats(&embedding.token)?,
                    position: floats(&embedding.position)?,
                    vocab_size: token[0] as usize,
                    context: embedding.position.size()[0] as usize,
                    d_model: token[1] as usize,
                }
            }
            Layer::TransformerBlock(block) => {
                let [query, key, value, projection, mlp_in, mlp_out] = &block.parts;
                packed::Layer::TransformerBlock(Box::new(packed::Block {
                    d_model: block.attention_norm.weight.size()[0] as usize,
                    heads: block.heads() as usize,
                    head_dim: block.head_dim as usize,
                    hidden: mlp_in.weight.weight.size()[0] as usize,
                    attention_norm: norm(&block.attention_norm)?,
                    query: dense(query, &format!("{name}.query"))?,
                    key: dense(key, &format!("{name}.key"))?,
                    value: dense(value, &format!("{name}.value"))?,
                    projection: dense(projection, &format!("{name}.projection"))?,
                    mlp_norm: norm(&block.mlp_norm)?,
                    mlp_in: dense(mlp_in, &format!("{name}.mlp_in"))?,
                    mlp_out: dense(mlp_out, &format!("{name}.mlp_out"))?,
                }))
            }
            Layer::LayerNorm(layer_norm) => packed::Layer::LayerNorm(norm(layer_norm)?),
        });
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
    let device = network.quantized_weight(0).weight.device();
    let mut copy = Network::new(model, 1.0, device)?;
    for index in 0..copy.quantized.len() {
        let channels = network.quantized_weight(index).weight.size()[0];
        if channels < copy.quantized_weight(index).weight.size()[0] {
            prune::remove_channels(&mut copy, index, &(0..channels).collect::<Vec<i64>>())?;
        }
    }
    copy.load_state(&network.state().into_iter().collect())?;
    let (bytes, _) = export(&mut copy, metadata, ExportFormat::Sgsc)?;
    Ok(bytes.len())
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
    let mut push = |name: String, shape: Vec<usize>, values: Vec<f32>| {
        tensors.push((name, shape, values));
    };
    fn dense_tensors(
        push: &mut impl FnMut(String, Vec<usize>, Vec<f32>),
        prefix: &str,
        dense: &Dense,
        shape: Vec<usize>,
    ) {
        push(format!("{prefix}.weight"), shape, dense.weight.dequantize());
        if let Some(bias) = &dense.bias {
            push(format!("{prefix}.bias"), vec![bias.len()], bias.clone());
        }
    }
    for (index, layer) in model.layers.iter().enumerate() {
        let prefix = format!("layers.{index}");
        match layer {
            packed::Layer::Conv2d {
                in_channels,
                kernel,
                groups,
                dense,
                ..
            } => {
                let shape = vec![dense.weight.rows, in_channels / groups, *kernel, *kernel];
                dense_tensors(&mut push, &prefix, dense, shape);
            }
            packed::Layer::Linear(dense) => {
                let shape = vec![dense.weight.rows, dense.weight.columns];
                dense_tensors(&mut push, &prefix, dense, shape);
            }
            packed::Layer::BatchNorm(norm) => {
                let channels = vec![norm.mean.len()];
                push(
                    format!("{prefix}.running_mean"),
                    channels.clone(),
                    norm.mean.clone(),
                );
                push(
                    format!("{prefix}.running_var"),
                    channels.clone(),
                    norm.variance.clone(),
                );
                if let Some((scale, shift)) = &norm.affine {
                    push(format!("{prefix}.weight"), channels.clone(), scale.clone());
                    push(format!("{prefix}.bias"), channels, shift.clone());
                }
            }
            packed::Layer::Embedding {
                token,
                position,
                vocab_size,
                context,
                d_model,
            } => {
                push(
                    format!("{prefix}.token.weight"),
                    vec![*vocab_size, *d_model],
                    token.clone(),
                );
                push(
                    format!("{prefix}.position.weight"),
                    vec![*context, *d_model],
                    position.clone(),
                );
            }
            packed::Layer::TransformerBlock(block) => {
                for (name, norm) in [
                    ("attention_norm", &block.attention_norm),
                    ("mlp_norm", &block.mlp_norm),
                ] {
                    let features = vec![norm.weight.len()];
                    push(
                        format!("{prefix}.{name}.weight"),
                        features.clone(),
                        norm.weight.clone(),
                    );
                    push(format!("{prefix}.{name}.bias"), features, norm.bias.clone());
                }
                for (suffix, dense) in layer.dense_parts() {
                    let shape = vec![dense.weight.rows, dense.weight.columns];
                    dense_tensors(&mut push, &format!("{prefix}{suffix}"), dense, shape);
                }
            }
            packed::Layer::LayerNorm(norm) => {
                let features = vec![norm.weight.len()];
                push(
                    format!("{prefix}.weight"),
                    features.clone(),
                    norm.weight.clone(),
                );
                push(format!("{prefix}.bias"), features, norm.bias.clone());
            }
            packed::Layer::Add {
                projection: Some((dense, _)),
            } => {
                let shape = vec![dense.weight.rows, dense.weight.columns, 1, 1];
                dense_tensors(&mut push, &format!("{prefix}.projection"), dense, shape);
            }
            packed::Layer::Relu
            | packed::Layer::MaxPool(_)
            | packed::Layer::AvgPool(_)
            | packed::Layer::GlobalAvgPool
            | packed::Layer::Flatten
            | packed::Layer::Residual
            | packed::Layer::Add { projection: None } => {}
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
