//! What a packed file holds: metadata, and the layers with their tensors in stored form
//! (integer codes with per-channel widths and exponents; floats where the model keeps floats).
//! Nothing here runs a model; see [`crate::inference`] for that.

use crate::error::{Result, RuntimeError};
pub use crate::layers::{LayerSpec, Pool, Projection, Shape, Storage, StoredTensor};
use crate::prelude::*;
use half::f16;
use serde::{Deserialize, Serialize};

/// A weight matrix quantized per row (output channel): `w[r][c] = code[r][c] * 2^exponent[r]`.
/// A convolution's `[out, in, k, k]` weights are stored as `out` rows of `in * k * k`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    /// Rows (output channels).
    pub rows: usize,
    /// Columns (weights per output channel).
    pub columns: usize,
    /// Stored two's-complement width of each row's codes, 0 to 32 (0: every code is 0).
    pub widths: Vec<u8>,
    /// Exponent of each row (`2^e` is the quantization step); ignored for rows of width 0.
    pub exponents: Vec<f16>,
    /// Codes, row-major, `rows * columns`; each fits its row's width.
    pub codes: Vec<i32>,
}

impl QuantizedMatrix {
    /// Dense float weights, row-major: `code * 2^e`, computed in f32 like the training side.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut dense = Vec::with_capacity(self.codes.len());
        for row in 0..self.rows {
            let step = libm::exp2f(f32::from(self.exponents[row]));
            let codes = &self.codes[row * self.columns..(row + 1) * self.columns];
            dense.extend(codes.iter().map(|&code| code as f32 * step));
        }
        dense
    }

    /// Bits of all stored codes.
    pub fn code_bits(&self) -> usize {
        self.widths.iter().map(|&w| w as usize * self.columns).sum()
    }
}

/// What one stored tensor holds.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Integer codes quantized per row (the weights of conv and linear layers).
    Codes(QuantizedMatrix),
    /// Plain f32 values.
    Floats(Vec<f32>),
}

/// A quantized linear map of a layer, borrowed: weights `[out, in]` (rows are outputs) and an
/// optional float bias `[out]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dense<'a> {
    /// Weights.
    pub weight: &'a QuantizedMatrix,
    /// Bias.
    pub bias: Option<&'a [f32]>,
}

/// One layer: its description and the tensors that [`LayerSpec::stored_tensors`] lists for it,
/// in that order. [`PackedModel::validate`] checks that they match.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// What the layer is, with its dimensions.
    pub spec: LayerSpec,
    /// Its tensors.
    pub tensors: Vec<TensorData>,
}

/// Pixel normalisation applied before the first layer, per input channel:
/// `(pixel / 255 - mean[c]) / std[c]`. A one-channel model's values are written as plain numbers
/// (as files before per-channel normalisation did), longer ones as lists; both are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Mean subtracted, per channel.
    #[serde(with = "number_or_list")]
    pub mean: Vec<f32>,
    /// Standard deviation divided by, per channel.
    #[serde(with = "number_or_list")]
    pub std: Vec<f32>,
}

impl Normalization {
    /// The same mean and deviation for every channel.
    pub fn uniform(mean: f32, std: f32) -> Self {
        Normalization {
            mean: vec![mean],
            std: vec![std],
        }
    }
}

/// Serde for a list of numbers that is a plain number when it has one element.
mod number_or_list {
    use crate::prelude::*;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum NumberOrList {
        Number(f32),
        List(Vec<f32>),
    }

    pub fn serialize<S: Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
        match values {
            [value] => NumberOrList::Number(*value).serialize(serializer),
            _ => values.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
        Ok(match NumberOrList::deserialize(deserializer)? {
            NumberOrList::Number(value) => vec![value],
            NumberOrList::List(values) => values,
        })
    }
}

/// Everything a file says about its model besides the layers: the description section holds
/// all but the certificate and the summary, which are the run record section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Shape of one input: `[channels, height, width]` for images, `[context]` for token ids.
    pub input: Vec<usize>,
    /// Pixel normalisation (image models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
    /// The symbols of a language model, in id order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocabulary: Option<String>,
    /// Class names of a classifier, in output order (absent: the class index is the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Where the model's data comes from (the training config's `[data]` section, free-form
    /// JSON), so that a tool can rebuild the test split it was measured on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The safety certificate of the run that made the model (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<serde_json::Value>,
    /// A summary of training and its test figures (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
}

