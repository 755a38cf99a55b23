//! Depthwise convolution of a `[c, h, w]` map: output channel `o` convolves input channel
//! `o / multiplier` alone with its own `k x k` filter (the reference implementation: a direct
//! loop over taps, which for one input channel per filter does the work a matrix product would
//! pad to a whole tile).

use super::ConvShape;
use crate::prelude::*;

/// Output `[c * multiplier, oh, ow]` of a depthwise convolution. `shape.input` is the whole
/// input (all its channels), `shape.out_channels` the whole output; `weight` holds each output
/// channel's `k * k` taps row-major, `bias` one value per output channel.
pub fn depthwise_conv2d(
    image: &[f32],
    shape: &ConvShape,
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (channels, height, width) = shape.input;
    let (kernel, stride, padding) = (shape.kernel, shape.stride, shape.padding);
    let (oh, ow) = shape.output();
    let multiplier = shape.out_channels / channels.max(1);
    let mut output = vec![0.0f32; shape.out_channels * oh * ow];
    for (o, plane) in output.chunks_exact_mut(oh * ow).enumerate() {
        let input = &image[(o / multiplier) * height * width..][..height * width];
        let taps = &weight[o * kernel * kernel..][..kernel * kernel];
        let start = bias.map_or(0.0, |bias| bias[o]);
        for (y, row) in plane.chunks_exact_mut(ow).enumerate() {
            for (x, value) in row.iter_mut().enumerate() {
                let mut sum = start;
                for ky in 0..kernel {
                    let Some(iy) = (y * stride + ky).checked_sub(padding) else {
                        continue;
                    };
                    if iy >= height {
                        continue;
                    }
                    for kx in 0..kernel {
                        let Some(ix) = (x * stride + kx).checked_sub(padding) else {
                            continue;
                        };
                        if ix < width {
                            sum += taps[ky * kernel + kx] * input[iy * width + ix];
                        }
                    }
                }
                *value = sum;
            }
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_output_channel_convolves_its_own_input_channel() {
        // Two 3x3 input channels, two filters per channel (multiplier 2), kernel 2, padding 1,
        // stride 2: output 2x2 per filter.
        let image = [
            1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, // channel 0
            -1.0, 0.0, 1.0, 0.0, 2.0, 0.0, 1.0, 0.0, -1.0, // channel 1
        ];
        let shape = ConvShape {
            input: (2, 3, 3),
            out_channels: 4,
            kernel: 2,
            stride: 2,
            padding: 1,
        };
        let weight = [
            1.0, 0.0, 0.0, 0.0, // filter 0: top-left tap
            0.0, 0.0, 0.0, 1.0, // filter 1: bottom-right tap
            1.0, 1.0, 1.0, 1.0, // filter 2: window sum
            0.0, 0.0, 0.0, 2.0, // filter 3: twice bottom-right
        ];
        let bias = [0.0, 0.5, 0.0, -1.0];
        let got = depthwise_conv2d(&image, &shape, &weight, Some(&bias));
        // Windows start at rows/columns -1 and 1: top-left taps at (-1,-1), (-1,1), (1,-1),
        // (1,1); bottom-right taps at (0,0), (0,2), (2,0), (2,2).
        let by_hand = [
            0.0, 0.0, 0.0, 5.0, // filter 0 on channel 0
            1.5, 3.5, 7.5, 9.5, // filter 1 on channel 0, + 0.5
            -1.0, 1.0, 1.0, 1.0, // filter 2 on channel 1: window sums
            -3.0, 1.0, 1.0, -3.0, // filter 3 on channel 1: 2 * tap - 1
        ];
        assert_eq!(got, by_hand);
    }
}
