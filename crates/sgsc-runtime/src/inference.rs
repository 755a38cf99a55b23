//! Running a packed model: its weights are dequantized once at load into dense f32 matrices,
//! then each forward pass is plain f32 arithmetic ([`crate::kernels`]); a batch of images is
//! split across threads with rayon (with the `std` feature).

use crate::error::{Result, RuntimeError};
use crate::format;
use crate::kernels::depthwise;
use crate::kernels::pool::{self, Reduce};
use crate::kernels::{self, ConvScratch, ConvShape};
use crate::layers::{LayerSpec, Pool, Shape};
use crate::model::{Dense, Layer, Metadata, PackedModel};
use crate::parallel::map_chunks;
use crate::prelude::*;

/// A linear map with dense weights `[out, in]`.
#[derive(Debug, Clone)]
struct DenseF32 {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    out: usize,
}

impl DenseF32 {
    fn new(dense: Dense) -> Self {
        DenseF32 {
            weight: dense.weight.dequantize(),
            bias: dense.bias.map(<[f32]>::to_vec),
            out: dense.weight.rows,
        }
    }

    /// The linear map `part` of `layer` (see [`Layer::dense`]).
    fn of(layer: &Layer, part: &str) -> Result<Self> {
        Ok(DenseF32::new(layer.dense(part)?))
    }

    fn apply(&self, x: &[f32], rows: usize) -> Vec<f32> {
        kernels::linear(x, rows, &self.weight, self.out, self.bias.as_deref())
    }
}

/// Layer normalisation's scale and shift over the features of a position.
#[derive(Debug, Clone)]
struct NormF32 {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl NormF32 {
    /// The norm `{prefix}weight`, `{prefix}bias` of `layer` (`prefix` is `""` or `"mlp_norm."`).
    fn of(layer: &Layer, prefix: &str, eps: f32) -> Result<Self> {
        Ok(NormF32 {
            weight: layer.required_floats(&format!("{prefix}weight"))?.to_vec(),
            bias: layer.required_floats(&format!("{prefix}bias"))?.to_vec(),
            eps,
        })
    }
}

/// A residual block's add: `x += kept`, element by element.
fn add_kept(x: &mut [f32], kept: &[f32]) {
    x.iter_mut()
        .zip(kept)
        .for_each(|(value, kept)| *value += kept);
}

/// A layer ready to run.
#[derive(Debug, Clone)]
enum Step {
    /// A convolution: one per channel group, each on its own input channels and output rows.
    Conv {
        shape: ConvShape,
        groups: Vec<DenseF32>,
    },
    /// A depthwise convolution (one input channel per group), whole.
    Depthwise {
        shape: ConvShape,
        dense: DenseF32,
    },
    Linear(DenseF32),
    Relu,
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
        /// Values per channel: a map's plane, 1 for a vector.
        plane: usize,
    },
    Pool {
        input: (usize, usize, usize),
        pool: Pool,
        reduce: Reduce,
    },
    GlobalAvgPool {
        plane: usize,
    },
    Flatten,
    Embedding {
        token: Vec<f32>,
        position: Vec<f32>,
        d_model: usize,
        vocab_size: usize,
    },
    Block(Box<BlockF32>),
    LayerNorm(NormF32),
    /// Keeps the activation for the block's add.
    Residual,
    /// Adds the kept activation, through a 1x1 convolution if the block changed its shape.
    Add {
        projection: Option<(ConvShape, DenseF32)>,
    },
}

#[derive(Debug, Clone)]
struct BlockF32 {
    heads: usize,
    head_dim: usize,
    attention_norm: NormF32,
    query: DenseF32,
    key: DenseF32,
    value: DenseF32,
    projection: DenseF32,
    mlp_norm: NormF32,
    mlp_in: DenseF32,
    mlp_out: DenseF32,
}

/// A model loaded for inference.
#[derive(Debug, Clone)]
pub struct Model {
    packed: PackedModel,
    steps: Vec<Step>,
    outputs: usize,
}

