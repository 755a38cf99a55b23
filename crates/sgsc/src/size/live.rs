//! When a channel is live: the one definition that the size term, the safety guard and the
//! exporter share.
//!
//! A quantized layer's output channel reaches the next layer in two ways: through its codes
//! (weights times inputs) and through a constant that does not depend on its input (its bias,
//! or the batch norm after it, whose output for a zero input is `shift - scale * mean /
//! sqrt(var + eps)`). So:
//!
//! - a channel has **zero bits** when `relu(b) = 0`: the quantizer maps all its weights to 0,
//!   whatever they are. Training counts the other channels as the next layer's live inputs (the
//!   size term Q), and the guard starts a zero-bit channel's grace period before removal;
//! - a channel sends a **constant** when its bias, or its batch norm's output for a zero input,
//!   is not zero: while training, under the running statistics and above
//!   [`CONSTANT_TOLERANCE`] (the guard removes nothing that still sends a noticeable constant);
//!   in the stored form, under the stored statistics (a dead channel's mean 0 and variance 1),
//!   exactly (the file keeps any constant it would otherwise lose, NaN included);
//! - a channel's constant **folds** into the next layer when that layer is its only reader, has a
//!   bias, and sees the constant the same at every position: a linear layer, or an unpadded,
//!   ungrouped convolution, with nothing between them but ReLU, batch norm, max pooling, unpadded
//!   average pooling, global average pooling and flattening ([`fold_consumer`]). Removing such a
//!   channel adds its constant times the reader's weights to the reader's bias, exactly. A padded
//!   convolution sees zeros at the borders instead of the constant, so a channel feeding one (or a
//!   layer without a bias) keeps its constant by staying;
//! - a channel is **live in the stored form** when its stored integer width is above 0 (some code
//!   is not 0) or it sends a constant that does not fold; the file keeps exactly these.
//!
//! Removing a channel that is not live leaves the network's outputs as they are (up to the
//! tolerance, and to float rounding where a constant was folded).

use crate::error::Result;
use crate::models::network::{Layer, BATCH_NORM_EPS};
use crate::models::Network;
use tch::{Device, Tensor};

/// While training, a constant output at or below this size counts as zero.
pub const CONSTANT_TOLERANCE: f64 = 1e-6;

/// Which batch-norm statistics decide a channel's constant output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistics {
    /// The running mean and variance, as training and evaluation use them.
    Running,
    /// What the stored form holds for a channel without codes: mean 0, variance 1 (see
    /// [`super::prepare_for_storage`]), so that only an affine shift remains.
    Stored,
}

/// Per channel of quantized layer `index`: true where `relu(b) = 0`, that is where `b > 0` does
/// not hold (a NaN bit depth counts as zero bits).
pub fn zero_bits(network: &Network, index: usize) -> Result<Vec<bool>> {
    let bits = network
        .quantized_weight(index)
        .bit_depth
        .f_gt(0.0)?
        .f_logical_not()?;
    Ok(Vec::<bool>::try_from(&bits.f_to_device(Device::Cpu)?)?)
}

/// How many channels of each quantized layer have bits (`relu(b) > 0`): the live inputs that
/// the size term counts for the layers they feed.
pub fn channels_with_bits(network: &Network) -> Result<Vec<i64>> {
    (0..network.quantized.len())
        .map(|index| {
            Ok(zero_bits(network, index)?
                .iter()
                .filter(|&&zero| !zero)
                .count() as i64)
        })
        .collect()
}

/// Per channel of quantized layer `index`: true where it sends a non-zero constant onwards
/// even at zero codes (its bias, or its batch norm's output for a zero input under
/// `statistics`, with that statistics' test of zero: see the module docs).
pub fn constant_outputs(
    network: &Network,
    index: usize,
    statistics: Statistics,
) -> Result<Vec<bool>> {
    let channels = network.quantized_weight(index).weight.size()[0] as usize;
    let mut constant = vec![false; channels];
    let mut outputs: Vec<Tensor> = network
        .bias(index)
        .map(|bias| bias.f_detach())
        .transpose()?
        .into_iter()
        .collect();
    if let Some(norm) = network.norm(index) {
        let zero_input = match statistics {
            Statistics::Running => norm
                .running_mean
                .f_neg()?
                .f_div(&norm.running_var.f_add_scalar(BATCH_NORM_EPS)?.f_sqrt()?)?,
            Statistics::Stored => norm.running_mean.f_zeros_like()?,
        };
        let output = match &norm.affine {
            Some((scale, shift)) => zero_input.f_mul(scale)?.f_add(shift)?.f_detach()?,
            None => zero_input,
        };
        outputs.push(output);
    }
    for tensor in outputs {
        let nonzero = match statistics {
            Statistics::Running => tensor.f_abs()?.f_gt(CONSTANT_TOLERANCE)?,
            Statistics::Stored => tensor.f_ne(0.0)?,
        };
        let nonzero = Vec::<bool>::try_from(&nonzero.f_to_device(Device::Cpu)?)?;
        for (flag, nonzero) in constant.iter_mut().zip(nonzero) {
            *flag |= nonzero;
        }
    }
    Ok(constant)
}

