//! The training objective of METHOD.md §2: `L = CE + gamma * Q + lambda_p * L_pres + alpha * L1`.
//!
//! This module holds the terms that are not plain cross-entropy: the size term Q, distillation
//! from the frozen reference (part of L_pres), and the L1 pull on channels about to die.
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
    let live_channels = crate::size::live::channels_with_bits(network)?;
    let mut total: Option<Tensor> = None;
    for (index, info) in network.quantized.iter().enumerate() {
        let live_inputs = info.live_inputs(|source| live_channels[source]);
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

/// Knowledge distillation: `T^2 * KL(softmax(teacher / T) || softmax(student / T))`, averaged over
/// the batch (Hinton et al.; the `T^2` keeps gradient sizes comparable across temperatures).
pub fn distillation_loss(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let student = student_logits
        .f_div_scalar(temperature)?
        .f_log_softmax(-1, Kind::Float)?;
    let teacher = teacher_logits
        .f_detach()?
        .f_div_scalar(temperature)?
        .f_log_softmax(-1, Kind::Float)?;
    let batch = student_logits.size()[0].max(1) as f64;
    Ok(teacher
        .f_exp()?
        .f_mul(&teacher.f_sub(&student)?)?
        .f_sum(Kind::Float)?
        .f_mul_scalar(temperature * temperature / batch)?)
}

/// L1 on the weights (and biases) of channels whose bit depth `relu(b)` is below `threshold`,
/// divided by the starting weight count: pulls a channel's outputs towards zero while its bits
/// fall, so that removing it at zero bits changes little (Cséfalvay & Imber).
pub fn low_bit_l1(network: &Network, threshold: f64, original_weights: f64) -> Result<Tensor> {
    let mut total = Tensor::f_zeros(
        [],
        (Kind::Float, network.quantized_weight(0).weight.device()),
    )?;
    for index in 0..network.quantized.len() {
        let quantized = network.quantized_weight(index);
        let low = quantized
            .bit_depth
            .f_relu()?
            .f_lt(threshold)?
            .f_to_kind(Kind::Float)?
            .f_detach()?;
        let per_channel = quantized
            .weight
            .f_abs()?
            .f_flatten(1, -1)?
            .f_sum_dim_intlist(1, false, Kind::Float)?;
        let per_channel = match network.bias(index) {
            Some(bias) => per_channel.f_add(&bias.f_abs()?)?,
            None => per_channel,
        };
        total = total.f_add(&per_channel.f_mul(&low)?.f_sum(Kind::Float)?)?;
    }
    Ok(total.f_div_scalar(original_weights)?)
}

/// The share of gamma in force at `step`: a linear ramp from 0 over `warmup_steps`, then 1.
pub fn warmup_fraction(warmup_steps: i64, step: i64) -> f64 {
    if warmup_steps <= 0 || step >= warmup_steps {
        1.0
    } else {
        step as f64 / warmup_steps as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fixtures::{set_values, tiny_network};

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
    fn distillation_matches_a_hand_computed_kl() {
        let student = Tensor::from_slice(&[0.0f32, 0.0]).view([1, 2]);
        let teacher = Tensor::from_slice(&[(3.0f32).ln() * 2.0, 0.0]).view([1, 2]);
        // At T = 2 the teacher's probabilities are (3/4, 1/4), the student's (1/2, 1/2):
        // KL = 3/4 ln(3/2) + 1/4 ln(1/2); times T^2 = 4.
        let expected = 4.0 * (0.75 * 1.5f64.ln() + 0.25 * 0.5f64.ln());
        let loss = distillation_loss(&student, &teacher, 2.0)
            .unwrap()
            .double_value(&[]);
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
        assert!(
            distillation_loss(&teacher, &teacher, 3.0)
                .unwrap()
                .double_value(&[])
                .abs()
                < 1e-7
        );
    }

    #[test]
    fn l1_counts_only_low_bit_channels() {
        let network = tiny_network();
        let first = network.quantized_weight(0);
        set_values(&first.weight, &[[-1.0f32; 9], [0.5; 9]].concat());
        set_bits(&network, 0, &[0.5, 4.0]);
        set_bits(&network, 1, &[8.0, 8.0, 8.0]);
        let last = network.quantized_weight(2);
        set_values(&last.weight, &[0.25f32; 48]);
        set_bits(&network, 2, &[0.0, 8.0, 8.0, 0.9]);
        set_values(network.bias(2).unwrap(), &[2.0, 7.0, 7.0, -3.0]);
        // Channel 0 of layer 0: 9 x 1.0; channels 0 and 3 of the classifier: 12 x 0.25 + |bias|.
        let expected = (9.0 + (3.0 + 2.0) + (3.0 + 3.0)) / 120.0;
        let l1 = low_bit_l1(&network, 1.0, 120.0).unwrap().double_value(&[]);
        assert!((l1 - expected).abs() < 1e-6, "{l1} vs {expected}");
    }

    #[test]
    fn gamma_ramps_then_holds() {
        assert_eq!(warmup_fraction(100, 0), 0.0);
        assert!((warmup_fraction(100, 25) - 0.25).abs() < 1e-12);
        assert_eq!(warmup_fraction(100, 100), 1.0);
        assert_eq!(warmup_fraction(0, 0), 1.0);
    }
}
