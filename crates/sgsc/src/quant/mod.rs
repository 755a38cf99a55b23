//! The differentiable quantizer of METHOD.md §1.
//!
//! Every output channel c of a quantized layer has a trainable bit depth `b_c` and exponent `e_c`:
//!
//! ```text
//! q(w; b, e) = 2^e * round_ste(clamp(2^-e * w, -2^(b'-1), 2^(b'-1) - 1)),   b' = relu(b)
//! ```
//!
//! `round_ste` rounds in the forward pass and passes the gradient straight through, so `w` learns
//! through the identity, `b` through the clamp bounds and `e` through the scale. At `b' = 0` both
//! bounds are -1/2, which rounds (half to even) to 0: the channel's weights are exactly zero and
//! the channel can be removed.

use tch::{Kind, Tensor};

/// A weight tensor with per-output-channel bit depth and exponent (the trainable quantizer).
#[derive(Debug)]
pub struct QuantizedWeight {
    /// Float weights, output channels first (`[out, in, kh, kw]` or `[out, in]`).
    pub weight: Tensor,
    /// Bit depth `b` per output channel, shape `[out]`; the quantizer uses `relu(b)`.
    pub bit_depth: Tensor,
    /// Exponent `e` per output channel, shape `[out]`; the quantization step is `2^e`.
    pub exponent: Tensor,
    /// Whether the quantizer uses `round_ste(e)`: steps are powers of two, and the stored
    /// exponents integers (`quant.integer_exponents`).
    pub integer_exponent: bool,
}

impl QuantizedWeight {
    /// Wraps `weight`, starting every channel at `initial_bit_depth` bits with the exponent that
    /// makes the channel's largest weight fit exactly (see [`initial_exponent`]). `b` and `e` are
    /// trainable leaves.
    pub fn new(weight: Tensor, initial_bit_depth: f64) -> Result<Self, tch::TchError> {
        let out = weight.size()[0];
        let (bit_depth, exponent) = tch::no_grad(|| -> Result<_, tch::TchError> {
            let bit_depth =
                Tensor::f_full([out], initial_bit_depth, (Kind::Float, weight.device()))?;
            let exponent = initial_exponent(&weight, initial_bit_depth)?;
            Ok((bit_depth, exponent))
        })?;
        Ok(QuantizedWeight {
            weight,
            bit_depth: bit_depth.set_requires_grad(true),
            exponent: exponent.set_requires_grad(true),
            integer_exponent: false,
        })
    }

    /// The quantized weights `q(w; b, e)`, differentiable in `w`, `b` and `e`.
    pub fn quantized(&self) -> Result<Tensor, tch::TchError> {
        quantize(&self.weight, &self.bit_depth, &self.used_exponent()?)
    }

    /// The exponents as the file stores them (before its f16 rounding): `e`, or `round(e)`
    /// with integer exponents. No gradient.
    pub fn stored_exponent(&self) -> Result<Tensor, tch::TchError> {
        tch::no_grad(|| {
            if self.integer_exponent {
                self.exponent.f_round()
            } else {
                Ok(self.exponent.shallow_clone())
            }
        })
    }

    /// The exponent the quantizer uses: `e`, or `round_ste(e)` with integer exponents.
    fn used_exponent(&self) -> Result<Tensor, tch::TchError> {
        if self.integer_exponent {
            round_ste(&self.exponent)
        } else {
            Ok(self.exponent.shallow_clone())
        }
    }

    /// The integer codes `round(clamp(2^-e w, ...))` as an i64 tensor shaped like the weights
    /// (what a packed file stores), computed without gradient.
    pub fn codes(&self) -> Result<Tensor, tch::TchError> {
        tch::no_grad(|| {
            let (scaled, lower, upper, _step) =
                scaled_and_bounds(&self.weight, &self.bit_depth, &self.used_exponent()?)?;
            scaled
                .f_maximum(&lower)?
                .f_minimum(&upper)?
                .f_round()?
                .f_to_kind(Kind::Int64)
        })
    }

    /// Stored integer width of each output channel: the smallest two's-complement width that
    /// holds the channel's actual codes (0 when every code is 0).
    pub fn channel_widths(&self) -> Result<Vec<u32>, tch::TchError> {
        let codes = self
            .codes()?
            .f_flatten(1, -1)?
            .f_to_device(tch::Device::Cpu)?;
        let minima = Vec::<i64>::try_from(&codes.f_amin(1, false)?)?;
        let maxima = Vec::<i64>::try_from(&codes.f_amax(1, false)?)?;
        Ok(minima
            .iter()
            .zip(&maxima)
            .map(|(&min, &max)| storage_width(min, max))
            .collect())
    }
}

