//! Integer-only inference of image classifiers (`docs/integer.md`): 8-bit activation codes with
//! one scale per tensor, weights as the file's codes at each row's width, 32-bit accumulators,
//! and a multiply and shift per channel between layers. No floating point runs per image; the
//! plan's constants are computed once, from the file and a calibration of activation ranges
//! ([`crate::Model::layer_ranges`]).
//!
//! - [`arith`]: the multiplier, rounding and saturation every back end shares;
//! - [`plan`]: the layers grouped into integer operations with their constants;
//! - [`run`]: the reference kernels.

use crate::prelude::*;
pub mod arith;
pub mod plan;
pub mod run;

use crate::error::{Result, RuntimeError};
use crate::model::PackedModel;
use crate::parallel::map_chunks;
pub use plan::Plan;

/// An image classifier ready to run on integers.
#[derive(Debug, Clone)]
pub struct IntegerModel {
    plan: Plan,
    pixels_per_image: usize,
}

impl IntegerModel {
    /// The integer model of `packed` with activation ranges `ranges` (one per layer, from
    /// [`crate::Model::layer_ranges`]) and `bits`-bit activations.
    pub fn new(packed: &PackedModel, ranges: &[f32], bits: u32) -> Result<IntegerModel> {
        let plan = Plan::new(packed, ranges, bits)?;
        Ok(IntegerModel {
            plan,
            pixels_per_image: packed.metadata.input.iter().product(),
        })
    }

    /// The plan: operations and their constants.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Real value of one step of the logits.
    pub fn output_scale(&self) -> f64 {
        self.plan.output_scale
    }

    /// Logits per image.
    pub fn outputs(&self) -> usize {
        self.plan.outputs
    }

    /// 32-bit logits `[batch, outputs]` of `batch` images of 8-bit pixels (spread over rayon's
    /// threads with the `std` feature).
    pub fn classify_pixels(&self, pixels: &[u8], batch: usize) -> Result<Vec<i32>> {
        self.check_pixels(pixels, batch)?;
        let logits = map_chunks(
            pixels,
            self.pixels_per_image,
            || (),
            |_, image| run::run(&self.plan, self.plan.input.codes(image)),
        );
        Ok(logits.concat())
    }

    /// An error unless `pixels` holds `batch` images.
    fn check_pixels(&self, pixels: &[u8], batch: usize) -> Result<()> {
        if pixels.len() != batch * self.pixels_per_image {
            return Err(RuntimeError::Input(format!(
                "{} pixels for {batch} images of {}",
                pixels.len(),
                self.pixels_per_image
            )));
        }
        Ok(())
    }

    /// Zeroed saturation counters, one per operation that saturates
    /// ([`plan::Op::saturating_range`]), for [`IntegerModel::classify_counting_saturation`].
    pub fn saturation_counters(&self) -> Vec<Saturation> {
        self.plan
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.saturating_range().is_some())
            .map(|(index, op)| Saturation {
                op: index,
                kind: op.kind(),
                at_ends: 0,
                codes: 0,
            })
            .collect()
    }

    /// As [`IntegerModel::classify_pixels`], also adding to `totals` (from
    /// [`IntegerModel::saturation_counters`]) how many output codes of each operation that
    /// saturates sat at an end of its range: the values that the calibration's scale clipped,
    /// with the few that land there exactly.
    pub fn classify_counting_saturation(
        &self,
        pixels: &[u8],
        batch: usize,
        totals: &mut [Saturation],
    ) -> Result<Vec<i32>> {
        self.check_pixels(pixels, batch)?;
        let ops = &self.plan.ops;
        let per_image = map_chunks(
            pixels,
            self.pixels_per_image,
            || (),
            |_, image| {
                let mut counts = vec![(0u64, 0u64); ops.len()];
                let logits =
                    run::run_observed(&self.plan, self.plan.input.codes(image), |index, out| {
                        if let Some((low, high)) = ops[index].saturating_range() {
                            // An unsigned tensor's low end is where a fused ReLU puts its zeros.
                            let at_end = |&v: &i32| v == high || (low < 0 && v == low);
                            counts[index].0 += out.iter().filter(|v| at_end(v)).count() as u64;
                            counts[index].1 += out.len() as u64;
                        }
                    });
                (logits, counts)
            },
        );
        let mut logits = Vec::with_capacity(batch * self.plan.outputs);
        for (image_logits, counts) in per_image {
            logits.extend(image_logits);
            for entry in totals.iter_mut() {
                entry.at_ends += counts[entry.op].0;
                entry.codes += counts[entry.op].1;
            }
        }
        Ok(logits)
    }
}

/// How many of one operation's output codes sat at an end of their range, over a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturation {
    /// The operation's index in the plan.
    pub op: usize,
    /// Its kind ([`plan::Op::kind`]).
    pub kind: &'static str,
    /// Codes at an end of the range (the top; for a signed tensor, the bottom too).
    pub at_ends: u64,
    /// Codes written.
    pub codes: u64,
}

#[cfg(test)]
mod tests {
    use super::arith::{pow2, Multiplier};
    use super::plan::Op;
    use super::*;
    use crate::layers::LayerSpec;
    use crate::model::{Layer, Metadata, QuantizedMatrix, TensorData};
    use half::f16;

    fn codes(
        rows: usize,
        columns: usize,
        widths: &[u8],
        exponents: &[f32],
        codes: &[i32],
    ) -> TensorData {
        TensorData::Codes(QuantizedMatrix {
            rows,
            columns,
            widths: widths.to_vec(),
            exponents: exponents.iter().map(|&e| f16::from_f32(e)).collect(),
            codes: codes.to_vec(),
        })
    }