/// A whole packed model: metadata and layers.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedModel {
    /// Input description, vocabulary, certificate and summary.
    pub metadata: Metadata,
    /// The layers in order.
    pub layers: Vec<Layer>,
}

impl Layer {
    /// A layer that stores no tensors (ReLU, pooling, flattening, residual markers).
    pub fn without_tensors(spec: LayerSpec) -> Layer {
        Layer {
            spec,
            tensors: Vec::new(),
        }
    }

    /// The layer's description.
    pub fn spec(&self) -> &LayerSpec {
        &self.spec
    }

    /// The tensor named `name` (see [`LayerSpec::stored_tensors`]), if the layer stores one.
    pub fn tensor(&self, name: &str) -> Option<&TensorData> {
        let position = self
            .spec
            .stored_tensors()
            .iter()
            .position(|tensor| tensor.name == name)?;
        self.tensors.get(position)
    }

    /// The f32 values named `name`, if the layer stores them.
    pub fn floats(&self, name: &str) -> Option<&[f32]> {
        match self.tensor(name)? {
            TensorData::Floats(values) => Some(values),
            TensorData::Codes(_) => None,
        }
    }

    /// The f32 values named `name`, or an error naming what is missing.
    pub fn required_floats(&self, name: &str) -> Result<&[f32]> {
        self.floats(name)
            .ok_or_else(|| RuntimeError::Invalid(format!("{:?} has no {name}", self.spec)))
    }

