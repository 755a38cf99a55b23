//! Export to the packed format and the pure-Rust runtime against the training side: the same
//! logits (within 1e-4) and the same predictions, for the CNN and the transformer; the same for
//! the safetensors and ONNX exports (ONNX run by onnxruntime); for the CNN, the integer path
//! close to the f32 path and its generated C exact.

mod common;

use sgsc::config::ExperimentConfig;
use sgsc::data::{load_test, load_train_validation, Tensors};
use sgsc::pack::export::{remove_dead_channels, to_packed, to_safetensors};
use sgsc::pack::onnx::to_onnx;
use sgsc::train::checkpoint;
use sgsc::train::learner::Learner;
use sgsc::train::trainer::{checkpoint_path, train};
use sgsc::train::Mode;
use sgsc_runtime::format::{decode, encode};
use sgsc_runtime::model::{Metadata, Normalization};
use sgsc_runtime::{IntegerModel, Model};
use tch::{Device, Kind, Tensor};

/// Trains `config` briefly in unsafe mode and loads the result back as the export would.
fn trained(config: &ExperimentConfig) -> Learner {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    train(config, &common::run_options(Mode::Unsafe, dir.path())).unwrap();
    let (info, tensors) = checkpoint::load(&checkpoint_path(dir.path())).unwrap();
    let mut learner = Learner::new(config, Mode::Unsafe, Device::Cpu).unwrap();
    learner.load_state(&tensors, info.step).unwrap();
    learner
}

fn metadata(
    input: Vec<usize>,
    normalization: Option<Normalization>,
    vocabulary: Option<String>,
) -> Metadata {
    Metadata {
        input,
        normalization,
        vocabulary,
        classes: None,
        data: None,
        certificate: None,
        summary: None,
    }
}

/// Gives the first `count` channels of quantized layer `index` zero bits, so they die.
fn kill_channels(learner: &Learner, index: usize, count: i64) {
    let bits = &learner.network.quantized_weight(index).bit_depth;
    let _ = tch::no_grad(|| bits.narrow(0, 0, count).fill_(-1.0));
}

fn floats(tensor: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&tensor.to_kind(Kind::Float).view([-1])).unwrap()
}

fn argmax_rows(values: &[f32], width: usize) -> Vec<usize> {
    values
        .chunks_exact(width)
        .map(|row| (0..width).fold(0, |best, i| if row[i] > row[best] { i } else { best }))
        .collect()
}

