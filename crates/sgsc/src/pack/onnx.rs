//! ONNX export of an image classifier in QDQ form: every quantized weight is an int8 initializer
//! (its integer codes; int16 for a layer with a row wider than 8 bits) with a per-output-channel
//! scale `2^e` and zero point 0, dequantized by a `DequantizeLinear` node in front of its `Conv`
//! or `Gemm`. Opset 21 (the first with int16 `DequantizeLinear`), IR version 10.
//!
//! The protobuf is written by hand: the handful of ONNX messages needed here are a few fields
//! each, and a protobuf code generator would need `protoc` at build time. Field numbers are those
//! of `onnx/onnx.proto`.
//!
//! The graph takes normalised images (`(pixel / 255 - mean) / std`, the file's metadata) of
//! shape `[N, C, H, W]` as `input` and gives `logits` `[N, classes]`. Codes wider than 16 bits
//! are an error.

use crate::error::{Error, Result};
use sgsc_runtime::model::{Dense, LayerSpec, PackedModel, Pool};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// ONNX's element types used here.
const FLOAT: i64 = 1;
const INT8: i64 = 3;
const INT16: i64 = 5;
/// AttributeProto.AttributeType values used here.
const ATTRIBUTE_FLOAT: i64 = 1;
const ATTRIBUTE_INT: i64 = 2;
const ATTRIBUTE_INTS: i64 = 7;

/// A protobuf message under construction.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn key(&mut self, field: u64, wire_type: u64) {
        self.varint(field << 3 | wire_type);
    }

    fn int(&mut self, field: u64, value: i64) {
        self.key(field, 0);
        self.varint(value as u64);
    }

    fn float(&mut self, field: u64, value: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, field: u64, bytes: &[u8]) {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u64, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    fn message(&mut self, field: u64, message: Message) {
        self.bytes(field, &message.0);
    }
}