    /// Pixels `[1, 2, 2]` (no normalisation: `p / 255`), a 1x1 convolution of weight
    /// `3 * 2^-1`, ReLU, flatten, and a classifier with rows `[1, 0, -1, 2]` and zeros, biases
    /// 0.5 and -0.25.
    fn tiny() -> PackedModel {
        PackedModel {
            metadata: Metadata {
                input: vec![1, 2, 2],
                normalization: None,
                vocabulary: None,
                classes: None,
                data: None,
                certificate: None,
                summary: None,
            },
            layers: vec![
                Layer {
                    spec: LayerSpec::Conv2d {
                        in_channels: 1,
                        out_channels: 1,
                        kernel: 1,
                        stride: 1,
                        padding: 0,
                        bias: false,
                        groups: 1,
                    },
                    tensors: vec![codes(1, 1, &[3], &[-1.0], &[3])],
                },
                Layer::without_tensors(LayerSpec::Relu),
                Layer::without_tensors(LayerSpec::Flatten),
                Layer {
                    spec: LayerSpec::Linear {
                        in_features: 4,
                        out_features: 2,
                        bias: true,
                    },
                    tensors: vec![
                        codes(2, 4, &[3, 0], &[0.0, 0.0], &[1, 0, -1, 2, 0, 0, 0, 0]),
                        TensorData::Floats(vec![0.5, -0.25]),
                    ],
                },
            ],
        }
    }

    #[test]
    fn a_tiny_classifier_gets_its_constants_and_logits_by_hand() {
        // The convolution's output reaches 1.5 (pixel 255 times 1.5).
        let model = IntegerModel::new(&tiny(), &[1.5, 1.5, 1.5, 5.0], 8).unwrap();
        let plan = model.plan();
        // Pixels are their own codes at scale 1/255, unsigned.
        assert_eq!(plan.input.table[..4], [0, 1, 2, 3]);
        assert_eq!(plan.input.table[255], 255);
        // Conv + ReLU: accumulator scale (1/255) * 2^-1, output scale 1.5/255, so the factor
        // is 1/3: 2^32 / 3 rounded, shift 32; the ReLU makes the output unsigned.
        let Op::Conv { stage, .. } = &plan.ops[0] else {
            panic!("{:?}", plan.ops[0]);
        };
        assert_eq!(
            stage.multipliers[0],
            Multiplier {
                multiplier: 1_431_655_765,
                shift: 32
            }
        );
        assert_eq!((stage.low, stage.high, stage.relu_first), (0, 255, true));
        // Classifier: bias 0.5 in accumulator units of 1.5/255 is 85; the zero row is the
        // constant -0.25 alone.
        let Op::Linear { stage, .. } = &plan.ops[1] else {
            panic!("{:?}", plan.ops[1]);
        };
        assert_eq!(stage.bias, vec![85, 0]);
        assert_eq!(stage.multipliers[1].multiplier, 0);
        // Logits' scale: the first row reaches (4 * 255 + 1) * 1.5/255 + 0.5, in 2^30 steps.
        let reach = 1021.0 * 1.5 / 255.0 + 0.5;
        assert_eq!(model.output_scale(), reach / pow2(30));
        // Pixels [255, 0, 0, 255]: conv codes equal the pixels, accumulator 255 + 2 * 255, so
        // the logits are 1.5/255 * 765 + 0.5 = 5 and -0.25, each to within one step.
        let logits = model.classify_pixels(&[255, 0, 0, 255], 1).unwrap();
        let real: Vec<f64> = logits
            .iter()
            .map(|&l| f64::from(l) * model.output_scale())
            .collect();
        assert!((real[0] - 5.0).abs() <= model.output_scale(), "{real:?}");
        assert!((real[1] + 0.25).abs() <= model.output_scale(), "{real:?}");
        // A pixel count that is not a whole image is refused.
        assert!(matches!(
            model.classify_pixels(&[0; 5], 1),
            Err(RuntimeError::Input(_))
        ));
    }

    #[test]
    fn codes_at_the_top_of_their_range_are_counted() {
        // Calibrated at half its reach, the convolution's code is twice the pixel, saturated
        // at 255: pixels 255 and 200 saturate, 128 too (256), 127 (254) and 100 (200) do not.
        let model = IntegerModel::new(&tiny(), &[0.75, 0.75, 0.75, 5.0], 8).unwrap();
        let pixels = [255, 0, 100, 200, 127, 128, 0, 0];
        let mut saturation = model.saturation_counters();
        let logits = model
            .classify_counting_saturation(&pixels, 2, &mut saturation)
            .unwrap();
        assert_eq!(logits, model.classify_pixels(&pixels, 2).unwrap());
        // The classifier's 32-bit logits never saturate and are not counted.
        assert_eq!(
            saturation,
            vec![Saturation {
                op: 0,
                kind: "conv",
                at_ends: 3,
                codes: 8
            }]
        );
    }

    #[test]
    fn an_accumulator_that_could_overflow_is_refused() {
        let mut model = tiny();
        // A 16-bit code of 32,767 on every weight of a 4-input row at 255 per input is far
        // below 2^31; 2^30 per weight is not.
        if let TensorData::Codes(weights) = &mut model.layers[3].tensors[0] {
            weights.widths[0] = 32;
            weights.codes[..4].copy_from_slice(&[1 << 30; 4]);
        }
        let refused = IntegerModel::new(&model, &[1.5, 1.5, 1.5, 5.0], 8).unwrap_err();
        assert!(matches!(refused, RuntimeError::Integer(_)), "{refused}");
        assert!(refused.to_string().contains("overflow"), "{refused}");
    }
}