#[test]
fn runtime_matches_the_training_side_on_a_thousand_test_images() {
    let mut config = common::mnist_config();
    config.train.steps = 120;
    config.train.batch_size = 64;
    config.train.eval_every = 120;
    config.train.checkpoint_every = 120;
    config.data.validation_size = 2000;
    let mut learner = trained(&config);
    kill_channels(&learner, 0, 3);
    kill_channels(&learner, 2, 5);
    let test = load_test(
        &config.data,
        &config.model.input,
        &common::data_dirs(),
        None,
    )
    .unwrap();
    let positions: Vec<usize> = (0..1000).collect();
    let (inputs, labels) = test.tensors(&positions, &Default::default(), None).unwrap();
    sgsc::size::prepare_for_storage(&learner.network).unwrap();
    let before = floats(&tch::no_grad(|| learner.network.forward(&inputs, false, true)).unwrap());

    let removed = remove_dead_channels(&mut learner.network).unwrap();
    assert_eq!(removed, 8, "the export removes the channels that died");
    let normalization = Normalization::uniform(0.1307, 0.3081);
    let packed = to_packed(
        &learner.network,
        metadata(vec![1, 28, 28], Some(normalization), None),
    )
    .unwrap();
    let bytes = encode(&packed).unwrap();
    assert_eq!(decode(&bytes).unwrap(), packed, "the file round-trips");
    let model = Model::from_bytes(&bytes).unwrap();

    // The safetensors export holds the same weights as the training side, in PyTorch's shapes.
    let safetensors_bytes = to_safetensors(&packed).unwrap();
    let exported = safetensors::SafeTensors::deserialize(&safetensors_bytes).unwrap();
    for (index, name) in [(0, "layers.0"), (2, "layers.6"), (4, "layers.13")] {
        let view = exported.tensor(&format!("{name}.weight")).unwrap();
        let expected = learner.network.quantized_weight(index).quantized().unwrap();
        let shape: Vec<usize> = expected.size().iter().map(|&d| d as usize).collect();
        assert_eq!(view.shape(), shape.as_slice(), "{name}");
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let expected = floats(&expected);
        assert!(
            values
                .iter()
                .zip(&expected)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs()),
            "{name}: dequantized weights differ"
        );
    }
    assert!(exported.tensor("layers.4.running_var").is_ok());

    let pixels: Vec<u8> = positions
        .iter()
        .flat_map(|&i| test.images().unwrap().image(i).to_vec())
        .collect();
    let logits = model.classify_pixels(&pixels, 1000).unwrap();

    let largest = before
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        largest < 1e-4,
        "largest logit difference {largest} ({removed} channels removed at export)"
    );
    let labels = Vec::<i64>::try_from(&labels).unwrap();
    let (expected, got) = (argmax_rows(&before, 10), argmax_rows(&logits, 10));
    assert_eq!(expected, got, "every prediction is the same");
    let correct = got
        .iter()
        .zip(&labels)
        .filter(|(p, &l)| **p as i64 == l)
        .count();
    assert!(correct > 800, "{correct}/1000 right after 120 steps");

    // The ONNX export, run by onnxruntime, predicts the same.
    let onnx_logits = common::run_onnx(
        &to_onnx(&packed).unwrap(),
        &floats(&inputs),
        [1000, 1, 28, 28],
    );
    let largest = onnx_logits
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        largest < 1e-4,
        "onnxruntime's logits differ by up to {largest}"
    );
    assert_eq!(
        argmax_rows(&onnx_logits, 10),
        got,
        "onnxruntime predicts the same"
    );

    // The integer path, calibrated on 500 training images, within 0.3 points of the f32 path's
    // accuracy; the generated C gives exactly its logits.
    let train = load_train_validation(&config.data, &config.model.input, &common::data_dirs())
        .unwrap()
        .train;
    let images = train.images().unwrap();
    let calibration: Vec<u8> = (0..500)
        .flat_map(|i| images.image(i * images.len() / 500).to_vec())
        .collect();
    let ranges = model.layer_ranges(&calibration, 500).unwrap();
    let integer = IntegerModel::new(model.packed(), &ranges, 8).unwrap();
    let integer_logits = integer.classify_pixels(&pixels, 1000).unwrap();
    let integer_classes = argmax_rows(
        &integer_logits.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        10,
    );
    let integer_correct = integer_classes
        .iter()
        .zip(&labels)
        .filter(|(p, &l)| **p as i64 == l)
        .count();
    assert!(
        integer_correct.abs_diff(correct) <= 3,
        "integer path {integer_correct}/1000 right, f32 path {correct}/1000"
    );
    let library = sgsc::codegen::generate(integer.plan(), [1, 28, 28], &[]).unwrap();
    let from_c = common::run_c(&library, &pixels);
    let from_rust: Vec<Vec<i64>> = integer_logits
        .chunks(10)
        .map(|row| row.iter().map(|&v| i64::from(v)).collect())
        .collect();
    assert_eq!(from_c.len(), 1000);
    assert!(from_c == from_rust, "the C library's logits differ");
}