    /// The linear map `part` (`""` for the layer's own weights, `"query"`, `"projection"`, ...):
    /// its codes `{part}.weight` and its bias `{part}.bias` if stored.
    pub fn dense(&self, part: &str) -> Result<Dense<'_>> {
        let name = |tensor: &str| match part {
            "" => tensor.to_string(),
            part => format!("{part}.{tensor}"),
        };
        match self.tensor(&name("weight")) {
            Some(TensorData::Codes(weight)) => Ok(Dense {
                weight,
                bias: self.floats(&name("bias")),
            }),
            _ => Err(RuntimeError::Invalid(format!(
                "{:?} has no quantized {}",
                self.spec,
                name("weight")
            ))),
        }
    }

    /// Every quantized linear map of the layer, in file order, each with its part name (`""`
    /// for the layer's own weights, `"query"`, ... for a transformer block's).
    pub fn dense_parts(&self) -> Vec<(&'static str, Dense<'_>)> {
        self.spec
            .stored_tensors()
            .iter()
            .zip(&self.tensors)
            .filter_map(|(stored, data)| match data {
                TensorData::Codes(weight) => {
                    let prefix = stored.name.strip_suffix("weight")?;
                    let bias = self.floats(&format!("{prefix}bias"));
                    Some((prefix.trim_end_matches('.'), Dense { weight, bias }))
                }
                TensorData::Floats(_) => None,
            })
            .collect()
    }

    /// Checks that the layer holds the tensors its description lists, each with the length its
    /// shape implies and stored as listed (codes within their rows' widths' lengths, running
    /// variances not negative).
    fn check_tensors(&self) -> Result<()> {
        let stored = self.spec.stored_tensors();
        if stored.len() != self.tensors.len() {
            return Err(RuntimeError::Invalid(format!(
                "{} tensors where {} belong",
                self.tensors.len(),
                stored.len()
            )));
        }
        for (expected, data) in stored.iter().zip(&self.tensors) {
            let name = expected.name;
            let (rows, columns) = expected
                .rows_and_columns()
                .ok_or_else(|| RuntimeError::Invalid(format!("{name}: shape overflows")))?;
            match (expected.storage, data) {
                (Storage::Codes, TensorData::Codes(matrix)) => {
                    check_matrix(matrix, rows, columns, name)?
                }
                (Storage::Floats | Storage::NonNegative, TensorData::Floats(values)) => {
                    let length = rows.saturating_mul(columns);
                    if values.len() != length {
                        return Err(RuntimeError::Invalid(format!(
                            "{name}: {} values where {length} belong",
                            values.len()
                        )));
                    }
                    if let Some(value) = values.iter().find(|v| !v.is_finite()) {
                        return Err(RuntimeError::Invalid(format!(
                            "{name}: {value} is not finite"
                        )));
                    }
                    if expected.storage == Storage::NonNegative {
                        if let Some(value) = values.iter().find(|&&v| v < 0.0) {
                            return Err(RuntimeError::Invalid(format!(
                                "{name}: {value} is negative"
                            )));
                        }
                    }
                }
                _ => {
                    return Err(RuntimeError::Invalid(format!(
                        "{name}: stored as {data_kind} instead of {:?}",
                        expected.storage,
                        data_kind = match data {
                            TensorData::Codes(_) => "codes",
                            TensorData::Floats(_) => "floats",
                        }
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Checks a matrix's own lengths and its shape against the expected `[rows, columns]`.
fn check_matrix(matrix: &QuantizedMatrix, rows: usize, columns: usize, what: &str) -> Result<()> {
    if matrix.rows != rows
        || matrix.columns != columns
        || matrix.widths.len() != rows
        || matrix.exponents.len() != rows
        || matrix.codes.len() != rows.saturating_mul(columns)
    {
        return Err(RuntimeError::Invalid(format!(
            "{what}: expected a {rows}x{columns} matrix, found {}x{} with {} widths, {} exponents, {} codes",
            matrix.rows,
            matrix.columns,
            matrix.widths.len(),
            matrix.exponents.len(),
            matrix.codes.len()
        )));
    }
    Ok(())
}

/// Most f32 values one image's or window's activations, or one convolution's work buffers,
/// may hold (256 MiB): a file that is small but describes a huge computation is rejected
/// rather than allowed to exhaust memory.
pub const MAX_ACTIVATION: usize = 1 << 26;

/// `a * b * ...` if it stays within [`MAX_ACTIVATION`].
fn bounded(factors: &[usize]) -> Option<usize> {
    factors
        .iter()
        .try_fold(1usize, |product, &factor| product.checked_mul(factor))
        .filter(|&product| product <= MAX_ACTIVATION)
}

impl PackedModel {
    /// Checks that every layer holds the tensors its description lists ([`Layer`]), and the
    /// descriptions themselves ([`validate_specs`]); returns the number of outputs (classes, or
    /// vocabulary size for a language model).
    pub fn validate(&self) -> Result<usize> {
        Ok(self.validated_shapes()?.outputs)
    }

    /// [`PackedModel::validate`], keeping the shapes it walked.
    pub(crate) fn validated_shapes(&self) -> Result<Shapes> {
        self.check_layers()?;
        let specs: Vec<LayerSpec> = self.layers.iter().map(|layer| layer.spec.clone()).collect();
        checked_shapes(&self.metadata, &specs)
    }

    /// Checks that every layer holds the tensors its description lists ([`Layer`]).
    pub(crate) fn check_layers(&self) -> Result<()> {
        for (index, layer) in self.layers.iter().enumerate() {
            layer
                .check_tensors()
                .map_err(|e| RuntimeError::Invalid(format!("layer {index}: {e}")))?;
        }
        Ok(())
    }
}

/// The activation shapes of a validated model.
pub(crate) struct Shapes {
    /// Outputs per prediction (classes, or the vocabulary size).
    pub outputs: usize,
    /// The shape of one input.
    pub input: Shape,
    /// The output shape of every layer, in order.
    pub layers: Vec<Shape>,
}

impl Shapes {
    /// The shape layer `index` reads: the model's input, or the previous layer's output.
    pub fn input_of(&self, index: usize) -> Shape {
        index
            .checked_sub(1)
            .map_or(self.input, |before| self.layers[before])
    }
}

/// Checks that the layers `specs` fit the input of `metadata` and each other, that no
/// activation or work buffer would exceed [`MAX_ACTIVATION`], and that the metadata fits the
/// outputs; returns the number of outputs (classes, or vocabulary size for a language model).
/// Needs no tensors, so a file's reader checks this before it reads them.
pub fn validate_specs(metadata: &Metadata, specs: &[LayerSpec]) -> Result<usize> {
    Ok(checked_shapes(metadata, specs)?.outputs)
}

/// [`validate_specs`], keeping the shapes it walked.
fn checked_shapes(metadata: &Metadata, specs: &[LayerSpec]) -> Result<Shapes> {
    let invalid = |message: String| Err(RuntimeError::Invalid(message));
    if let Some(n) = &metadata.normalization {
        let finite = n.mean.iter().chain(&n.std).all(|v| v.is_finite());
        if !finite || n.std.iter().any(|&s| s <= 0.0) {
            return invalid(format!(
                "normalisation mean {:?} and std {:?} (each std must be positive)",
                n.mean, n.std
            ));
        }
        let channels = metadata.input.first().copied().unwrap_or(0);
        let fits = |len: usize| len == 1 || (len == channels && metadata.input.len() == 3);
        if n.mean.len() != n.std.len() || !fits(n.mean.len()) {
            return invalid(format!(
                "normalisation has {} means and {} deviations for an input of {:?}",
                n.mean.len(),
                n.std.len(),
                metadata.input
            ));
        }
    }
    let input = &metadata.input;
    if input.iter().any(|&d| d > crate::format::MAX_DIMENSION) || bounded(input).is_none() {
        return invalid(format!("input shape {input:?} is too large"));
    }
    let first = Shape::of_input(input).map_err(RuntimeError::Invalid)?;
    let mut shape = first;
    for (index, spec) in specs.iter().enumerate() {
        let at = |message: String| RuntimeError::Invalid(format!("layer {index}: {message}"));
        for tensor in spec.stored_tensors() {
            let limit = crate::format::MAX_DIMENSION;
            if tensor.shape.iter().any(|&side| side == 0 || side > limit) {
                return Err(at(format!(
                    "{} of shape {:?}: every side must be in 1..={limit}",
                    tensor.name, tensor.shape
                )));
            }
        }
        let next = spec.output_shape(shape).map_err(at)?;
        if next
            .values()
            .and_then(|values| bounded(&[values]))
            .is_none()
        {
            return Err(at(format!("an activation of {next:?} is too large")));
        }
        if let (
            LayerSpec::Conv2d {
                kernel, padding, ..
            },
            Shape::Map {
                channels,
                height,
                width,
            },
            Shape::Map {
                channels: rows,
                height: oh,
                width: ow,
            },
        ) = (spec, shape, next)
        {
            // The convolution's buffers: padded planes copied per kernel column, the
            // product of a row per tap and output channel, and the output.
            let (ph, pw) = (height + 2 * padding, width + 2 * padding);
            if bounded(&[channels, *kernel, ph, pw]).is_none()
                || bounded(&[*kernel, *kernel, rows + 16, ph, pw]).is_none()
                || bounded(&[rows, oh, ow]).is_none()
            {
                return Err(at(format!(
                    "conv with padding {padding} on {height}x{width} is too large"
                )));
            }
        }
        shape = next;
    }
    // Every residual block's add fits its kept activation.
    let shapes = crate::layers::walk(specs, first)
        .map_err(|(index, message)| RuntimeError::Invalid(format!("layer {index}: {message}")))?;
    let outputs = match shape {
        Shape::Flat { features } | Shape::Sequence { features, .. } => features,
        other => {
            return invalid(format!(
                "the network ends in {other:?}, not in a vector of outputs"
            ))
        }
    };
    if let Some(vocabulary) = &metadata.vocabulary {
        let symbols = vocabulary.chars().count();
        if symbols != outputs {
            return invalid(format!(
                "vocabulary of {symbols} symbols for {outputs} outputs"
            ));
        }
    }
    if let Some(classes) = &metadata.classes {
        if classes.len() != outputs {
            return invalid(format!(
                "{} class names for {outputs} outputs",
                classes.len()
            ));
        }
    }
    Ok(Shapes {
        outputs,
        input: first,
        layers: shapes,
    })
}