impl Model {
    /// Reads and validates a `.sgsc` file.
    #[cfg(feature = "std")]
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Model::from_bytes(&bytes)
    }

    /// Decodes and validates the bytes of a `.sgsc` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Model::new(format::decode(bytes)?)
    }

    /// Prepares a decoded model for inference (dequantizes every weight once).
    pub fn new(packed: PackedModel) -> Result<Model> {
        let shapes = packed.validated_shapes()?;
        let mut steps = Vec::with_capacity(packed.layers.len());
        let mut kept = Vec::new();
        for (index, layer) in packed.layers.iter().enumerate() {
            steps.push(step(layer, shapes.input_of(index), &mut kept)?);
        }
        Ok(Model {
            packed,
            steps,
            outputs: shapes.outputs,
        })
    }

    /// The file's metadata (input shape, vocabulary, certificate, summary).
    pub fn metadata(&self) -> &Metadata {
        &self.packed.metadata
    }

    /// The model as stored in the file.
    pub fn packed(&self) -> &PackedModel {
        &self.packed
    }

    /// Outputs per prediction: classes, or the vocabulary size.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Whether the model reads token ids (a language model) rather than images.
    pub fn is_language_model(&self) -> bool {
        self.packed.metadata.input.len() == 1
    }

    /// The values of one image, after checking that this model reads images and that `given`
    /// values (`what`: values or pixels) are `batch` whole images.
    fn image_values(&self, given: usize, batch: usize, what: &str) -> Result<usize> {
        if self.is_language_model() {
            return Err(RuntimeError::Input(
                "this model reads token ids, not images".into(),
            ));
        }
        let per_image: usize = self.packed.metadata.input.iter().product();
        if given != batch * per_image {
            return Err(RuntimeError::Input(format!(
                "{given} {what} for {batch} images of {per_image}"
            )));
        }
        Ok(per_image)
    }

    /// Logits `[batch, outputs]` of an image classifier for `images`, `batch` inputs of the
    /// model's input shape, already normalised. Images are spread over rayon's threads.
    pub fn classify(&self, images: &[f32], batch: usize) -> Result<Vec<f32>> {
        let per_image = self.image_values(images.len(), batch, "values")?;
        let logits = map_chunks(images, per_image, ConvScratch::default, |scratch, image| {
            self.run_image(image, scratch)
        });
        Ok(logits.concat())
    }

    /// Logits `[batch, outputs]` for raw 8-bit pixels, normalised as the file's metadata says
    /// (`(pixel / 255 - mean) / std`, as in training).
    pub fn classify_pixels(&self, pixels: &[u8], batch: usize) -> Result<Vec<f32>> {
        let images = self.normalized(pixels, batch)?;
        self.classify(&images, batch)
    }

    /// 8-bit pixels as the model's input values, normalised as the file's metadata says.
    fn normalized(&self, pixels: &[u8], batch: usize) -> Result<Vec<f32>> {
        self.image_values(pixels.len(), batch, "pixels")?;
        let input = &self.packed.metadata.input;
        let plane = input.iter().skip(1).product::<usize>().max(1);
        let images: Vec<f32> = match &self.packed.metadata.normalization {
            Some(n) => pixels
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    // One value for every channel, or one per channel.
                    let channel = if n.mean.len() == 1 {
                        0
                    } else {
                        (i / plane) % n.mean.len()
                    };
                    (p as f32 / 255.0 - n.mean[channel]) / n.std[channel]
                })
                .collect(),
            None => pixels.iter().map(|&p| p as f32 / 255.0).collect(),
        };
        Ok(images)
    }

    fn run_image(&self, image: &[f32], scratch: &mut ConvScratch) -> Vec<f32> {
        self.run_image_observed(image, scratch, &mut |_, _| {})
    }

    /// [`Model::run_image`], showing `observe` every layer's output with the layer's index.
    fn run_image_observed(
        &self,
        image: &[f32],
        scratch: &mut ConvScratch,
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> Vec<f32> {
        let mut x = image.to_vec();
        let mut kept = Vec::new();
        for (index, step) in self.steps.iter().enumerate() {
            match step {
                Step::Residual => kept.push(x.clone()),
                Step::Add { projection } => {
                    let skip = kept.pop().unwrap_or_default();
                    let skip = match projection {
                        Some((shape, dense)) => {
                            kernels::conv2d(&skip, shape, &dense.weight, None, scratch)
                        }
                        None => skip,
                    };
                    add_kept(&mut x, &skip);
                }
                Step::Conv { shape, groups } => {
                    let (channels, height, width) = shape.input;
                    let inputs = x.chunks_exact(channels * height * width);
                    x = groups
                        .iter()
                        .zip(inputs)
                        .flat_map(|(dense, input)| {
                            kernels::conv2d(
                                input,
                                shape,
                                &dense.weight,
                                dense.bias.as_deref(),
                                scratch,
                            )
                        })
                        .collect();
                }
                Step::Depthwise { shape, dense } => {
                    x = depthwise::depthwise_conv2d(
                        &x,
                        shape,
                        &dense.weight,
                        dense.bias.as_deref(),
                    );
                }
                Step::Linear(dense) => x = dense.apply(&x, 1),
                Step::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
                Step::BatchNorm {
                    scale,
                    shift,
                    plane,
                } => {
                    for ((values, s), b) in x.chunks_exact_mut(*plane).zip(scale).zip(shift) {
                        values.iter_mut().for_each(|v| *v = *v * s + b);
                    }
                }
                Step::Pool {
                    input,
                    pool,
                    reduce,
                } => x = pool::pool(&x, *input, pool, *reduce),
                Step::GlobalAvgPool { plane } => x = pool::global_average(&x, *plane),
                Step::Flatten => {}
                Step::Embedding { .. } | Step::Block(_) | Step::LayerNorm(_) => {
                    unreachable!("validate() keeps sequence layers out of image models")
                }
            }
            observe(index, &x);
        }
        x
    }

    /// The largest magnitude of every layer's output over `batch` images of 8-bit pixels
    /// (normalised as in [`Model::classify_pixels`]): the activation ranges that calibrate the
    /// integer path ([`crate::integer::IntegerModel`]). A maximum does not depend on the order
    /// of the images, so the threads' split changes nothing.
    pub fn layer_ranges(&self, pixels: &[u8], batch: usize) -> Result<Vec<f32>> {
        let images = self.normalized(pixels, batch)?;
        let per_image: usize = self.packed.metadata.input.iter().product();
        let layers = self.steps.len();
        let per_image_ranges = map_chunks(
            &images,
            per_image,
            ConvScratch::default,
            |scratch, image| {
                let mut ranges = vec![0.0f32; layers];
                self.run_image_observed(image, scratch, &mut |index, values| {
                    ranges[index] = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                });
                ranges
            },
        );
        let ranges = per_image_ranges
            .iter()
            .fold(vec![0.0f32; layers], |all, one| {
                all.iter().zip(one).map(|(a, b)| a.max(*b)).collect()
            });
        Ok(ranges)
    }

    /// Logits `[batch * time, vocab]` of a language model for `batch` windows of `time` token ids
    /// (`ids.len() == batch * time`, `time` at most the context): one row per position.
    pub fn next_token_logits(&self, ids: &[u32], batch: usize) -> Result<Vec<f32>> {
        if !self.is_language_model() {
            return Err(RuntimeError::Input(
                "this model reads images, not token ids".into(),
            ));
        }
        if batch == 0 || !ids.len().is_multiple_of(batch) {
            return Err(RuntimeError::Input(format!(
                "{} ids do not split into {batch} windows",
                ids.len()
            )));
        }
        let time = ids.len() / batch;
        if time == 0 || time > self.packed.metadata.input[0] {
            return Err(RuntimeError::Input(format!(
                "windows of {time} tokens; the context is 1..={}",
                self.packed.metadata.input[0]
            )));
        }
        let logits = map_chunks(ids, time, || (), |_, window| self.run_window(window))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(logits.concat())
    }

    fn run_window(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let time = ids.len();
        let mut x = Vec::new();
        let mut features = 0;
        let mut kept = Vec::new();
        for step in &self.steps {
            match step {
                Step::Residual => kept.push(x.clone()),
                Step::Add { .. } => add_kept(&mut x, &kept.pop().unwrap_or_default()),
                Step::Embedding {
                    token,
                    position,
                    d_model,
                    vocab_size,
                } => {
                    features = *d_model;
                    x = Vec::with_capacity(time * d_model);
                    for (t, &id) in ids.iter().enumerate() {
                        let id = id as usize;
                        if id >= *vocab_size {
                            return Err(RuntimeError::Input(format!(
                                "token id {id} outside the vocabulary of {vocab_size}"
                            )));
                        }
                        let row = &token[id * d_model..][..*d_model];
                        let place = &position[t * d_model..][..*d_model];
                        x.extend(row.iter().zip(place).map(|(a, b)| a + b));
                    }
                }
                Step::Block(block) => block.apply(&mut x, time, features),
                Step::LayerNorm(norm) => {
                    kernels::layer_norm(&mut x, features, &norm.weight, &norm.bias, norm.eps)
                }
                Step::Linear(dense) => {
                    x = dense.apply(&x, time);
                    features = dense.out;
                }
                Step::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
                Step::Conv { .. }
                | Step::Depthwise { .. }
                | Step::BatchNorm { .. }
                | Step::Pool { .. }
                | Step::GlobalAvgPool { .. }
                | Step::Flatten => {
                    unreachable!("validate() keeps image layers out of language models")
                }
            }
        }
        Ok(x)
    }
}