#[test]
fn runtime_matches_the_training_side_on_text() {
    let mut config = common::small_names_config();
    config.train.steps = 60;
    config.train.eval_every = 60;
    config.train.checkpoint_every = 60;
    let mut learner = trained(&config);
    kill_channels(&learner, 2, 16); // the value rows of both heads of block 1: one head stays
    kill_channels(&learner, 4, 10); // 10 MLP units of block 1
    let test = load_test(
        &config.data,
        &config.model.input,
        &common::data_dirs(),
        None,
    )
    .unwrap();
    let positions: Vec<usize> = (0..40).collect();
    let (inputs, _) = test.tensors(&positions, &Default::default(), None).unwrap();
    sgsc::size::prepare_for_storage(&learner.network).unwrap();
    let before = floats(&tch::no_grad(|| learner.network.forward(&inputs, false, true)).unwrap());
    let removed = remove_dead_channels(&mut learner.network).unwrap();
    // One head (16 rows each of query, key and value) and 10 MLP units.
    assert_eq!(
        removed,
        3 * 16 + 10,
        "the export removes a dead head and dead MLP units"
    );
    let vocabulary: String = std::iter::once('\n').chain('a'..='z').collect();
    let packed = to_packed(&learner.network, metadata(vec![16], None, Some(vocabulary))).unwrap();
    let model = Model::from_bytes(&encode(&packed).unwrap()).unwrap();
    let ids: Vec<u32> = Vec::<i64>::try_from(&inputs.view([-1]))
        .unwrap()
        .iter()
        .map(|&i| i as u32)
        .collect();
    let logits = model.next_token_logits(&ids, 40).unwrap();
    assert_eq!(logits.len(), before.len());
    let largest = before
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(largest < 1e-4, "largest logit difference {largest}");
    assert_eq!(argmax_rows(&before, 27), argmax_rows(&logits, 27));
}

#[test]
fn colour_images_are_normalised_per_channel_alike_in_training_and_the_runtime() {
    // A random 3-channel CNN on 12x10 images; each channel has its own mean and deviation.
    let mut config = common::mnist_config();
    config.model.input = vec![3, 12, 10];
    config.model.layers = vec![
        sgsc::models::LayerConfig::Conv2d {
            out_channels: 4,
            kernel: 3,
            stride: 1,
            padding: 1,
            bias: true,
            groups: 1,
        },
        sgsc::models::LayerConfig::Relu,
        sgsc::models::LayerConfig::Flatten,
        sgsc::models::LayerConfig::Linear {
            out_features: 5,
            bias: true,
        },
    ];
    tch::manual_seed(3);
    let network = sgsc::models::Network::new(&config.model, 8.0, Device::Cpu).unwrap();
    let normalization = sgsc::data::Normalization {
        mean: vec![0.2, 0.5, 0.7],
        std: vec![0.3, 0.1, 0.25],
    };
    let shape = sgsc::data::ImageShape::new(3, 12, 10);
    let images = 6;
    let split = sgsc::data::ImageSplit {
        shape,
        images: (0..images * shape.values())
            .map(|i| (i * 7919 % 251) as u8)
            .collect(),
        labels: vec![0; images],
        source_indices: (0..images as u32).collect(),
        normalization: normalization.clone(),
    };
    let positions: Vec<usize> = (0..images).collect();
    let (inputs, _) = split
        .tensors(&positions, &Default::default(), None)
        .unwrap();
    sgsc::size::prepare_for_storage(&network).unwrap();
    let expected = floats(&tch::no_grad(|| network.forward(&inputs, false, true)).unwrap());
    let file_normalization = Normalization {
        mean: normalization.mean.clone(),
        std: normalization.std.clone(),
    };
    let packed = to_packed(
        &network,
        metadata(vec![3, 12, 10], Some(file_normalization), None),
    )
    .unwrap();
    let model = Model::from_bytes(&encode(&packed).unwrap()).unwrap();
    let logits = model.classify_pixels(&split.images, images).unwrap();
    let largest = expected
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(largest < 1e-4, "logits differ by {largest}");
}

#[test]
fn the_file_records_the_normalisation_training_used() {
    let mut config = common::mnist_config();
    let recorded = |config: &ExperimentConfig| {
        sgsc::pack::export::metadata(config, &Default::default(), None, None).unwrap()
    };
    let normalised = recorded(&config);
    assert_eq!(
        normalised.normalization,
        Some(Normalization::uniform(0.1307, 0.3081)),
        "MNIST's published constants"
    );
    assert_eq!(normalised.classes.unwrap()[9], "9");
    config.data.input.normalize = false;
    assert_eq!(
        recorded(&config).normalization,
        Some(Normalization::uniform(0.0, 1.0)),
        "pixels / 255 as they are"
    );
}
