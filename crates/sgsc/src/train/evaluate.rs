//! Accuracy and loss of a network on a whole split, in evaluation mode (running statistics, no
//! augmentation, no gradient).

use crate::data::Split;
use crate::data::{InputOptions, Tensors};
use crate::error::Result;
use crate::models::Network;
use serde::Serialize;
use tch::{Device, Kind, Reduction};

/// Mean cross-entropy and accuracy on a split, per prediction: per image, or per character of a
/// language model (its loss is then in nats per character).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    /// Mean cross-entropy (nats).
    pub loss: f64,
    /// Fraction of predictions that were right (images classified, next characters guessed).
    pub accuracy: f64,
    /// Examples evaluated.
    pub examples: usize,
}

/// Evaluates `network` (quantized when `quantize`) on every example of `split`.
pub fn evaluate(
    network: &Network,
    split: &Split,
    input: &InputOptions,
    quantize: bool,
    batch_size: usize,
    device: Device,
) -> Result<Evaluation> {
    let _no_grad = tch::no_grad_guard();
    let positions: Vec<usize> = (0..split.len()).collect();
    let (mut loss_sum, mut correct, mut predictions) = (0.0, 0i64, 0i64);
    for chunk in positions.chunks(batch_size.max(1)) {
        let (inputs, labels) = split.tensors(chunk, input, None)?;
        let (inputs, labels) = (inputs.f_to_device(device)?, labels.f_to_device(device)?);
        let logits = network.forward(&inputs, false, quantize)?;
        predictions += labels.size()[0];
        loss_sum += logits
            .f_cross_entropy_loss::<tch::Tensor>(&labels, None, Reduction::Sum, -100, 0.0)?
            .double_value(&[]);
        correct += logits
            .f_argmax(-1, false)?
            .f_eq_tensor(&labels)?
            .f_sum(Kind::Int64)?
            .int64_value(&[]);
    }
    let predictions = predictions.max(1) as f64;
    Ok(Evaluation {
        loss: loss_sum / predictions,
        accuracy: correct as f64 / predictions,
        examples: split.len(),
    })
}
