//! Every layer kind through every back end. For each kind, a small random network that holds it
//! (random per-channel widths with a dead channel in every quantized layer, random batch-norm
//! statistics) runs in libtorch (quantized weights, inference mode), in the pure-Rust runtime
//! from its `.sgsc` file (dead channels removed where nothing constant flows from them), and, for image models, in onnxruntime from its
//! ONNX export: the logits agree within 1e-4. The length the size law steers on is the file's,
//! and the safetensors export imports back exactly. Image models also run on the integer path
//! (8-bit activations calibrated on the same images): its logits follow the f32 path's within
//! the activations' rounding, and the generated C (built by the host's `cc` with sanitizers)
//! gives exactly its logits.
//!
//! A new layer kind joins by being declared: [`kind_name`] matches every kind, so the test does
//! not compile until the new kind has a name, and [`KINDS`] must then list it and a case must
//! hold it.

mod common;

use sgsc::models::config::{LayerSpec, Pool};
use sgsc::models::state_dict::load_float_state;
use sgsc::models::{LayerConfig, ModelConfig, Network};
use sgsc::pack::export::{export, stored_length, to_packed, to_safetensors, ExportFormat};
use sgsc::pack::onnx::to_onnx;
use sgsc_runtime::format::decode;
use sgsc_runtime::model::Metadata;
use sgsc_runtime::{IntegerModel, Model, RuntimeError};
use std::collections::BTreeSet;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The name of a layer kind ([`LayerSpec::kind`] matches every kind, so a new kind does not
/// compile until it has one).
fn kind_name(spec: &LayerSpec) -> &'static str {
    spec.kind()
}

/// Every layer kind.
const KINDS: [&str; 13] = [
    "residual",
    "add",
    "conv2d",
    "linear",
    "relu",
    "batch_norm",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "flatten",
    "embedding",
    "transformer_block",
    "layer_norm",
];

fn conv(out_channels: i64, kernel: i64, stride: i64, padding: i64, bias: bool) -> LayerConfig {
    grouped(out_channels, kernel, stride, padding, bias, 1)
}

fn grouped(
    out_channels: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
    bias: bool,
    groups: i64,
) -> LayerConfig {
    LayerConfig::Conv2d {
        out_channels,
        kernel,
        stride,
        padding,
        bias,
        groups,
    }
}

fn linear(out_features: i64, bias: bool) -> LayerConfig {
    LayerConfig::Linear { out_features, bias }
}

fn pool(kernel: usize, stride: Option<usize>, padding: usize) -> Pool {
    Pool {
        kernel,
        stride,
        padding,
    }
}

