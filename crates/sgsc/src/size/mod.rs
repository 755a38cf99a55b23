//! Size stage: how many bytes the model takes in the form it is stored, below training so that
//! the loop can steer on it. [`payload_estimate`] counts the bytes of the codes, widths,
//! exponents and statistics without the file's metadata (labelled "payload estimate" wherever it
//! is shown; the `.sgsc` file's exact length comes from [`crate::pack::export`]):
//!
//! - per quantized layer, a liveness bitmap (1 bit per channel);
//! - per live channel: 1 byte of integer width, 2 bytes of exponent (f16), its codes at exactly
//!   that width for every *live* input (inputs fed by dead channels are not stored), a 4-byte
//!   bias if the layer has biases, and 8 bytes (16 if affine) of the batch norm that follows;
//! - code bits are summed per layer and rounded up to whole bytes;
//! - the float parameters outside quantized layers (a transformer's embeddings and layer norms),
//!   4 bytes each.
//!
//! Which channels are live is [`live`]'s one definition.

pub mod live;

use crate::error::Result;
use crate::models::Network;
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Bytes of per-channel metadata: integer width (u8) and exponent (f16).
pub const CHANNEL_METADATA_BYTES: i64 = 3;

/// Size facts of the network a run started from, before any pruning: what ratios, bits per
/// weight and channel counts are measured against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalSize {
    /// Conv and linear weights (N0).
    pub weights: i64,
    /// Bytes in float32 (see [`float_bytes`]).
    pub float_bytes: i64,
    /// Output channels of each quantized layer.
    pub channels: Vec<i64>,
}

impl OriginalSize {
    /// The size facts of `network` as it is now (call it on the starting network).
    pub fn of(network: &Network) -> Self {
        OriginalSize {
            weights: network.weight_count(),
            float_bytes: float_bytes(network),
            channels: (0..network.quantized.len())
                .map(|index| network.quantized_weight(index).weight.size()[0])
                .collect(),
        }
    }
}

/// Size of one quantized layer as it would be stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSize {
    /// Tensor name prefix, e.g. `layers.0`.
    pub name: String,
    /// Output channels the layer has now (fewer than at the start once channels are removed).
    pub channels: i64,
    /// Output channels the layer started with.
    pub original_channels: i64,
    /// Live output channels.
    pub alive: i64,
    /// Stored weights per live channel (live inputs x positions per input).
    pub live_fan_in: i64,
    /// Bits of all stored codes.
    pub code_bits: i64,
    /// Bytes of the layer, metadata included.
    pub bytes: i64,
    /// Integer width -> number of channels of that width (dead channels at width 0).
    pub width_histogram: BTreeMap<u32, i64>,
}

/// Size of a whole network as it would be stored, against its float32 size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeReport {
    /// Per quantized layer.
    pub layers: Vec<LayerSize>,
    /// Total bytes of the quantized model.
    pub payload_bytes: i64,
    /// Of which the float parameters outside quantized layers (embeddings, layer norms).
    pub float_parameter_bytes: i64,
    /// Bytes of the starting network in float32 (every weight, bias and normalisation value).
    pub float_bytes: i64,
    /// Stored code bits divided by the starting network's weight count.
    pub bits_per_weight: f64,
}

/// The size a run reports: bytes, what they count, and bits per weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headline {
    /// Bytes of the model.
    pub bytes: i64,
    /// `payload-estimate` (quantized) or `float32`.
    pub kind: &'static str,
    /// Stored bits per original weight (32 for float32).
    pub bits_per_weight: f64,
}

impl SizeReport {
    /// The headline size of a model trained quantized (the payload estimate) or in float.
    pub fn headline(&self, quantized: bool) -> Headline {
        if quantized {
            Headline {
                bytes: self.payload_bytes,
                kind: "payload-estimate",
                bits_per_weight: self.bits_per_weight,
            }
        } else {
            Headline {
                bytes: self.float_bytes,
                kind: "float32",
                bits_per_weight: 32.0,
            }
        }
    }
}

