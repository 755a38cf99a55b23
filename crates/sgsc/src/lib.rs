//! sgsc: safety-guided self-compression of neural networks.
//!
//! The library follows the pipeline, one folder per stage:
//! [`data`] → [`quant`] → [`models`] → [`preserve`] → [`train`] → [`prune`] → [`pack`] →
//! [`report`], and [`sweep`] runs many of them. The `sgsc` binary ([`cli`]) sits
//! on top; dependencies point from the CLI down to the stages, never back up.

pub mod cli;
pub mod data;
pub mod error;
pub mod models;
pub mod pack;
pub mod preserve;
pub mod prune;
pub mod quant;
pub mod report;
pub mod sweep;
pub mod train;

pub use error::{Error, Result};
