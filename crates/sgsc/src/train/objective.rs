//! The training objective of METHOD.md §2: `L = CE + gamma * Q` (the preservation and L1 terms
//! join with the safe mode).
//!
//! `Q = sum over layers and channels of relu(b_c) * live fan-in(c) / N0`: the average bits per
//! original weight. Live fan-in leaves out the inputs that come from dead channels (relu(b) = 0)
//! of the layer feeding this one (Cséfalvay & Imber, eq. 5); the counts are constants for the
//! gradient, which reaches the bit depths only.

use crate::error::Result;
use crate::models::Network;
use tch::{Kind, Tensor};

/// The size term Q for `network`, normalised by the starting weight count `original_weights`.
pub fn size_term(network: &Network, original_weights: f64) -> Result<Tensor> {
    let bits: Vec<Tensor> = (0..network.quantized.len())
        .map(|index| network.quantized_weight(index).bit_depth.f_relu())
        .collect::<Result<_, _>>()?;
    let live_channels: Vec<i64> = bits
        .iter()
        .map(|bits| -> Result<i64> { Ok(bits.f_gt(0.0)?.f_sum(Kind::Int64)?.int64_value(&[])) })
        .collect::<Result<_>>()?;
    let mut total: Option<Tensor> = None;
    for (index, info) in network.quantized.iter().enumerate() {
        let live_inputs = info
            .source
            .map_or(info.input_channels, |source| live_channels[source]);
        let live_fan_in = (live_inputs * info.positions_per_input) as f64;
        let layer_bits = bits[index].f_sum(Kind::Float)?.f_mul_scalar(live_fan_in)?;
        total = Some(match total {
            Some(sum) => sum.f_add(&layer_bits)?,
            None => layer_bits,
        });
    }
    let total = total.expect("a network has at least one quantized layer");
    Ok(total.f_div_scalar(original_weights)?)
}

/// Gamma at `step`: a linear ramp from 0 over `warmup_steps`, then constant.
pub fn gamma_at(gamma: f64, warmup_steps: i64, step: i64) -> f64 {
    if warmup_steps <= 0 || step >= warmup_steps {
        gamma
    } else {
        gamma * step as f64 / warmup_steps as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fixtures::tiny_network;

    fn set_bits(network: &Network, index: usize, values: &[f32]) {
        let mut bits = network.quantized_weight(index).bit_depth.shallow_clone();
        tch::no_grad(|| bits.copy_(&Tensor::from_slice(values)));
    }

    #[test]
    fn size_term_counts_bits_times_live_fan_in() {
        let network = tiny_network();
        // Weights: 2*1*9 + 3*2*9 + 4*12 = 18 + 54 + 48 = 120.
        assert_eq!(network.weight_count(), 120);
        set_bits(&network, 0, &[2.0, 3.0]);
        set_bits(&network, 1, &[1.0, 2.0, 4.0]);
        set_bits(&network, 2, &[1.0, 1.0, 1.0, 1.5]);
        let q = size_term(&network, 120.0).unwrap().double_value(&[]);
        // (2+3)*9 + (1+2+4)*(2*9) + (4.5)*(3*4) = 45 + 126 + 54 = 225 bits.
        assert!((q - 225.0 / 120.0).abs() < 1e-6, "{q}");
    }

    #[test]
    fn dead_channels_shrink_the_next_layers_fan_in() {
        let network = tiny_network();
        set_bits(&network, 0, &[2.0, -1.0]); // channel 1 dead
        set_bits(&network, 1, &[1.0, 0.0, 4.0]); // channel 1 dead
        set_bits(&network, 2, &[1.0, 1.0, 1.0, 1.0]);
        let q = size_term(&network, 120.0).unwrap();
        // 2*9 + (1+4)*(1*9) + 4*(2*4) = 18 + 45 + 32 = 95 bits.
        assert!((q.double_value(&[]) - 95.0 / 120.0).abs() < 1e-6);
        // The gradient reaches each live bit depth as its live fan-in / N0, and no dead one.
        q.backward();
        let grad = Vec::<f32>::try_from(&network.quantized_weight(1).bit_depth.grad()).unwrap();
        assert_eq!(grad, vec![9.0 / 120.0, 0.0, 9.0 / 120.0]);
    }

    #[test]
    fn gamma_ramps_then_holds() {
        assert_eq!(gamma_at(0.2, 100, 0), 0.0);
        assert!((gamma_at(0.2, 100, 25) - 0.05).abs() < 1e-12);
        assert_eq!(gamma_at(0.2, 100, 100), 0.2);
        assert_eq!(gamma_at(0.2, 0, 0), 0.2);
    }
}
