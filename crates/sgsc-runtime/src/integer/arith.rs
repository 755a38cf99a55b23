//! The integer arithmetic every back end follows bit for bit (`docs/integer.md`): a real
//! factor as a 32-bit multiplier and a right shift, rounding half up, and saturation.

/// A real factor `M` as `multiplier * 2^-shift`, with `|multiplier|` in `[2^30, 2^31)` whenever
/// the shift allows (at most [`Multiplier::MAX_SHIFT`]), so that it keeps 31 significant bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multiplier {
    /// Signed 32-bit mantissa.
    pub multiplier: i32,
    /// Right shift, 0 to [`Multiplier::MAX_SHIFT`].
    pub shift: u32,
}

impl Multiplier {
    /// The largest shift: a product of two 31-bit magnitudes plus an offset stays below 2^63.
    pub const MAX_SHIFT: u32 = 62;

    /// The multiplier closest to `factor`, or `None` when `factor` is not finite or is at
    /// least 2^31 (no shift can hold it in 32 bits). A factor of 0 is `0 * 2^0`.
    pub fn from_real(factor: f64) -> Option<Multiplier> {
        if !factor.is_finite() || factor.abs() >= pow2(31) {
            return None;
        }
        if factor == 0.0 {
            return Some(Multiplier {
                multiplier: 0,
                shift: 0,
            });
        }
        // 2^30 <= |factor| * 2^shift < 2^31, as far as the shift range allows.
        let exponent = libm::floor(libm::log2(factor.abs())) as i64;
        let mut shift = (30 - exponent).clamp(0, i64::from(Self::MAX_SHIFT)) as u32;
        let mut mantissa = libm::round(factor * pow2(shift as i32));
        if mantissa.abs() >= pow2(31) {
            // log2 rounded down at an exact power of two, or rounding carried: one bit less.
            if shift == 0 {
                return None;
            }
            shift -= 1;
            mantissa = libm::round(factor * pow2(shift as i32));
        }
        Some(Multiplier {
            multiplier: mantissa as i32,
            shift,
        })
    }

    /// The real factor this multiplier stands for.
    pub fn value(self) -> f64 {
        f64::from(self.multiplier) * pow2(-(self.shift as i32))
    }

    /// `round(value * M)`: the 64-bit product shifted right with rounding half up.
    pub fn apply(self, value: i32) -> i64 {
        round_shift(i64::from(value) * i64::from(self.multiplier), self.shift)
    }
}

/// `2^exponent`, exactly.
pub fn pow2(exponent: i32) -> f64 {
    libm::ldexp(1.0, exponent)
}

/// `value / 2^shift` rounded to the nearest integer, halves up (towards plus infinity): an
/// arithmetic right shift of `value + 2^(shift - 1)`. `|value|` must stay below 2^62 (every
/// caller's bound), so the addition cannot overflow.
pub fn round_shift(value: i64, shift: u32) -> i64 {
    if shift == 0 {
        value
    } else {
        (value + (1i64 << (shift - 1))) >> shift
    }
}

/// `value` clamped to `[low, high]`.
pub fn saturate(value: i64, low: i32, high: i32) -> i32 {
    value.clamp(i64::from(low), i64::from(high)) as i32
}

/// The codes a tensor of `bits`-bit activations may hold: `[0, 2^bits - 1]` unsigned,
/// `[-2^(bits-1), 2^(bits-1) - 1]` signed.
pub fn code_range(bits: u32, signed: bool) -> (i32, i32) {
    if signed {
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    } else {
        (0, (1 << bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_keep_31_significant_bits() {
        // 0.75 = 3 * 2^-2 = 1610612736 * 2^-31.
        let m = Multiplier::from_real(0.75).unwrap();
        assert_eq!((m.multiplier, m.shift), (1_610_612_736, 31));
        // A power of two: 2^-3 = 2^30 * 2^-33.
        let m = Multiplier::from_real(0.125).unwrap();
        assert_eq!((m.multiplier, m.shift), (1 << 30, 33));
        // Negative factors keep their sign in the mantissa.
        let m = Multiplier::from_real(-1.5).unwrap();
        assert_eq!((m.multiplier, m.shift), (-1_610_612_736, 30));
        // 1 - 2^-40 rounds up to 2^31 at shift 31: one bit less, 2^30 * 2^-30.
        let m = Multiplier::from_real(1.0 - pow2(-40)).unwrap();
        assert_eq!((m.multiplier, m.shift), (1 << 30, 30));
        // Large factors shift less; 2^31 and beyond do not fit.
        let m = Multiplier::from_real(3.0e9 / 4.0).unwrap();
        assert_eq!((m.multiplier, m.shift), (1_500_000_000, 1));
        assert_eq!(Multiplier::from_real(pow2(31)), None);
        assert_eq!(Multiplier::from_real(f64::NAN), None);
        // Tiny factors stop at the largest shift, with fewer significant bits.
        let m = Multiplier::from_real(pow2(-40)).unwrap();
        assert_eq!((m.multiplier, m.shift), (1 << 22, 62));
        assert_eq!(Multiplier::from_real(0.0).unwrap().multiplier, 0);
    }

    #[test]
    fn rounding_is_half_up_on_both_signs() {
        assert_eq!(round_shift(5, 1), 3); // 2.5 -> 3
        assert_eq!(round_shift(-5, 1), -2); // -2.5 -> -2
        assert_eq!(round_shift(-6, 2), -1); // -1.5 -> -1
        assert_eq!(round_shift(-7, 2), -2); // -1.75 -> -2
        assert_eq!(round_shift(7, 0), 7);
        let m = Multiplier::from_real(0.5).unwrap();
        assert_eq!(
            [m.apply(3), m.apply(-3), m.apply(i32::MAX)],
            [2, -1, 1 << 30]
        );
        // The extremes of a 32-bit accumulator times a 31-bit mantissa.
        let m = Multiplier {
            multiplier: i32::MAX,
            shift: 62,
        };
        assert_eq!(m.apply(i32::MIN), -1); // (-2^62 + 2^31) / 2^62
    }

    #[test]
    fn saturation_and_ranges_at_the_edges() {
        assert_eq!(code_range(8, true), (-128, 127));
        assert_eq!(code_range(8, false), (0, 255));
        assert_eq!(code_range(4, true), (-8, 7));
        assert_eq!(saturate(128, -128, 127), 127);
        assert_eq!(saturate(-129, -128, 127), -128);
        assert_eq!(saturate(i64::MIN, 0, 255), 0);
        assert_eq!(saturate(-1, 0, 255), 0);
        assert_eq!(saturate(77, 0, 255), 77);
    }
}