/// The networks, each with the kinds it shows.
fn cases() -> Vec<(&'static str, ModelConfig)> {
    use LayerConfig::{BatchNorm, Flatten, GlobalAvgPool, Relu};
    let image = |input: [i64; 3], layers| ModelConfig {
        input: input.to_vec(),
        layers,
    };
    vec![
        (
            "the MNIST stack: conv, relu, batch norm, max pool, flatten, linear",
            image(
                [1, 12, 12],
                vec![
                    conv(6, 3, 1, 0, false),
                    Relu,
                    BatchNorm { affine: false },
                    LayerConfig::MaxPool(pool(2, None, 0)),
                    Flatten,
                    linear(4, false),
                ],
            ),
        ),
        (
            "strided padded conv with bias; affine batch norm on maps and on vectors",
            image(
                [2, 9, 8],
                vec![
                    conv(5, 3, 2, 1, true),
                    BatchNorm { affine: true },
                    Relu,
                    Flatten,
                    linear(6, true),
                    BatchNorm { affine: true },
                    Relu,
                    linear(3, true),
                ],
            ),
        ),
        (
            "max pool with stride and padding, average pool",
            image(
                [3, 10, 9],
                vec![
                    conv(5, 3, 1, 1, true),
                    Relu,
                    LayerConfig::MaxPool(pool(3, Some(1), 1)),
                    LayerConfig::AvgPool(pool(3, Some(2), 1)),
                    Flatten,
                    linear(3, false),
                ],
            ),
        ),
        (
            "depthwise and grouped convolutions",
            image(
                [2, 9, 9],
                vec![
                    conv(6, 3, 1, 1, false),
                    Relu,
                    grouped(6, 3, 2, 1, false, 6),
                    Relu,
                    grouped(4, 1, 1, 0, false, 2),
                    BatchNorm { affine: false },
                    Flatten,
                    linear(3, false),
                ],
            ),
        ),
        (
            "residual blocks, with an identity skip and with a strided projection",
            image(
                [3, 8, 8],
                vec![
                    conv(4, 3, 1, 1, false),
                    BatchNorm { affine: false },
                    Relu,
                    LayerConfig::Residual,
                    conv(4, 3, 1, 1, false),
                    BatchNorm { affine: true },
                    Relu,
                    conv(4, 3, 1, 1, false),
                    BatchNorm { affine: false },
                    LayerConfig::Add,
                    Relu,
                    LayerConfig::Residual,
                    conv(6, 3, 2, 1, false),
                    Relu,
                    conv(6, 3, 1, 1, true),
                    LayerConfig::Add,
                    Relu,
                    GlobalAvgPool,
                    Flatten,
                    linear(3, true),
                ],
            ),
        ),
        (
            "global average pooling",
            image(
                [2, 8, 8],
                vec![
                    conv(6, 3, 1, 0, true),
                    Relu,
                    LayerConfig::AvgPool(pool(2, None, 0)),
                    conv(5, 1, 1, 0, false),
                    GlobalAvgPool,
                    Flatten,
                    linear(3, true),
                ],
            ),
        ),
        (
            "a language model: embedding, transformer block, layer norm, linear",
            ModelConfig {
                input: vec![6],
                layers: vec![
                    LayerConfig::Embedding {
                        vocab_size: 7,
                        d_model: 8,
                    },
                    LayerConfig::TransformerBlock {
                        heads: 2,
                        mlp_ratio: 2,
                        bias: true,
                    },
                    LayerConfig::LayerNorm,
                    linear(7, false),
                ],
            },
        ),
    ]
}

/// The kinds of a network's layers.
fn kinds_of(model: &ModelConfig) -> Vec<&'static str> {
    model
        .specs()
        .unwrap()
        .iter()
        .map(|(spec, _)| kind_name(spec))
        .collect()
}

#[test]
fn every_kind_is_in_a_case() {
    let shown: BTreeSet<&str> = cases()
        .iter()
        .flat_map(|(_, model)| kinds_of(model))
        .collect();
    assert_eq!(shown, KINDS.into_iter().collect::<BTreeSet<_>>());
}

/// Gives every quantized channel a random width in 0..=8 bits and the first of each layer zero
/// bits, and every batch norm random statistics, scale and shift.
fn randomise(network: &Network) {
    tch::no_grad(|| {
        for index in 0..network.quantized.len() {
            let bits = &network.quantized_weight(index).bit_depth;
            let random = Tensor::rand(bits.size(), (Kind::Float, Device::Cpu)) * 9.0 - 1.0;
            bits.shallow_clone().copy_(&random);
            let _ = bits.narrow(0, 0, 1).fill_(-1.0);
        }
        for layer in &network.layers {
            if let sgsc::models::network::Layer::BatchNorm(norm) = layer {
                let size = norm.running_mean.size();
                let randn = || Tensor::randn(size.as_slice(), (Kind::Float, Device::Cpu));
                let rand = || Tensor::rand(size.as_slice(), (Kind::Float, Device::Cpu));
                norm.running_mean.shallow_clone().copy_(&(randn() * 0.3));
                norm.running_var
                    .shallow_clone()
                    .copy_(&(rand() * 1.5 + 0.5));
                if let Some((scale, shift)) = &norm.affine {
                    scale.shallow_clone().copy_(&(randn() * 0.5 + 1.0));
                    shift.shallow_clone().copy_(&(randn() * 0.2));
                }
            }
        }
    });
}

/// A file's metadata for `model`'s input (and a language model's `vocabulary`), nothing else.
fn metadata_for(model: &ModelConfig, vocabulary: Option<String>) -> Metadata {
    Metadata {
        input: model.input.iter().map(|&side| side as usize).collect(),
        normalization: None,
        vocabulary,
        classes: None,
        data: None,
        certificate: None,
        summary: None,
    }
}

