//! Packing stage: a trained network written in the form it ships, the `.sgsc` file of the
//! runtime crate ([`export`]), a PyTorch-named safetensors file, or ONNX ([`onnx`]). How many
//! bytes that form takes is the size stage's ([`crate::size`]).

pub mod evaluate;
pub mod export;
pub mod onnx;
