//! The pieces of a decoder-only, pre-LayerNorm transformer (METHOD.md §5): embeddings, layer
//! normalisation and the block, with causal multi-head attention and a GELU MLP.
//!
//! ```text
//! x = x + projection(attention(query(ln1(x)), key(ln1(x)), value(ln1(x))))    causal, per head
//! x = x + mlp_out(gelu(mlp_in(ln2(x))))
//! ```
//!
//! Every linear layer of a block is quantized per output channel, like a conv. Heads are slices of
//! `head_dim` rows of query, key and value; the head count is read from the query's rows, so a
//! block whose heads were removed (see `prune`) needs no other bookkeeping.

use super::network::Linear;
use crate::error::{Error, Result};
use crate::quant::QuantizedWeight;
use tch::{Device, Kind, Tensor};

/// Layer-norm epsilon (PyTorch's default).
pub const LAYER_NORM_EPS: f64 = 1e-5;
/// Standard deviation of the starting weights and embeddings (GPT-2's).
const INIT_STD: f64 = 0.02;

/// Names of a block's quantized linear layers, in the order the forward pass uses them.
pub const BLOCK_PARTS: [&str; 6] = ["query", "key", "value", "projection", "mlp_in", "mlp_out"];
/// Position of the value layer in [`BLOCK_PARTS`]: its rows decide whether a head is alive.
pub const VALUE_PART: usize = 2;
/// Position of the MLP's first layer in [`BLOCK_PARTS`]: its rows are the hidden units.
pub const MLP_IN_PART: usize = 4;

fn normal(shape: &[i64], device: Device) -> Result<Tensor> {
    Ok(Tensor::f_randn(shape, (Kind::Float, device))?
        .f_mul_scalar(INIT_STD)?
        .set_requires_grad(true))
}

/// Layer normalisation over the last dimension, with a learned scale and shift (kept in float).
#[derive(Debug)]
pub struct LayerNorm {
    /// Scale per feature.
    pub weight: Tensor,
    /// Shift per feature.
    pub bias: Tensor,
}

impl LayerNorm {
    /// Scale 1 and shift 0 over `features`.
    pub fn new(features: i64, device: Device) -> Result<Self> {
        Ok(LayerNorm {
            weight: Tensor::f_ones([features], (Kind::Float, device))?.set_requires_grad(true),
            bias: Tensor::f_zeros([features], (Kind::Float, device))?.set_requires_grad(true),
        })
    }

    /// Normalises each position's features.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let features = self.weight.size()[0];
        Ok(x.f_layer_norm(
            [features],
            Some(&self.weight),
            Some(&self.bias),
            LAYER_NORM_EPS,
            false,
        )?)
    }
}

/// Token and learned position embeddings (kept in float).
#[derive(Debug)]
pub struct Embedding {
    /// `[vocab_size, d_model]`.
    pub token: Tensor,
    /// `[context, d_model]`.
    pub position: Tensor,
}

impl Embedding {
    /// Random embeddings (normal, std 0.02).
    pub fn new(vocab_size: i64, context: i64, d_model: i64, device: Device) -> Result<Self> {
        Ok(Embedding {
            token: normal(&[vocab_size, d_model], device)?,
            position: normal(&[context, d_model], device)?,
        })
    }

    /// `[batch, time]` token ids to `[batch, time, d_model]`. An id outside the vocabulary is an
    /// error, not a crash.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let time = *ids
            .size()
            .last()
            .ok_or_else(|| Error::Model("token ids need a [batch, time] shape".into()))?;
        let vocab_size = self.token.size()[0];
        if ids.numel() > 0 {
            let (low, high) = (ids.f_min()?.int64_value(&[]), ids.f_max()?.int64_value(&[]));
            if low < 0 || high >= vocab_size {
                return Err(Error::Model(format!(
                    "token ids {low}..={high} fall outside the vocabulary of {vocab_size}"
                )));
            }
        }
        let tokens = Tensor::f_embedding(&self.token, ids, -1, false, false)?;
        let positions = self.position.f_narrow(0, 0, time)?;
        Ok(tokens.f_add(&positions)?)
    }
}

/// One pre-LayerNorm transformer block.
#[derive(Debug)]
pub struct TransformerBlock {
    /// Features per head (fixed; the head count follows from the query's rows).
    pub head_dim: i64,
    /// Normalisation before attention.
    pub attention_norm: LayerNorm,
    /// Query, key, value, output projection, MLP in, MLP out (the order of [`BLOCK_PARTS`]).
    pub parts: [Linear; 6],
    /// Normalisation before the MLP.
    pub mlp_norm: LayerNorm,
}

impl TransformerBlock {
    /// A block of `heads` heads over a `d_model`-wide stream with `mlp_ratio * d_model` hidden
    /// units; every quantized channel starts at `initial_bit_depth` bits.
    pub fn new(
        d_model: i64,
        heads: i64,
        mlp_ratio: i64,
        bias: bool,
        initial_bit_depth: f64,
        device: Device,
    ) -> Result<Self> {
        if heads < 1 || d_model % heads != 0 || mlp_ratio < 1 {
            return Err(Error::Model(format!(
                "transformer_block: d_model {d_model} must split into {heads} heads, and mlp_ratio {mlp_ratio} must be positive"
            )));
        }
        let hidden = mlp_ratio * d_model;
        let shapes = [
            [d_model, d_model],
            [d_model, d_model],
            [d_model, d_model],
            [d_model, d_model],
            [hidden, d_model],
            [d_model, hidden],
        ];
        let linear = |[out, input]: [i64; 2]| -> Result<Linear> {
            Ok(Linear {
                weight: QuantizedWeight::new(normal(&[out, input], device)?, initial_bit_depth)?,
                bias: bias
                    .then(|| -> Result<Tensor> {
                        Ok(Tensor::f_zeros([out], (Kind::Float, device))?.set_requires_grad(true))
                    })
                    .transpose()?,
            })
        };
        let [query, key, value, projection, mlp_in, mlp_out] = shapes;
        Ok(TransformerBlock {
            head_dim: d_model / heads,
            attention_norm: LayerNorm::new(d_model, device)?,
            parts: [
                linear(query)?,
                linear(key)?,
                linear(value)?,
                linear(projection)?,
                linear(mlp_in)?,
                linear(mlp_out)?,
            ],
            mlp_norm: LayerNorm::new(d_model, device)?,
        })
    }

