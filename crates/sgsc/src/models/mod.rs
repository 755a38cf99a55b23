//! Models stage: networks declared in a config ([`config`]) and built from it ([`network`]),
//! with the transformer's pieces in [`transformer`]. Every conv and linear layer is quantized;
//! the paper's MNIST CNN lives in `configs/mnist-cnn.toml`, its char-level transformer in
//! `configs/names-transformer.toml`, not in code.

pub mod config;
pub mod generate;
pub mod network;
pub mod state_dict;
pub mod transformer;

pub use config::{LayerConfig, ModelConfig};
pub use network::{Network, ParameterGroup, QuantizedLayerInfo, Weights};

/// Small networks for unit tests across the stages.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{LayerConfig, ModelConfig, Network};
    use tch::Tensor;

    /// Overwrites `tensor` (keeping its shape) with `values`, outside autograd.
    pub(crate) fn set_values(tensor: &Tensor, values: &[f32]) {
        let shape = tensor.size();
        tch::no_grad(|| {
            tensor
                .shallow_clone()
                .copy_(&Tensor::from_slice(values).view(shape.as_slice()))
        });
    }

    /// conv(1->2, k3) relu batch_norm conv(2->3, k3) flatten linear(3*2*2 -> 4, bias) on a 1x6x6
    /// input: 2*9 + 3*2*9 + 4*12 = 120 weights.
    pub(crate) fn tiny_network() -> Network {
        let config = ModelConfig {
            input: vec![1, 6, 6],
            layers: vec![
                LayerConfig::Conv2d {
                    out_channels: 2,
                    kernel: 3,
                    stride: 1,
                    padding: 0,
                    bias: false,
                    groups: 1,
                },
                LayerConfig::Relu,
                LayerConfig::BatchNorm { affine: false },
                LayerConfig::Conv2d {
                    out_channels: 3,
                    kernel: 3,
                    stride: 1,
                    padding: 0,
                    bias: false,
                    groups: 1,
                },
                LayerConfig::Flatten,
                LayerConfig::Linear {
                    out_features: 4,
                    bias: true,
                },
            ],
        };
        Network::new(&config, 8.0, tch::Device::Cpu).expect("a valid fixture")
    }

    /// A two-block char-level transformer on 6 positions: vocabulary 5, d_model 8, 2 heads of 4,
    /// MLP 2x (16 hidden units), final layer norm and a linear head.
    pub(crate) fn tiny_transformer() -> Network {
        let block = LayerConfig::TransformerBlock {
            heads: 2,
            mlp_ratio: 2,
            bias: false,
        };
        let config = ModelConfig {
            input: vec![6],
            layers: vec![
                LayerConfig::Embedding {
                    vocab_size: 5,
                    d_model: 8,
                },
                block.clone(),
                block,
                LayerConfig::LayerNorm,
                LayerConfig::Linear {
                    out_features: 5,
                    bias: false,
                },
            ],
        };
        tch::manual_seed(7);
        Network::new(&config, 8.0, tch::Device::Cpu).expect("a valid fixture")
    }
}