fn floats(tensor: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&tensor.to_kind(Kind::Float).view([-1])).unwrap()
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn every_kind_gives_the_same_logits_in_every_back_end() {
    let batch = 4usize;
    let mut removed_in_all = 0;
    for (seed, (case, model)) in cases().into_iter().enumerate() {
        tch::manual_seed(seed as i64);
        let mut network = Network::new(&model, 8.0, Device::Cpu).unwrap();
        randomise(&network);
        sgsc::size::prepare_for_storage(&network).unwrap();
        let language = model.input.len() == 1;
        let input = if language {
            Tensor::randint(
                7,
                [batch as i64, model.input[0]],
                (Kind::Int64, Device::Cpu),
            )
        } else {
            let shape: Vec<i64> = std::iter::once(batch as i64)
                .chain(model.input.iter().copied())
                .collect();
            Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu))
        };
        let expected = floats(&tch::no_grad(|| network.forward(&input, false, true)).unwrap());
        let metadata = metadata_for(&model, language.then(|| "abcdefg".to_string()));
        // The safetensors export imports back into the same network, weights exact.
        let tensors = to_safetensors(&to_packed(&network, metadata.clone()).unwrap()).unwrap();
        let imported = Network::new(&model, 8.0, Device::Cpu).unwrap();
        load_float_state(&imported, &tensors, Path::new("export.safetensors")).unwrap();
        for index in 0..network.quantized.len() {
            let exported = network.quantized_weight(index).quantized().unwrap();
            let back = &imported.quantized_weight(index).weight;
            assert!(
                back.equal(&exported),
                "{case}: layer {index} after the import"
            );
        }
        let steered = stored_length(&network, &model, metadata.clone()).unwrap();
        let (bytes, removed) = export(&mut network, metadata, ExportFormat::Sgsc).unwrap();
        removed_in_all += removed;
        assert_eq!(
            steered,
            bytes.len(),
            "{case}: the steered size is the file's"
        );
        let runtime = Model::from_bytes(&bytes).unwrap();
        let logits = if language {
            let ids: Vec<u32> = Vec::<i64>::try_from(&input.view([-1]))
                .unwrap()
                .into_iter()
                .map(|id| id as u32)
                .collect();
            runtime.next_token_logits(&ids, batch).unwrap()
        } else {
            runtime.classify(&floats(&input), batch).unwrap()
        };
        let difference = largest_difference(&expected, &logits);
        assert!(difference < 1e-4, "{case}: runtime differs by {difference}");
        if !language {
            let packed = decode(&bytes).unwrap();
            let [c, h, w] = [0, 1, 2].map(|axis| model.input[axis] as usize);
            let onnx = common::run_onnx(
                &to_onnx(&packed).unwrap(),
                &floats(&input),
                [batch, c, h, w],
            );
            let difference = largest_difference(&expected, &onnx);
            assert!(
                difference < 1e-4,
                "{case}: onnxruntime differs by {difference}"
            );
        }
    }
    // Dead channels go, those sending a constant (a bias, an affine shift) too where it folds into
    // the next layer's bias.
    assert!(removed_in_all > 0, "dead channels are removed at export");
}

/// Sets the bit depths of quantized layer `index` (negative: zero bits).
fn set_bits(network: &Network, index: usize, bits: &[f32]) {
    tch::no_grad(|| {
        network
            .quantized_weight(index)
            .bit_depth
            .shallow_clone()
            .copy_(&Tensor::from_slice(bits))
    });
}