/// `2^-e w`, the clamp bounds `-2^(b'-1)` and `2^(b'-1) - 1`, and the step `2^e`, with `b` and `e`
/// broadcast over the weight's trailing dimensions.
fn scaled_and_bounds(
    weight: &Tensor,
    bit_depth: &Tensor,
    exponent: &Tensor,
) -> Result<(Tensor, Tensor, Tensor, Tensor), tch::TchError> {
    let mut channel_shape = vec![1i64; weight.dim()];
    channel_shape[0] = weight.size()[0];
    let bits = bit_depth.f_relu()?.f_view(channel_shape.as_slice())?;
    let exponent = exponent.f_view(channel_shape.as_slice())?;
    let scaled = weight.f_mul(&exponent.f_neg()?.f_exp2()?)?;
    let half_range = bits.f_sub_scalar(1.0)?.f_exp2()?;
    let lower = half_range.f_neg()?;
    let upper = half_range.f_sub_scalar(1.0)?;
    Ok((scaled, lower, upper, exponent.f_exp2()?))
}

/// The quantizer `q(w; b, e)` for weights `[out, ...]`, bit depths `[out]` and exponents `[out]`.
pub fn quantize(
    weight: &Tensor,
    bit_depth: &Tensor,
    exponent: &Tensor,
) -> Result<Tensor, tch::TchError> {
    let (scaled, lower, upper, step) = scaled_and_bounds(weight, bit_depth, exponent)?;
    let clamped = scaled.f_maximum(&lower)?.f_minimum(&upper)?;
    round_ste(&clamped)?.f_mul(&step)
}

/// Rounds to nearest (half to even) in the forward pass; the gradient passes straight through.
pub fn round_ste(x: &Tensor) -> Result<Tensor, tch::TchError> {
    x.f_add(&x.f_round()?.f_sub(x)?.f_detach()?)
}

/// Exponent per output channel that lets the channel's largest weight magnitude fit the positive
/// code range at `bit_depth` bits: `e = log2(max|w| / (2^(b-1) - 1))`. Channels of zeros (or bit
/// depths below 2, where the positive range is empty) fall back to a floor of 2^-24.
pub fn initial_exponent(weight: &Tensor, bit_depth: f64) -> Result<Tensor, tch::TchError> {
    let largest = weight.f_abs()?.f_flatten(1, -1)?.f_amax(1, false)?;
    let positive_codes = (2f64.powf(bit_depth - 1.0) - 1.0).max(1.0);
    largest
        .f_div_scalar(positive_codes)?
        .f_clamp_min(2f64.powi(-24))?
        .f_log2()
}