/// The quantized layer into whose bias the constant output of a removed channel of quantized
/// layer `index` folds exactly (see the module docs), or `None` when such a channel must stay.
pub fn fold_consumer(network: &Network, index: usize) -> Option<usize> {
    let info = &network.quantized[index];
    let plain = matches!(
        network.layers[info.layer],
        Layer::Conv2d(_) | Layer::Linear(_)
    );
    if !plain || info.groups > 1 || info.residual {
        return None;
    }
    let mut readers = network.readers(index);
    let consumer = readers.next()?;
    if readers.next().is_some() {
        return None;
    }
    let reader = &network.quantized[consumer];
    let sees_a_constant = match &network.layers[reader.layer] {
        Layer::Conv2d(conv) => conv.padding == 0 && conv.groups == 1,
        Layer::Linear(_) => true,
        _ => false,
    };
    let between = network.layers.get(info.layer + 1..reader.layer)?;
    let keeps_constants = between.iter().all(|layer| match layer {
        Layer::Relu
        | Layer::BatchNorm(_)
        | Layer::MaxPool(_)
        | Layer::GlobalAvgPool
        | Layer::Flatten => true,
        Layer::AvgPool(pool) => pool.padding == 0,
        _ => false,
    });
    (sees_a_constant && keeps_constants && network.bias(consumer).is_some()).then_some(consumer)
}

/// Per channel of quantized layer `index`: the value that reaches `consumer`, its
/// [`fold_consumer`], at every position when the channel's codes are all zero (its bias, then
/// the layers in between as evaluation computes them, with the running statistics).
pub fn arriving_constants(network: &Network, index: usize, consumer: usize) -> Result<Vec<f32>> {
    let info = &network.quantized[index];
    let mut value = match network.bias(index) {
        Some(bias) => bias.f_detach_copy()?,
        None => network.quantized_weight(index).bit_depth.f_zeros_like()?,
    };
    for layer in &network.layers[info.layer + 1..network.quantized[consumer].layer] {
        match layer {
            Layer::Relu => value = value.f_relu()?,
            Layer::BatchNorm(norm) => {
                let deviation = norm.running_var.f_add_scalar(BATCH_NORM_EPS)?.f_sqrt()?;
                value = value.f_sub(&norm.running_mean)?.f_div(&deviation)?;
                if let Some((scale, shift)) = &norm.affine {
                    value = value.f_mul(scale)?.f_add(shift)?;
                }
            }
            _ => {}
        }
    }
    Ok(Vec::<f32>::try_from(
        &value.f_detach()?.f_to_device(Device::Cpu)?,
    )?)
}

/// Liveness in the stored form and stored integer width of every output channel of every
/// quantized layer (the widths are needed for both, so they are computed once). A depthwise
/// convolution reads one channel per group: its channel is live when it sends a constant, or
/// has codes and its input channel is live; and a channel that feeds one is live only when one
/// of the depthwise channels reading it has codes and is live.
pub fn stored_liveness(network: &Network) -> Result<Vec<(Vec<bool>, Vec<u32>)>> {
    let mut layers = Vec::with_capacity(network.quantized.len());
    let mut constants = Vec::with_capacity(network.quantized.len());
    for index in 0..network.quantized.len() {
        let widths = network.quantized_weight(index).channel_widths()?;
        let constant = constant_outputs(network, index, Statistics::Stored)?;
        let folds = fold_consumer(network, index).is_some();
        let alive: Vec<bool> = widths
            .iter()
            .zip(&constant)
            .map(|(&width, &constant)| width > 0 || (constant && !folds))
            .collect();
        layers.push((alive, widths));
        constants.push(constant);
    }
    for (index, info) in network.quantized.iter().enumerate() {
        let Some(source) = info.source.filter(|_| info.is_depthwise()) else {
            continue;
        };
        let multiplier = layers[index].1.len() / info.groups as usize;
        let inputs_alive = layers[source].0.clone();
        let (alive, widths) = &mut layers[index];
        for (row, (alive, &width)) in alive.iter_mut().zip(widths.iter()).enumerate() {
            *alive = constants[index][row] || (width > 0 && inputs_alive[row / multiplier]);
        }
        let read: Vec<bool> = (0..inputs_alive.len())
            .map(|channel| {
                (channel * multiplier..(channel + 1) * multiplier)
                    .any(|row| layers[index].0[row] && layers[index].1[row] > 0)
            })
            .collect();
        for (alive, read) in layers[source].0.iter_mut().zip(read) {
            *alive &= read;
        }
    }
    Ok(layers)
}

/// Liveness in the stored form of every output channel of every quantized layer.
pub fn live_channels(network: &Network) -> Result<Vec<Vec<bool>>> {
    Ok(stored_liveness(network)?
        .into_iter()
        .map(|(alive, _)| alive)
        .collect())
}