#[test]
fn a_depthwise_channel_goes_with_its_input_channel() {
    // conv 2 -> 4, then a depthwise conv with two output channels per input channel (rows 2c
    // and 2c + 1 read channel c), then a pointwise conv and the classifier.
    let model = |bias| ModelConfig {
        input: vec![2, 8, 8],
        layers: vec![
            conv(4, 3, 1, 1, false),
            LayerConfig::Relu,
            grouped(8, 3, 1, 1, bias, 4),
            LayerConfig::Relu,
            conv(3, 1, 1, 0, false),
            LayerConfig::Flatten,
            linear(3, false),
        ],
    };
    let metadata = metadata_for(&model(false), None);
    for bias in [false, true] {
        tch::manual_seed(5);
        let mut network = Network::new(&model(bias), 8.0, Device::Cpu).unwrap();
        // Channel 1 of the first conv is dead: the depthwise rows 2 and 3 read nothing. Rows 6
        // and 7 are dead: channel 3 is read by nobody. Row 0 is dead, but row 1 still reads
        // channel 0.
        set_bits(&network, 0, &[8.0, -1.0, 8.0, 8.0]);
        set_bits(&network, 1, &[-1.0, 8.0, 8.0, 8.0, 8.0, 8.0, -1.0, -1.0]);
        sgsc::size::prepare_for_storage(&network).unwrap();
        let input = Tensor::randn([3, 2, 8, 8], (Kind::Float, Device::Cpu));
        let before = tch::no_grad(|| network.forward(&input, false, true)).unwrap();
        let steered = stored_length(&network, &model(bias), metadata.clone()).unwrap();
        let (bytes, _) = export(&mut network, metadata.clone(), ExportFormat::Sgsc).unwrap();
        assert_eq!(
            steered,
            bytes.len(),
            "bias {bias}: the steered size is the file's"
        );
        let after = tch::no_grad(|| network.forward(&input, false, true)).unwrap();
        let moved = (&after - &before).abs().max().double_value(&[]);
        assert!(moved < 1e-5, "bias {bias}: outputs moved by {moved}");
        let packed = decode(&bytes).unwrap();
        let convs: Vec<(usize, usize, usize)> = packed
            .layers
            .iter()
            .filter_map(|layer| match layer.spec {
                sgsc_runtime::model::LayerSpec::Conv2d {
                    in_channels,
                    out_channels,
                    groups,
                    ..
                } => Some((in_channels, out_channels, groups)),
                _ => None,
            })
            .collect();
        if bias {
            // Every depthwise row sends its bias onwards: nothing goes.
            assert_eq!(convs, vec![(2, 4, 1), (4, 8, 4), (8, 3, 1)]);
        } else {
            // Channels 1 and 3 go, with depthwise rows 2, 3, 6 and 7.
            assert_eq!(convs, vec![(2, 2, 1), (2, 4, 2), (4, 3, 1)]);
        }
        let logits = Model::from_bytes(&bytes)
            .unwrap()
            .classify(&floats(&input), 3)
            .unwrap();
        let difference = largest_difference(&floats(&before), &logits);
        assert!(
            difference < 1e-4,
            "bias {bias}: runtime differs by {difference}"
        );
    }
}

#[test]
fn a_residual_stream_keeps_its_channels_and_a_block_inside_loses_them() {
    // stem conv (writes the stream) -> block [conv (inside), relu, conv (adds into the stream)]
    // -> add -> relu -> flatten -> linear.
    let model = ModelConfig {
        input: vec![2, 6, 6],
        layers: vec![
            conv(4, 3, 1, 1, false),
            LayerConfig::Relu,
            LayerConfig::Residual,
            conv(5, 3, 1, 1, false),
            LayerConfig::Relu,
            conv(4, 3, 1, 1, false),
            LayerConfig::Add,
            LayerConfig::Relu,
            LayerConfig::Flatten,
            linear(3, false),
        ],
    };
    tch::manual_seed(9);
    let mut network = Network::new(&model, 8.0, Device::Cpu).unwrap();
    // Stream channel 1: dead in the block's last conv, alive in the skip (the stem). Stream
    // channel 2: dead in both. Inside the block, channel 3 of the first conv is dead.
    set_bits(&network, 0, &[8.0, 8.0, -1.0, 8.0]);
    set_bits(&network, 1, &[8.0, 8.0, 8.0, -1.0, 8.0]);
    set_bits(&network, 2, &[8.0, -1.0, -1.0, 8.0]);
    sgsc::size::prepare_for_storage(&network).unwrap();
    let input = Tensor::randn([3, 2, 6, 6], (Kind::Float, Device::Cpu));
    let before = tch::no_grad(|| network.forward(&input, false, true)).unwrap();
    let metadata = metadata_for(&model, None);
    let steered = stored_length(&network, &model, metadata.clone()).unwrap();
    let (bytes, removed) = export(&mut network, metadata, ExportFormat::Sgsc).unwrap();
    assert_eq!(steered, bytes.len());
    let after = tch::no_grad(|| network.forward(&input, false, true)).unwrap();
    let moved = (&after - &before).abs().max().double_value(&[]);
    assert!(moved < 1e-5, "outputs moved by {moved}");
    // Only the block's inside lost its dead channel; the stream keeps all four, dead or not.
    assert_eq!(removed, 1);
    let rows: Vec<i64> = (0..3)
        .map(|index| network.quantized_weight(index).weight.size()[0])
        .collect();
    assert_eq!(rows, vec![4, 4, 4]);
    assert_eq!(
        network.quantized_weight(2).weight.size()[1],
        4,
        "columns followed"
    );
}