/// Smallest two's-complement width holding every integer in `[min_code, max_code]`; 0 when both
/// are 0 (a channel of zeros needs no storage).
pub fn storage_width(min_code: i64, max_code: i64) -> u32 {
    if min_code == 0 && max_code == 0 {
        return 0;
    }
    (1..=64u32)
        .find(|&width| {
            let half = 1i128 << (width - 1);
            -half <= min_code as i128 && (max_code as i128) < half
        })
        .unwrap_or(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32]) -> Tensor {
        Tensor::from_slice(values)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn forward_matches_hand_computed_values() {
        // One channel, b = 3, e = -2: step 0.25, codes in [-4, 3].
        let w = tensor(&[0.3, -0.3, 0.1, 0.9, -1.5, 0.125, 0.375]).view([1, 7]);
        let q = quantize(&w, &tensor(&[3.0]), &tensor(&[-2.0])).unwrap();
        // 0.3/0.25 = 1.2 -> 1; -1.2 -> -1; 0.4 -> 0; 3.6 -> clamp 3; -6 -> clamp -4;
        // 0.5 -> 0 (half to even); 1.5 -> 2 (half to even).
        assert_eq!(values(&q), vec![0.25, -0.25, 0.0, 0.75, -1.0, 0.0, 0.5]);
    }

    #[test]
    fn integer_exponents_round_the_step_and_pass_the_gradient_straight_through() {
        let w = tensor(&[0.3, 0.9, -1.6]).view([1, 3]);
        let quantizer = |exponent: f32, integer_exponent: bool| QuantizedWeight {
            weight: w.copy().set_requires_grad(true),
            bit_depth: tensor(&[3.0]).set_requires_grad(true),
            exponent: tensor(&[exponent]).set_requires_grad(true),
            integer_exponent,
        };
        // e = -1.3 is used as -1: step 0.5, x = 0.6, 1.8, -3.2 -> codes 1, 2, -3 in [-4, 3].
        let integer = quantizer(-1.3, true);
        let q = integer.quantized().unwrap();
        assert_eq!(values(&q), vec![0.5, 1.0, -1.5]);
        assert_eq!(
            values(&integer.codes().unwrap().to_kind(Kind::Float)),
            vec![1.0, 2.0, -3.0]
        );
        assert_eq!(values(&integer.stored_exponent().unwrap()), vec![-1.0]);
        // Its gradients are those of the real quantizer at e = -1 exactly.
        let real = quantizer(-1.0, false);
        let weights = tensor(&[1.0, 2.0, 3.0]).view([1, 3]);
        (q * &weights).sum(Kind::Float).backward();
        (real.quantized().unwrap() * &weights)
            .sum(Kind::Float)
            .backward();
        assert_eq!(
            values(&integer.exponent.grad()),
            values(&real.exponent.grad())
        );
        assert_eq!(
            values(&integer.bit_depth.grad()),
            values(&real.bit_depth.grad())
        );
        assert_eq!(values(&integer.weight.grad()), values(&real.weight.grad()));
        // Real exponents are stored as they are.
        assert_eq!(
            values(&quantizer(-1.3, false).stored_exponent().unwrap()),
            vec![-1.3]
        );
    }

    #[test]
    fn fractional_and_zero_bit_depths() {
        let w = tensor(&[-3.0, -0.8, -0.6, -0.4, 0.0, 0.4, 3.0]);
        let w = Tensor::stack(&[&w, &w, &w], 0);
        // Channel 0: b = 0.5, bounds -2^-0.5 = -0.7071 and 2^-0.5 - 1 = -0.2929, e = 0.
        // Channel 1: b = 0 -> bounds -0.5, -0.5 -> every weight becomes exactly 0.
        // Channel 2: b = -2 -> relu gives 0, same as channel 1.
        let q = quantize(&w, &tensor(&[0.5, 0.0, -2.0]), &tensor(&[0.0, 0.0, 0.0])).unwrap();
        let q = values(&q);
        // clamp: -0.7071, -0.7071, -0.6, -0.4, -0.2929, -0.2929, -0.2929 -> round: -1 -1 -1 0 0 0 0
        assert_eq!(&q[0..7], &[-1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(q[7..].iter().all(|&v| v == 0.0), "{:?}", &q[7..]);
    }

    #[test]
    fn gradients_follow_the_straight_through_rule() {
        // b = 2 (codes in [-2, 1]), e = -1 (step 0.5). Inside the range: x = 2^-e w.
        let w = tensor(&[0.3, 0.9, -1.6])
            .view([1, 3])
            .set_requires_grad(true);
        let b = tensor(&[2.0]).set_requires_grad(true);
        let e = tensor(&[-1.0]).set_requires_grad(true);
        let q = quantize(&w, &b, &e).unwrap();
        // Weight the outputs 1, 2, 3 so that each weight's contribution is visible in the sums.
        (q * tensor(&[1.0, 2.0, 3.0]).view([1, 3]))
            .sum(Kind::Float)
            .backward();
        let ln2 = std::f32::consts::LN_2;
        // w = 0.3: x = 0.6 inside [-2, 1] -> dq/dw = 1, dq/de = ln2 * 2^e * (round(x) - x).
        // w = 0.9: x = 1.8 clamped at upper = 2^(b-1) - 1 = 1 -> dq/dw = 0,
        //   dq/db = 2^e * ln2 * 2^(b-1), dq/de = ln2 * 2^e * upper.
        // w = -1.6: x = -3.2 clamped at lower = -2 -> dq/dw = 0, dq/db = -2^e * ln2 * 2^(b-1),
        //   dq/de = ln2 * 2^e * lower.
        assert_eq!(values(&w.grad()), vec![1.0, 0.0, 0.0]);
        let expected_b = 2.0 * (0.5 * ln2 * 2.0) + 3.0 * (-0.5 * ln2 * 2.0);
        assert!(
            expected_b.abs() > 0.5,
            "the weighting keeps the bounds' contributions apart"
        );
        assert!((values(&b.grad())[0] - expected_b).abs() < 1e-6);
        let expected_e = ln2 * 0.5 * (1.0 - 0.6) + 2.0 * ln2 * 0.5 * 1.0 + 3.0 * ln2 * 0.5 * -2.0;
        assert!(
            (values(&e.grad())[0] - expected_e).abs() < 1e-5,
            "{:?}",
            values(&e.grad())
        );
    }

    #[test]
    fn gradients_of_w_and_b_match_finite_differences_of_the_unrounded_map() {
        // Without rounding, q is 2^e * clamp(2^-e w, lo(b), hi(b)); the STE makes autograd's w and
        // b gradients equal that map's derivatives. Checked on weights that sit inside and outside
        // the range, with b chosen non-integer so the bounds move smoothly.
        let w_values = [0.05f64, 0.33, -0.41, 2.2, -2.9];
        let (b_value, e_value) = (2.7f64, -2.3f64);
        let unrounded = |w: f64, b: f64, e: f64| {
            let lower = -(2f64.powf(b - 1.0));
            let upper = 2f64.powf(b - 1.0) - 1.0;
            2f64.powf(e) * (w * 2f64.powf(-e)).clamp(lower, upper)
        };
        let w = Tensor::from_slice(&w_values)
            .to_kind(Kind::Double)
            .view([1, 5])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[b_value]).set_requires_grad(true);
        let e = Tensor::from_slice(&[e_value]).set_requires_grad(true);
        quantize(&w, &b, &e).unwrap().sum(Kind::Double).backward();
        let grad_w = Vec::<f64>::try_from(&w.grad().flatten(0, -1)).unwrap();
        let h = 1e-6;
        for (i, &wi) in w_values.iter().enumerate() {
            let numeric = (unrounded(wi + h, b_value, e_value)
                - unrounded(wi - h, b_value, e_value))
                / (2.0 * h);
            assert!(
                (grad_w[i] - numeric).abs() < 1e-6,
                "w[{i}]: {} vs {numeric}",
                grad_w[i]
            );
        }
        let numeric_b: f64 = w_values
            .iter()
            .map(|&wi| {
                (unrounded(wi, b_value + h, e_value) - unrounded(wi, b_value - h, e_value))
                    / (2.0 * h)
            })
            .sum();
        assert!((b.grad().double_value(&[0]) - numeric_b).abs() < 1e-6);
    }

    #[test]
    fn initial_exponent_fits_the_largest_weight() {
        let w = tensor(&[0.5, -1.27, 0.0, 0.0, 0.2, 0.1]).view([3, 2]);
        let e = values(&initial_exponent(&w, 8.0).unwrap());
        // max |w| = 1.27 -> 1.27 / 127 = 0.01 -> log2(0.01)
        assert!((e[0] - 0.01f32.log2()).abs() < 1e-5);
        assert!((e[1] - (-24.0)).abs() < 1e-5);
        assert!((e[2] - (0.2f32 / 127.0).log2()).abs() < 1e-5);
        // At that exponent the largest weight is code 127 exactly, unclipped.
        let q = QuantizedWeight::new(w.copy(), 8.0).unwrap();
        let codes = Vec::<i64>::try_from(&q.codes().unwrap().flatten(0, -1)).unwrap();
        assert_eq!(codes[1], -127);
        assert_eq!(codes[4], 127);
    }

    #[test]
    fn storage_width_is_the_smallest_twos_complement_width() {
        assert_eq!(storage_width(0, 0), 0);
        assert_eq!(storage_width(-1, 0), 1);
        assert_eq!(storage_width(0, 1), 2);
        assert_eq!(storage_width(-2, 1), 2);
        assert_eq!(storage_width(-3, 1), 3);
        assert_eq!(storage_width(-128, 127), 8);
        assert_eq!(storage_width(-4, 4), 4);
    }

    #[test]
    fn channel_widths_come_from_actual_codes() {
        // Channel 0 has 8 bits available but its codes only span [-1, 1]: width 2.
        let w = tensor(&[0.01, -0.01, 0.0, 0.0, 0.0, 0.0]).view([2, 3]);
        let q = QuantizedWeight {
            weight: w,
            bit_depth: tensor(&[8.0, 8.0]),
            exponent: tensor(&[(0.01f32).log2(), -3.0]),
            integer_exponent: false,
        };
        assert_eq!(q.channel_widths().unwrap(), vec![2, 0]);
    }
}
