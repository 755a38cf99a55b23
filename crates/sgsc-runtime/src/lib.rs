//! Pure-Rust runtime for packed `.sgsc` model files: no libtorch, no training code.
//!
//! - [`format`] reads and writes the bytes (layout in `docs/format.md`), validating everything;
//! - [`layers`] describes every layer kind once: what a file stores of it and its shape rule;
//! - [`model`] is what a file holds: layers with integer codes at per-channel widths;
//! - [`inference`] dequantizes once and runs image classifiers and language models;
//! - [`integer`] runs image classifiers on integers only (`docs/integer.md`);
//! - `kernels` is the f32 arithmetic (private), [`bits`] the bit packing.
//!
//! ```no_run
//! let model = sgsc_runtime::Model::load("model.sgsc")?;
//! let logits = model.classify(&vec![0.0; 784], 1)?;
//! # Ok::<(), sgsc_runtime::RuntimeError>(())
//! ```

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod bits;
pub mod error;
pub mod format;
pub mod inference;
pub mod integer;
mod kernels;
pub mod layers;
pub mod model;
mod parallel;
mod prelude;

pub use error::{Result, RuntimeError};
pub use inference::Model;
pub use integer::IntegerModel;
pub use kernels::ConvShape;
pub use model::PackedModel;