#[test]
fn every_image_kind_runs_on_integers_close_to_its_f32_logits() {
    let batch = 64usize;
    for (seed, (case, model)) in cases().into_iter().enumerate() {
        tch::manual_seed(seed as i64);
        let mut network = Network::new(&model, 8.0, Device::Cpu).unwrap();
        randomise(&network);
        sgsc::size::prepare_for_storage(&network).unwrap();
        let mut metadata = metadata_for(&model, None);
        let language = model.input.len() == 1;
        if !language {
            // Signed inputs, as a normalised data set gives, through the pixel table.
            metadata.normalization = Some(sgsc_runtime::model::Normalization::uniform(0.25, 0.5));
        }
        let (bytes, _) = export(&mut network, metadata, ExportFormat::Sgsc).unwrap();
        let runtime = Model::from_bytes(&bytes).unwrap();
        if language {
            let ranges = vec![1.0; runtime.packed().layers.len()];
            let refused = IntegerModel::new(runtime.packed(), &ranges, 8).unwrap_err();
            assert!(
                matches!(refused, RuntimeError::Integer(_)),
                "{case}: {refused}"
            );
            continue;
        }
        let values: usize = model.input.iter().product::<i64>() as usize;
        let pixels: Vec<u8> = Vec::<i64>::try_from(&Tensor::randint(
            256,
            [(batch * values) as i64],
            (Kind::Int64, Device::Cpu),
        ))
        .unwrap()
        .into_iter()
        .map(|p| p as u8)
        .collect();
        let expected = runtime.classify_pixels(&pixels, batch).unwrap();
        let ranges = runtime.layer_ranges(&pixels, batch).unwrap();
        let integer = IntegerModel::new(runtime.packed(), &ranges, 8).unwrap();
        let logits: Vec<f32> = integer
            .classify_pixels(&pixels, batch)
            .unwrap()
            .iter()
            .map(|&logit| (f64::from(logit) * integer.output_scale()) as f32)
            .collect();
        let outputs = integer.outputs();
        // The logits' reach, and how far they move with the input (random networks are often
        // dominated by their biases): the integer path must follow both.
        let reach = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let spread = expected
            .chunks(outputs)
            .flat_map(|row| {
                row.iter()
                    .zip(&expected[..outputs])
                    .map(|(a, b)| (a - b).abs())
            })
            .fold(0.0f32, f32::max);
        let difference = largest_difference(&expected, &logits);
        assert!(
            difference <= 0.05 * reach && difference <= 0.5 * spread.max(1e-6),
            "{case}: the integer path differs by {difference} (logits reach {reach}, move by {spread})"
        );
        // Every back end computes the same classes, but for near ties.
        let argmax = |row: &[f32]| {
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        };
        let agreeing = expected
            .chunks(outputs)
            .zip(logits.chunks(outputs))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        assert!(
            agreeing * 10 >= batch * 9,
            "{case}: {agreeing} of {batch} classes agree"
        );
        // The generated C computes the integer path's logits exactly.
        let input = [0, 1, 2].map(|axis| model.input[axis] as usize);
        let library = sgsc::codegen::generate(integer.plan(), input, &[]).unwrap();
        let from_c = common::run_c(&library, &pixels);
        let from_rust: Vec<Vec<i64>> = integer
            .classify_pixels(&pixels, batch)
            .unwrap()
            .chunks(outputs)
            .map(|row| row.iter().map(|&v| i64::from(v)).collect())
            .collect();
        assert_eq!(from_c, from_rust, "{case}: the C library's logits");
    }
}