    /// Heads still in the block.
    pub fn heads(&self) -> i64 {
        self.parts[0].weight.weight.size()[0] / self.head_dim
    }

    /// Runs the block on `[batch, time, d_model]`. `weight` gives the weights each quantized
    /// layer multiplies by, called once per part in [`BLOCK_PARTS`] order.
    pub fn forward(
        &self,
        x: &Tensor,
        weight: &mut impl FnMut(&QuantizedWeight) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let [query, key, value, projection, mlp_in, mlp_out] = &self.parts;
        let mut apply = |linear: &Linear, input: &Tensor| -> Result<Tensor> {
            Ok(input.f_linear(&weight(&linear.weight)?, linear.bias.as_ref())?)
        };
        let (batch, time) = (x.size()[0], x.size()[1]);
        let heads = self.heads();
        let split_heads = |t: Tensor| -> Result<Tensor> {
            Ok(t.f_view([batch, time, heads, self.head_dim])?
                .f_transpose(1, 2)?)
        };
        let normed = self.attention_norm.forward(x)?;
        let q = split_heads(apply(query, &normed)?)?;
        let k = split_heads(apply(key, &normed)?)?;
        let v = split_heads(apply(value, &normed)?)?;
        let attended = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        )?
        .f_transpose(1, 2)?
        .f_reshape([batch, time, heads * self.head_dim])?;
        let x = x.f_add(&apply(projection, &attended)?)?;
        let hidden = apply(mlp_in, &self.mlp_norm.forward(&x)?)?.f_gelu("none")?;
        Ok(x.f_add(&apply(mlp_out, &hidden)?)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::models::fixtures::tiny_transformer;
    use crate::models::{LayerConfig, ModelConfig, Network};
    use tch::{Device, Kind, Tensor};

    fn ids(values: &[i64]) -> Tensor {
        Tensor::from_slice(values).view([1, values.len() as i64])
    }

    #[test]
    fn logits_come_one_row_per_position() {
        let network = tiny_transformer();
        assert_eq!(network.output_features, 5);
        let logits = network
            .forward(
                &Tensor::zeros([3, 6], (Kind::Int64, Device::Cpu)),
                false,
                true,
            )
            .unwrap();
        assert_eq!(logits.size(), vec![18, 5]);
        // Six quantized layers per block, then the head.
        assert_eq!(network.quantized.len(), 13);
        assert_eq!(network.quantized[3].name, "layers.1.projection");
        assert_eq!(network.quantized[3].source, Some(2));
        assert_eq!(network.quantized[11].source, Some(10));
        assert_eq!(network.quantized[12].source, None);
    }

    #[test]
    fn no_position_sees_the_future() {
        let network = tiny_transformer();
        let original = [1, 4, 2, 0, 3, 1];
        let before = network.forward(&ids(&original), false, true).unwrap();
        for t in 0..6 {
            let mut changed = original;
            changed[t] = (changed[t] + 2) % 5;
            let after = network.forward(&ids(&changed), false, true).unwrap();
            let moved: Vec<f64> = (0..6)
                .map(|position| {
                    (after.get(position) - before.get(position))
                        .abs()
                        .max()
                        .double_value(&[])
                })
                .collect();
            for (position, &difference) in moved.iter().enumerate() {
                if position < t {
                    assert_eq!(difference, 0.0, "token {t} moved the logits at {position}");
                } else if position == t {
                    assert!(difference > 1e-4, "token {t} did not move its own logits");
                }
            }
        }
    }

    #[test]
    fn token_ids_outside_the_vocabulary_are_errors() {
        let network = tiny_transformer();
        for bad in [[0, 5, 1, 1, 1, 1], [0, -1, 1, 1, 1, 1]] {
            assert!(matches!(
                network.forward(&ids(&bad), false, true),
                Err(Error::Model(_))
            ));
        }
    }

    #[test]
    fn heads_must_divide_the_model_width() {
        let config = ModelConfig {
            input: vec![4],
            layers: vec![
                LayerConfig::Embedding {
                    vocab_size: 3,
                    d_model: 6,
                },
                LayerConfig::TransformerBlock {
                    heads: 4,
                    mlp_ratio: 4,
                    bias: false,
                },
            ],
        };
        assert!(matches!(
            Network::new(&config, 8.0, Device::Cpu),
            Err(Error::Model(_))
        ));
        let images = ModelConfig {
            input: vec![1, 6, 6],
            layers: vec![LayerConfig::TransformerBlock {
                heads: 1,
                mlp_ratio: 4,
                bias: false,
            }],
        };
        assert!(matches!(
            Network::new(&images, 8.0, Device::Cpu),
            Err(Error::Model(_))
        ));
    }
}