/// TensorProto with raw little-endian data.
fn tensor(name: &str, dims: &[usize], data_type: i64, raw: Vec<u8>) -> Message {
    let mut tensor = Message::default();
    for &dim in dims {
        tensor.int(1, dim as i64);
    }
    tensor.int(2, data_type);
    tensor.string(8, name);
    tensor.bytes(9, &raw);
    tensor
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> Message {
    tensor(
        name,
        dims,
        FLOAT,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// AttributeProto of one kind.
#[derive(Clone)]
enum Attribute {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// The graph under construction: nodes and initializers.
#[derive(Default)]
struct Graph {
    nodes: Vec<Message>,
    initializers: Vec<Message>,
}

impl Graph {
    fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        output: &str,
        attributes: &[(&str, Attribute)],
    ) {
        let mut node = Message::default();
        for input in inputs {
            node.string(1, input);
        }
        node.string(2, output);
        node.string(3, output);
        node.string(4, op_type);
        for (name, value) in attributes {
            let mut attribute = Message::default();
            attribute.string(1, name);
            match value {
                Attribute::Float(f) => {
                    attribute.float(2, *f);
                    attribute.int(20, ATTRIBUTE_FLOAT);
                }
                Attribute::Int(i) => {
                    attribute.int(3, *i);
                    attribute.int(20, ATTRIBUTE_INT);
                }
                Attribute::Ints(values) => {
                    for &v in values {
                        attribute.int(8, v);
                    }
                    attribute.int(20, ATTRIBUTE_INTS);
                }
            }
            node.message(5, attribute);
        }
        self.nodes.push(node);
    }

    /// The int8 codes, scales and zero points of `dense` as initializers, dequantized by a node;
    /// returns the name of the float weight and of the bias (if any).
    fn dequantized(
        &mut self,
        name: &str,
        dense: Dense,
        dims: &[usize],
    ) -> Result<(String, Option<String>)> {
        let matrix = dense.weight;
        let widest = matrix.widths.iter().copied().max().unwrap_or(0);
        let (data_type, code_bytes) = match widest {
            0..=8 => (INT8, 1),
            9..=16 => (INT16, 2),
            _ => {
                return Err(Error::Model(format!(
                "{name}: a {widest}-bit row does not fit the int16 initializers of the ONNX export"
            )))
            }
        };
        let codes: Vec<u8> = matrix
            .codes
            .iter()
            .flat_map(|&c| c.to_le_bytes().into_iter().take(code_bytes))
            .collect();
        let scales: Vec<f32> = matrix
            .exponents
            .iter()
            .map(|e| f32::from(*e).exp2())
            .collect();
        self.initializers
            .push(tensor(&format!("{name}.codes"), dims, data_type, codes));
        self.initializers.push(float_tensor(
            &format!("{name}.scale"),
            &[matrix.rows],
            &scales,
        ));
        self.initializers.push(tensor(
            &format!("{name}.zero_point"),
            &[matrix.rows],
            data_type,
            vec![0; matrix.rows * code_bytes],
        ));
        let weight = format!("{name}.weight");
        self.node(
            "DequantizeLinear",
            &[
                &format!("{name}.codes"),
                &format!("{name}.scale"),
                &format!("{name}.zero_point"),
            ],
            &weight,
            &[("axis", Attribute::Int(0))],
        );
        let bias = dense.bias.map(|bias| {
            let bias_name = format!("{name}.bias");
            self.initializers
                .push(float_tensor(&bias_name, &[bias.len()], bias));
            bias_name
        });
        Ok((weight, bias))
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> Message {
    let mut shape = Message::default();
    for dim in dims {
        let mut dimension = Message::default();
        match dim {
            Some(value) => dimension.int(1, *value as i64),
            None => dimension.string(2, "batch"),
        }
        shape.message(1, dimension);
    }
    let mut tensor_type = Message::default();
    tensor_type.int(1, FLOAT);
    tensor_type.message(2, shape);
    let mut type_proto = Message::default();
    type_proto.message(1, tensor_type);
    let mut info = Message::default();
    info.string(1, name);
    info.message(2, type_proto);
    info
}

/// A pool's attributes: its window, stride and padding on both axes, then `extra`.
fn window(pool: &Pool, extra: &[(&'static str, Attribute)]) -> Vec<(&'static str, Attribute)> {
    let (k, s, p) = (
        pool.kernel as i64,
        pool.stride() as i64,
        pool.padding as i64,
    );
    let mut attributes = vec![
        ("kernel_shape", Attribute::Ints(vec![k, k])),
        ("strides", Attribute::Ints(vec![s, s])),
        ("pads", Attribute::Ints(vec![p, p, p, p])),
    ];
    attributes.extend(extra.iter().cloned());
    attributes
}

/// The bytes of an ONNX model equivalent to `model` (an image classifier).
pub fn to_onnx(model: &PackedModel) -> Result<Vec<u8>> {
    let outputs = model.validate()?;
    let input = &model.metadata.input;
    if input.len() != 3 {
        return Err(Error::Model(
            "the ONNX export covers image classifiers; a language model exports to .sgsc or safetensors".into(),
        ));
    }
    let mut graph = Graph::default();
    let mut current = "input".to_string();
    let mut kept = Vec::new();
    for (index, layer) in model.layers.iter().enumerate() {
        let name = format!("layers.{index}");
        let output = format!("{name}.output");
        match layer.spec {
            LayerSpec::Residual => {
                kept.push(current.clone());
                continue;
            }
            LayerSpec::Add { projection } => {
                let mut skip = kept
                    .pop()
                    .ok_or_else(|| Error::Model("an add without a residual block".into()))?;
                if let Some(projection) = projection {
                    let prefix = format!("{name}.projection");
                    let dims = [projection.out_channels, projection.in_channels, 1, 1];
                    let (weight, _) =
                        graph.dequantized(&prefix, layer.dense("projection")?, &dims)?;
                    let projected = format!("{prefix}.output");
                    let s = projection.stride as i64;
                    graph.node(
                        "Conv",
                        &[&skip, &weight],
                        &projected,
                        &[
                            ("kernel_shape", Attribute::Ints(vec![1, 1])),
                            ("strides", Attribute::Ints(vec![s, s])),
                        ],
                    );
                    skip = projected;
                }
                graph.node("Add", &[&current, &skip], &output, &[]);
            }
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                groups,
                ..
            } => {
                let dims = [out_channels, in_channels / groups, kernel, kernel];
                let (weight, bias) = graph.dequantized(&name, layer.dense("")?, &dims)?;
                let mut inputs = vec![current.as_str(), weight.as_str()];
                if let Some(bias) = &bias {
                    inputs.push(bias);
                }
                let (k, s, p) = (kernel as i64, stride as i64, padding as i64);
                graph.node(
                    "Conv",
                    &inputs,
                    &output,
                    &[
                        ("kernel_shape", Attribute::Ints(vec![k, k])),
                        ("strides", Attribute::Ints(vec![s, s])),
                        ("pads", Attribute::Ints(vec![p, p, p, p])),
                        ("group", Attribute::Int(groups as i64)),
                    ],
                );
            }
            LayerSpec::Linear {
                in_features,
                out_features,
                ..
            } => {
                let dims = [out_features, in_features];
                let (weight, bias) = graph.dequantized(&name, layer.dense("")?, &dims)?;
                let mut inputs = vec![current.as_str(), weight.as_str()];
                if let Some(bias) = &bias {
                    inputs.push(bias);
                }
                graph.node("Gemm", &inputs, &output, &[("transB", Attribute::Int(1))]);
            }
            LayerSpec::Relu => graph.node("Relu", &[&current], &output, &[]),
            LayerSpec::BatchNorm {
                channels,
                affine,
                eps,
            } => {
                let (scale, shift) = if affine {
                    (
                        layer.required_floats("weight")?.to_vec(),
                        layer.required_floats("bias")?.to_vec(),
                    )
                } else {
                    (vec![1.0; channels], vec![0.0; channels])
                };
                let mean = layer.required_floats("running_mean")?;
                let variance = layer.required_floats("running_var")?;
                let names =
                    ["scale", "shift", "mean", "variance"].map(|part| format!("{name}.{part}"));
                for (part, values) in names.iter().zip([&scale[..], &shift[..], mean, variance]) {
                    graph
                        .initializers
                        .push(float_tensor(part, &[channels], values));
                }
                let inputs: Vec<&str> = std::iter::once(current.as_str())
                    .chain(names.iter().map(String::as_str))
                    .collect();
                graph.node(
                    "BatchNormalization",
                    &inputs,
                    &output,
                    &[("epsilon", Attribute::Float(eps))],
                );
            }
            LayerSpec::MaxPool(pool) => {
                graph.node("MaxPool", &[&current], &output, &window(&pool, &[]))
            }
            LayerSpec::AvgPool(pool) => graph.node(
                "AveragePool",
                &[&current],
                &output,
                &window(&pool, &[("count_include_pad", Attribute::Int(1))]),
            ),
            LayerSpec::GlobalAvgPool => graph.node("GlobalAveragePool", &[&current], &output, &[]),
            LayerSpec::Flatten => graph.node(
                "Flatten",
                &[&current],
                &output,
                &[("axis", Attribute::Int(1))],
            ),
            LayerSpec::Embedding { .. }
            | LayerSpec::TransformerBlock { .. }
            | LayerSpec::LayerNorm { .. } => {
                return Err(Error::Model(
                    "the ONNX export covers image classifiers".into(),
                ))
            }
        }
        current = output;
    }
    graph.node("Identity", &[&current], "logits", &[]);

    let mut graph_message = Message::default();
    for node in graph.nodes {
        graph_message.message(1, node);
    }
    graph_message.string(2, "sgsc");
    for initializer in graph.initializers {
        graph_message.message(5, initializer);
    }
    let input_dims: Vec<Option<usize>> = std::iter::once(None)
        .chain(input.iter().map(|&d| Some(d)))
        .collect();
    graph_message.message(11, value_info("input", &input_dims));
    graph_message.message(12, value_info("logits", &[None, Some(outputs)]));

    let mut opset = Message::default();
    opset.string(1, "");
    opset.int(2, 21);
    let mut onnx = Message::default();
    onnx.int(1, 10);
    onnx.string(2, "sgsc");
    onnx.string(3, env!("CARGO_PKG_VERSION"));
    onnx.message(7, graph_message);
    onnx.message(8, opset);
    if let Some(norm) = &model.metadata.normalization {
        // One number per channel, comma-separated.
        for (key, values) in [("pixel_mean", &norm.mean), ("pixel_std", &norm.std)] {
            let text: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            let mut entry = Message::default();
            entry.string(1, key);
            entry.string(2, &text.join(","));
            onnx.message(14, entry);
        }
    }
    Ok(onnx.0)
}

/// What onnxruntime gave for an ONNX model (see [`run_onnxruntime`]).
#[derive(Debug, Clone)]
pub struct OnnxRun {
    /// Logits, `[n, classes]` row-major.
    pub logits: Vec<f32>,
    /// One line of images per second for each batch size asked for.
    pub throughput: String,
}

/// Runs an ONNX model with onnxruntime through `scripts/onnx_predict.py` of the checkout at
/// `root`, with the onnxruntime that `scripts/setup-onnxruntime.sh` installed in
/// `root/.onnxruntime` (a development tool, not a dependency of sgsc): the logits of `images`
/// (float32 of `shape` = `[n, c, h, w]`) and the throughput at each of `batch_sizes`. The tests
/// check the export with it and `sgsc bench` times it.
pub fn run_onnxruntime(
    root: &Path,
    model: &[u8],
    images: &[f32],
    shape: [usize; 4],
    batch_sizes: &[usize],
) -> Result<OnnxRun> {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let folder = std::env::temp_dir().join(format!(
        "sgsc-onnx-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&folder).map_err(|source| Error::io(&folder, source))?;
    let result = (|| {
        let (model_path, images_path, logits_path) = (
            folder.join("model.onnx"),
            folder.join("images.f32"),
            folder.join("logits.f32"),
        );
        std::fs::write(&model_path, model).map_err(|source| Error::io(&model_path, source))?;
        let bytes: Vec<u8> = images.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&images_path, bytes).map_err(|source| Error::io(&images_path, source))?;
        let script = root.join("scripts/onnx_predict.py");
        let output = Command::new("python3")
            .arg(&script)
            .arg(&model_path)
            .arg(&images_path)
            .args(shape.map(|d| d.to_string()))
            .arg(&logits_path)
            .args(batch_sizes.iter().map(|b| b.to_string()))
            .env("PYTHONPATH", root.join(".onnxruntime"))
            .output()
            .map_err(|source| Error::io(&script, source))?;
        if !output.status.success() {
            return Err(Error::Model(format!(
                "onnxruntime: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let logits =
            std::fs::read(&logits_path).map_err(|source| Error::io(&logits_path, source))?;
        Ok(OnnxRun {
            logits: logits
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            throughput: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    })();
    let _ = std::fs::remove_dir_all(&folder);
    result
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn protobuf_fields_match_hand_encodings() {
        let mut message = Message::default();
        message.int(1, 300); // key 0x08, varint 300 = 0xac 0x02
        message.string(2, "hi"); // key 0x12, length 2
        message.float(2, 1.0); // key 0x15, 0x3f800000 little-endian
        message.int(3, -1); // ten-byte varint of 2^64 - 1
        assert_eq!(
            message.0,
            [
                vec![0x08, 0xac, 0x02, 0x12, 0x02, b'h', b'i', 0x15, 0x00, 0x00, 0x80, 0x3f, 0x18],
                vec![0xff; 9],
                vec![0x01]
            ]
            .concat()
        );
    }
}