/// The step that runs `layer` on an activation of `shape`; `kept` holds the shapes kept by the
/// residual blocks open at this layer.
fn step(layer: &Layer, shape: Shape, kept: &mut Vec<(usize, usize, usize)>) -> Result<Step> {
    let map = shape.map();
    Ok(match layer.spec {
        LayerSpec::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            ..
        } if groups > 1 && map.0 == groups => Step::Depthwise {
            shape: ConvShape {
                input: map,
                out_channels,
                kernel,
                stride,
                padding,
            },
            dense: DenseF32::of(layer, "")?,
        },
        LayerSpec::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            ..
        } => {
            let conv = ConvShape {
                input: (map.0 / groups, map.1, map.2),
                out_channels: out_channels / groups,
                kernel,
                stride,
                padding,
            };
            let whole = DenseF32::of(layer, "")?;
            let rows = conv.out_channels;
            let per_group = whole.weight.len() / groups;
            let groups = (0..groups)
                .map(|group| DenseF32 {
                    weight: conv
                        .weight_by_kernel_row(&whole.weight[group * per_group..][..per_group]),
                    bias: whole
                        .bias
                        .as_ref()
                        .map(|bias| bias[group * rows..][..rows].to_vec()),
                    out: rows,
                })
                .collect();
            Step::Conv {
                shape: conv,
                groups,
            }
        }
        LayerSpec::Linear { .. } => Step::Linear(DenseF32::of(layer, "")?),
        LayerSpec::Relu => Step::Relu,
        LayerSpec::BatchNorm {
            channels,
            affine,
            eps,
        } => {
            let mean = layer.required_floats("running_mean")?;
            let variance = layer.required_floats("running_var")?;
            let (gamma, beta) = if affine {
                (
                    layer.required_floats("weight")?,
                    layer.required_floats("bias")?,
                )
            } else {
                (&[][..], &[][..])
            };
            let mut scale = Vec::with_capacity(channels);
            let mut shift = Vec::with_capacity(channels);
            for c in 0..channels {
                let inverse = 1.0 / libm::sqrtf(variance[c] + eps);
                let (gamma, beta) = if affine {
                    (gamma[c], beta[c])
                } else {
                    (1.0, 0.0)
                };
                scale.push(inverse * gamma);
                shift.push(beta - mean[c] * inverse * gamma);
            }
            Step::BatchNorm {
                scale,
                shift,
                plane: map.1 * map.2,
            }
        }
        LayerSpec::MaxPool(pool) => Step::Pool {
            input: map,
            pool,
            reduce: Reduce::Max,
        },
        LayerSpec::AvgPool(pool) => Step::Pool {
            input: map,
            pool,
            reduce: Reduce::Average,
        },
        LayerSpec::GlobalAvgPool => Step::GlobalAvgPool {
            plane: map.1 * map.2,
        },
        LayerSpec::Flatten => Step::Flatten,
        LayerSpec::Embedding {
            vocab_size,
            d_model,
            ..
        } => Step::Embedding {
            token: layer.required_floats("token.weight")?.to_vec(),
            position: layer.required_floats("position.weight")?.to_vec(),
            d_model,
            vocab_size,
        },
        LayerSpec::TransformerBlock {
            heads,
            head_dim,
            eps,
            ..
        } => Step::Block(Box::new(BlockF32 {
            heads,
            head_dim,
            attention_norm: NormF32::of(layer, "attention_norm.", eps)?,
            query: DenseF32::of(layer, "query")?,
            key: DenseF32::of(layer, "key")?,
            value: DenseF32::of(layer, "value")?,
            projection: DenseF32::of(layer, "projection")?,
            mlp_norm: NormF32::of(layer, "mlp_norm.", eps)?,
            mlp_in: DenseF32::of(layer, "mlp_in")?,
            mlp_out: DenseF32::of(layer, "mlp_out")?,
        })),
        LayerSpec::LayerNorm { eps, .. } => Step::LayerNorm(NormF32::of(layer, "", eps)?),
        LayerSpec::Residual => {
            kept.push(map);
            Step::Residual
        }
        LayerSpec::Add { projection } => {
            let skip = kept.pop().unwrap_or(map);
            Step::Add {
                projection: match projection {
                    Some(projection) => {
                        let shape = ConvShape {
                            input: skip,
                            out_channels: projection.out_channels,
                            kernel: 1,
                            stride: projection.stride,
                            padding: 0,
                        };
                        let mut dense = DenseF32::of(layer, "projection")?;
                        dense.weight = shape.weight_by_kernel_row(&dense.weight);
                        Some((shape, dense))
                    }
                    None => None,
                },
            }
        }
    })
}

impl BlockF32 {
    /// `x += projection(attention(ln1(x)))`, then `x += mlp_out(gelu(mlp_in(ln2(x))))`.
    fn apply(&self, x: &mut [f32], time: usize, features: usize) {
        let mut normed = x.to_vec();
        let norm = &self.attention_norm;
        kernels::layer_norm(&mut normed, features, &norm.weight, &norm.bias, norm.eps);
        let q = self.query.apply(&normed, time);
        let k = self.key.apply(&normed, time);
        let v = self.value.apply(&normed, time);
        let attended = kernels::causal_attention(&q, &k, &v, time, self.heads, self.head_dim);
        for (value, update) in x.iter_mut().zip(self.projection.apply(&attended, time)) {
            *value += update;
        }
        let mut normed = x.to_vec();
        let norm = &self.mlp_norm;
        kernels::layer_norm(&mut normed, features, &norm.weight, &norm.bias, norm.eps);
        let mut hidden = self.mlp_in.apply(&normed, time);
        kernels::gelu(&mut hidden);
        for (value, update) in x.iter_mut().zip(self.mlp_out.apply(&hidden, time)) {
            *value += update;
        }
    }
}
