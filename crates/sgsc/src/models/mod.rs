//! Models stage: networks declared in a config ([`config`]) and built from it ([`network`]).
//! Every conv and linear layer is quantized; the paper's MNIST CNN lives in
//! `configs/mnist-cnn.toml`, not in code.

pub mod config;
pub mod network;

pub use config::{LayerConfig, ModelConfig};
pub use network::{Network, ParameterGroup, QuantizedLayerInfo};
