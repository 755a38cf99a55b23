//! Small synthetic models that use every part of the format: a CNN (convolution, batch norm,
//! pooling, linear) and a transformer (embedding, block, layer norm). The format tests build
//! them, and `examples/fuzz_seeds.rs` writes them as the fuzzer's seed files.

use half::f16;
use sgsc_runtime::model::{
    Layer, LayerSpec, Metadata, PackedModel, Pool, Projection, QuantizedMatrix, Storage, TensorData,
};

/// A small deterministic generator (the tests need varied numbers, not statistics).
pub struct Numbers(pub u64);

impl Numbers {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// A number in [-1, 1).
    pub fn float(&mut self) -> f32 {
        (self.next() % 2000) as f32 / 1000.0 - 1.0
    }

    /// `count` numbers in [-1, 1).
    pub fn floats(&mut self, count: usize) -> Vec<f32> {
        (0..count).map(|_| self.float()).collect()
    }
}

/// A matrix whose rows use widths 0 to 8 in turn, with codes at both extremes of each width.
pub fn matrix(numbers: &mut Numbers, rows: usize, columns: usize) -> QuantizedMatrix {
    let mut widths = Vec::new();
    let mut codes = Vec::new();
    let mut exponents = Vec::new();
    for row in 0..rows {
        let width = (row % 9) as u8;
        widths.push(width);
        exponents.push(if width == 0 {
            f16::ZERO
        } else {
            f16::from_f32(-(row as f32) / 3.0)
        });
        for column in 0..columns {
            codes.push(match width {
                0 => 0,
                w => {
                    let half = 1i64 << (w - 1);
                    let code = match column {
                        0 => -half,
                        1 => half - 1,
                        _ => (numbers.next() as i64 % (2 * half)) - half,
                    };
                    code as i32
                }
            });
        }
    }
    QuantizedMatrix {
        rows,
        columns,
        widths,
        exponents,
        codes,
    }
}

/// A layer described by `spec`, its tensors filled in the order it lists them: codes by
/// [`matrix`], floats from `numbers` (variances made positive).
pub fn layer(numbers: &mut Numbers, spec: LayerSpec) -> Layer {
    let tensors = spec
        .stored_tensors()
        .iter()
        .map(|stored| {
            let (rows, columns) = stored.rows_and_columns().unwrap();
            match stored.storage {
                Storage::Codes => TensorData::Codes(matrix(numbers, rows, columns)),
                Storage::Floats => TensorData::Floats(numbers.floats(rows * columns)),
                Storage::NonNegative => TensorData::Floats(
                    numbers
                        .floats(rows * columns)
                        .iter()
                        .map(|v| v.abs() + 0.5)
                        .collect(),
                ),
            }
        })
        .collect();
    Layer { spec, tensors }
}

/// The layers of `specs`, see [`layer`].
pub fn layers(numbers: &mut Numbers, specs: Vec<LayerSpec>) -> Vec<Layer> {
    specs.into_iter().map(|spec| layer(numbers, spec)).collect()
}

/// A convolution's description.
pub fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    groups: usize,
) -> LayerSpec {
    LayerSpec::Conv2d {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        bias,
        groups,
    }
}

/// A linear layer's description.
pub fn linear(in_features: usize, out_features: usize, bias: bool) -> LayerSpec {
    LayerSpec::Linear {
        in_features,
        out_features,
        bias,
    }
}

/// Metadata for an input of `input` and nothing else.
fn metadata(input: Vec<usize>) -> Metadata {
    Metadata {
        input,
        normalization: None,
        vocabulary: None,
        classes: None,
        data: None,
        certificate: None,
        summary: None,
    }
}

/// A CNN on 2x7x6 images with a residual block (a strided depthwise convolution, and a strided
/// projection of the skip), the pooling kinds (max pooling with stride and padding, average
/// pooling, global average pooling) and a batch norm on a vector.
pub fn pooled() -> PackedModel {
    let pool = |kernel, stride, padding| Pool {
        kernel,
        stride,
        padding,
    };
    let specs = vec![
        conv(2, 4, 3, 1, 1, true, 1),
        LayerSpec::Relu,
        LayerSpec::Residual,
        conv(4, 4, 3, 2, 1, false, 4),
        LayerSpec::Add {
            projection: Some(Projection {
                in_channels: 4,
                out_channels: 4,
                stride: 2,
            }),
        },
        LayerSpec::MaxPool(pool(3, Some(1), 1)),
        LayerSpec::AvgPool(pool(3, Some(2), 1)),
        LayerSpec::GlobalAvgPool,
        LayerSpec::Flatten,
        linear(4, 5, true),
        LayerSpec::BatchNorm {
            channels: 5,
            affine: false,
            eps: 1e-5,
        },
        linear(5, 3, false),
    ];
    PackedModel {
        metadata: metadata(vec![2, 7, 6]),
        layers: layers(&mut Numbers(7), specs),
    }
}

/// A CNN on 1x8x8 images: every image-model layer kind.
pub fn cnn() -> PackedModel {
    let specs = vec![
        conv(1, 5, 3, 1, 1, true, 1),
        LayerSpec::Relu,
        LayerSpec::BatchNorm {
            channels: 5,
            affine: true,
            eps: 1e-5,
        },
        LayerSpec::MaxPool(Pool {
            kernel: 2,
            stride: None,
            padding: 0,
        }),
        LayerSpec::Flatten,
        linear(80, 3, false),
    ];
    PackedModel {
        metadata: Metadata {
            normalization: Some(sgsc_runtime::model::Normalization::uniform(0.1307, 0.3081)),
            certificate: Some(serde_json::json!({"met": true})),
            ..metadata(vec![1, 8, 8])
        },
        layers: layers(&mut Numbers(1), specs),
    }
}

/// A one-block transformer over 6 tokens of a 5-symbol vocabulary.
pub fn transformer() -> PackedModel {
    let specs = vec![
        LayerSpec::Embedding {
            vocab_size: 5,
            context: 6,
            d_model: 8,
        },
        LayerSpec::TransformerBlock {
            d_model: 8,
            heads: 2,
            head_dim: 2,
            hidden: 6,
            bias: false,
            eps: 1e-5,
        },
        LayerSpec::LayerNorm {
            features: 8,
            eps: 1e-5,
        },
        linear(8, 5, false),
    ];
    PackedModel {
        metadata: Metadata {
            vocabulary: Some("\nabcé".into()),
            ..metadata(vec![6])
        },
        layers: layers(&mut Numbers(2), specs),
    }
}