/// Bytes of `network` in float32: every weight, bias and normalisation tensor (not the
/// quantizer's bit depths and exponents, which a float model does not have).
pub fn float_bytes(network: &Network) -> i64 {
    network
        .state()
        .iter()
        .filter(|(name, _)| !name.ends_with(".bit_depth") && !name.ends_with(".exponent"))
        .map(|(_, tensor)| tensor.numel() as i64 * 4)
        .sum()
}

/// Counts the bytes the packed model would take (see the module docs for the layout), against
/// the size of the network the run started from.
pub fn payload_estimate(network: &Network, original: &OriginalSize) -> Result<SizeReport> {
    let (alive, widths): (Vec<Vec<bool>>, Vec<Vec<u32>>) =
        live::stored_liveness(network)?.into_iter().unzip();
    let mut layers = Vec::new();
    let mut total_code_bits = 0;
    for (index, info) in network.quantized.iter().enumerate() {
        let widths = &widths[index];
        let live_inputs =
            info.live_inputs(|source| alive[source].iter().filter(|&&a| a).count() as i64);
        let live_fan_in = live_inputs * info.positions_per_input;
        let alive_count = alive[index].iter().filter(|&&a| a).count() as i64;
        let code_bits: i64 = widths
            .iter()
            .zip(&alive[index])
            .filter(|(_, &alive)| alive)
            .map(|(&width, _)| width as i64 * live_fan_in)
            .sum();
        let mut per_channel = CHANNEL_METADATA_BYTES;
        if network.bias(index).is_some() {
            per_channel += 4;
        }
        if let Some(norm) = network.norm(index) {
            per_channel += if norm.affine.is_some() { 16 } else { 8 };
        }
        let channels = widths.len() as i64;
        let bytes = (code_bits + 7) / 8 + (channels + 7) / 8 + alive_count * per_channel;
        let mut width_histogram = BTreeMap::new();
        for &width in widths {
            *width_histogram.entry(width).or_insert(0) += 1;
        }
        total_code_bits += code_bits;
        layers.push(LayerSize {
            name: info.name.clone(),
            channels,
            original_channels: original.channels.get(index).copied().unwrap_or(channels),
            alive: alive_count,
            live_fan_in,
            code_bits,
            bytes,
            width_histogram,
        });
    }
    let float_parameter_bytes = 4 * network.unquantized_floats();
    Ok(SizeReport {
        payload_bytes: layers.iter().map(|layer| layer.bytes).sum::<i64>() + float_parameter_bytes,
        float_parameter_bytes,
        float_bytes: original.float_bytes,
        bits_per_weight: total_code_bits as f64 / original.weights.max(1) as f64,
        layers,
    })
}

