//! Export: a trained network in the exact form the `.sgsc` file stores (see `docs/format.md`),
//! converted to the runtime crate's [`PackedModel`] and written as bytes.
//!
//! Before conversion the network is put in storage form ([`prepare_for_storage`]) and every
//! dead channel that the network's structure lets go is removed physically ([`prune::plan`]),
//! so the file holds live channels only, apart from the rows that write a transformer's residual
//! stream, which cost one width byte each.

use super::{live_channels, prepare_for_storage};
use crate::error::{Error, Result};
use crate::models::network::{Layer, Linear, BATCH_NORM_EPS};
use crate::models::transformer::{self, LAYER_NORM_EPS};
use crate::models::Network;
use crate::prune;
use crate::quant::QuantizedWeight;
use half::f16;
use sgsc_runtime::model::{self as packed, Dense, Metadata, PackedModel, QuantizedMatrix};
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
                    in_channels: size[1] as usize,
                    kernel: size[2] as usize,
                    stride: conv.stride as usize,
                    padding: conv.padding as usize,
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
            Layer::MaxPool(kernel) => packed::Layer::MaxPool {
                kernel: *kernel as usize,
            },
            Layer::Flatten => packed::Layer::Flatten,
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
