//! Small synthetic models that use every part of the format: a CNN (convolution, batch norm,
//! pooling, linear) and a transformer (embedding, block, layer norm). The format tests build
//! them, and `examples/fuzz_seeds.rs` writes them as the fuzzer's seed files.

use half::f16;
use sgsc_runtime::model::{
    BatchNorm, Block, Dense, Layer, Metadata, Norm, PackedModel, QuantizedMatrix,
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

/// A layer of `rows` outputs over `columns` inputs, see [`matrix`].
pub fn dense(numbers: &mut Numbers, rows: usize, columns: usize, bias: bool) -> Dense {
    Dense {
        weight: matrix(numbers, rows, columns),
        bias: bias.then(|| numbers.floats(rows)),
    }
}

/// A CNN on 2x7x6 images with a residual block (a strided depthwise convolution, and a strided
/// projection of the skip), the pooling kinds (max pooling with stride and padding, average
/// pooling, global average pooling) and a batch norm on a vector.
pub fn pooled() -> PackedModel {
    let mut n = Numbers(7);
    let pool = |kernel, stride, padding| sgsc_runtime::model::Pool {
        kernel,
        stride,
        padding,
    };
    PackedModel {
        metadata: Metadata {
            input: vec![2, 7, 6],
            normalization: None,
            vocabulary: None,
            classes: None,
            data: None,
            certificate: None,
            summary: None,
        },
        layers: vec![
            Layer::Conv2d {
                in_channels: 2,
                kernel: 3,
                stride: 1,
                padding: 1,
                groups: 1,
                dense: dense(&mut n, 4, 18, true),
            },
            Layer::Relu,
            Layer::Residual,
            Layer::Conv2d {
                in_channels: 4,
                kernel: 3,
                stride: 2,
                padding: 1,
                groups: 4,
                dense: dense(&mut n, 4, 9, false),
            },
            Layer::Add {
                projection: Some((dense(&mut n, 4, 4, false), 2)),
            },
            Layer::MaxPool(pool(3, Some(1), 1)),
            Layer::AvgPool(pool(3, Some(2), 1)),
            Layer::GlobalAvgPool,
            Layer::Flatten,
            Layer::Linear(dense(&mut n, 5, 4, true)),
            Layer::BatchNorm(BatchNorm {
                mean: n.floats(5),
                variance: n.floats(5).iter().map(|v| v.abs() + 0.5).collect(),
                affine: None,
                eps: 1e-5,
            }),
            Layer::Linear(dense(&mut n, 3, 5, false)),
        ],
    }
}

/// A CNN on 1x8x8 images: every image-model layer kind.
pub fn cnn() -> PackedModel {
    let mut n = Numbers(1);
    PackedModel {
        metadata: Metadata {
            input: vec![1, 8, 8],
            normalization: Some(sgsc_runtime::model::Normalization::uniform(0.1307, 0.3081)),
            vocabulary: None,
            classes: None,
            data: None,
            certificate: Some(serde_json::json!({"met": true})),
            summary: None,
        },
        layers: vec![
            Layer::Conv2d {
                in_channels: 1,
                kernel: 3,
                stride: 1,
                padding: 1,
                groups: 1,
                dense: dense(&mut n, 5, 9, true),
            },
            Layer::Relu,
            Layer::BatchNorm(BatchNorm {
                mean: n.floats(5),
                variance: n.floats(5).iter().map(|v| v.abs() + 0.5).collect(),
                affine: Some((n.floats(5), n.floats(5))),
                eps: 1e-5,
            }),
            Layer::MaxPool(sgsc_runtime::model::Pool {
                kernel: 2,
                stride: None,
                padding: 0,
            }),
            Layer::Flatten,
            Layer::Linear(dense(&mut n, 3, 80, false)),
        ],
    }
}

/// A layer norm of `features`.
pub fn norm(n: &mut Numbers, features: usize) -> Norm {
    Norm {
        weight: n.floats(features),
        bias: n.floats(features),
        eps: 1e-5,
    }
}

/// A one-block transformer over 6 tokens of a 5-symbol vocabulary.
pub fn transformer() -> PackedModel {
    let mut n = Numbers(2);
    let block = Block {
        d_model: 8,
        heads: 2,
        head_dim: 2,
        hidden: 6,
        attention_norm: norm(&mut n, 8),
        query: dense(&mut n, 4, 8, false),
        key: dense(&mut n, 4, 8, false),
        value: dense(&mut n, 4, 8, false),
        projection: dense(&mut n, 8, 4, false),
        mlp_norm: norm(&mut n, 8),
        mlp_in: dense(&mut n, 6, 8, false),
        mlp_out: dense(&mut n, 8, 6, false),
    };
    PackedModel {
        metadata: Metadata {
            input: vec![6],
            normalization: None,
            vocabulary: Some("\nabcé".into()),
            classes: None,
            data: None,
            certificate: None,
            summary: None,
        },
        layers: vec![
            Layer::Embedding {
                token: n.floats(40),
                position: n.floats(48),
                vocab_size: 5,
                context: 6,
                d_model: 8,
            },
            Layer::TransformerBlock(Box::new(block)),
            Layer::LayerNorm(norm(&mut n, 8)),
            Layer::Linear(dense(&mut n, 5, 8, false)),
        ],
    }
}