/// Puts `network` into the exact form the packed file stores, so that what is evaluated is what
/// would ship: exponents rounded to f16, and the running statistics of dead channels that send
/// no constant set to mean 0, variance 1 (their input is exactly 0, so the batch norm passes 0
/// on). A dead channel whose constant folds into the next layer keeps its statistics: the fold
/// uses them.
pub fn prepare_for_storage(network: &Network) -> Result<()> {
    let alive = live::live_channels(network)?;
    tch::no_grad(|| -> Result<()> {
        for (index, alive) in alive.iter().enumerate() {
            let constant = live::constant_outputs(network, index, live::Statistics::Stored)?;
            let weight = network.quantized_weight(index);
            let mut exponent = weight.exponent.shallow_clone();
            let rounded = weight
                .stored_exponent()?
                .f_to_kind(Kind::Half)?
                .f_to_kind(Kind::Float)?;
            exponent.f_copy_(&rounded)?;
            if let Some(norm) = network.norm(index) {
                let dead: Vec<i64> = alive
                    .iter()
                    .zip(&constant)
                    .enumerate()
                    .filter(|(_, (&alive, &constant))| !alive && !constant)
                    .map(|(c, _)| c as i64)
                    .collect();
                if dead.is_empty() {
                    continue;
                }
                let dead = Tensor::f_from_slice(&dead)?.f_to_device(norm.running_mean.device())?;
                let _ = norm
                    .running_mean
                    .shallow_clone()
                    .f_index_fill_(0, &dead, 0.0)?;
                let _ = norm
                    .running_var
                    .shallow_clone()
                    .f_index_fill_(0, &dead, 1.0)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fixtures::set_values;
    use crate::models::fixtures::tiny_network;

    #[test]
    fn payload_matches_a_hand_count() {
        let network = tiny_network();
        // Layer 0: channel 0 codes {-1, 0, 1} (width 2), channel 1 all zero (dead).
        let w0 = network.quantized_weight(0);
        set_values(
            &w0.weight,
            &[
                1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                0.0, 0.0,
            ],
        );
        set_values(&w0.exponent, &[0.0, 0.0]);
        // Layer 1: every weight 3 at exponent 0 and 8 bits -> code 3, width 3, all channels alive.
        let w1 = network.quantized_weight(1);
        set_values(&w1.weight, &[3.0; 54]);
        set_values(&w1.exponent, &[0.0, 0.0, 0.0]);
        // Layer 2: codes -4 (width 3); biases non-zero.
        let w2 = network.quantized_weight(2);
        set_values(&w2.weight, &[-4.0; 48]);
        set_values(&w2.exponent, &[0.0; 4]);
        let report = payload_estimate(&network, &OriginalSize::of(&network)).unwrap();
        // Layer 0: 1 live channel x 2 bits x 9 = 18 bits -> 3 bytes; bitmap 1; per channel
        //   3 metadata + 8 batch norm = 11 -> 15 bytes.
        // Layer 1: 3 channels x 3 bits x (1 live input x 9) = 81 bits -> 11 bytes; bitmap 1;
        //   3 x 3 metadata = 9 -> 21 bytes.
        // Layer 2: 4 x 3 bits x (3 x 4) = 144 bits -> 18 bytes; bitmap 1; 4 x (3 + 4 bias) = 28
        //   -> 47 bytes.
        let bytes: Vec<i64> = report.layers.iter().map(|l| l.bytes).collect();
        assert_eq!(bytes, vec![15, 21, 47]);
        assert_eq!(report.payload_bytes, 83);
        assert_eq!(report.layers[1].live_fan_in, 9);
        assert!((report.bits_per_weight - (18.0 + 81.0 + 144.0) / 120.0).abs() < 1e-12);
        // Float: weights 120 + bias 4 + batch norm 2 x 2 = 128 values.
        assert_eq!(report.float_bytes, 128 * 4);
        assert_eq!(
            report.layers[0].width_histogram,
            BTreeMap::from([(0, 1), (2, 1)])
        );
    }

    #[test]
    fn storage_form_rounds_exponents_and_silences_dead_channels() {
        let network = tiny_network();
        let w0 = network.quantized_weight(0);
        set_values(&w0.weight, &[0.5; 18]);
        set_values(&w0.bit_depth, &[8.0, 0.0]);
        set_values(&w0.exponent, &[-3.0001, -2.0]);
        let norm = network.norm(0).unwrap();
        set_values(&norm.running_mean, &[0.25, 0.125]);
        set_values(&norm.running_var, &[2.0, 0.001]);
        prepare_for_storage(&network).unwrap();
        let exponent = Vec::<f32>::try_from(&w0.exponent).unwrap();
        assert_eq!(exponent[0], half_round(-3.0001));
        assert_eq!(
            Vec::<f32>::try_from(&norm.running_mean).unwrap(),
            vec![0.25, 0.0]
        );
        assert_eq!(
            Vec::<f32>::try_from(&norm.running_var).unwrap(),
            vec![2.0, 1.0]
        );
    }

    fn half_round(value: f32) -> f32 {
        Tensor::from_slice(&[value])
            .to_kind(Kind::Half)
            .to_kind(Kind::Float)
            .double_value(&[0]) as f32
    }
}
