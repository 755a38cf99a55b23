//! Float weights from PyTorch: a safetensors state dict under PyTorch's names loads exactly, as
//! the start of a run and as the safety reference; what does not fit is reported by name, all
//! of it at once.

mod common;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sgsc::error::Error;
use sgsc::models::state_dict::float_state;
use sgsc::models::Network;
use sgsc::train::safety::load_reference;
use std::path::Path;
use tch::{Device, Tensor};

/// Writes `tensors` as an F32 safetensors file without metadata (as PyTorch's tools do).
fn write_state_dict(path: &Path, tensors: &[(String, Tensor)]) {
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, tensor)| {
            let values = Vec::<f32>::try_from(tensor.flatten(0, -1)).unwrap();
            let shape = tensor.size().iter().map(|&d| d as usize).collect();
            (
                name.clone(),
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn copies(network: &Network) -> Vec<(String, Tensor)> {
    float_state(network)
        .into_iter()
        .map(|(name, tensor)| (name, tensor.detach().copy()))
        .collect()
}

#[test]
fn a_state_dict_round_trips_exactly_for_cnns_and_transformers() {
    for config in [common::mnist_config(), common::small_names_config()] {
        tch::manual_seed(1);
        let source = Network::new(&config.model, 8.0, Device::Cpu).unwrap();
        let mut tensors = copies(&source);
        if config.data.is_text() {
            let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
            assert!(names.contains(&"layers.0.token.weight"), "{names:?}");
            assert!(names.contains(&"layers.1.query.weight"), "{names:?}");
        } else {
            // PyTorch writes a batch-norm counter that sgsc ignores.
            tensors.push(("layers.4.num_batches_tracked".into(), Tensor::from(3.0f32)));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.safetensors");
        write_state_dict(&path, &tensors);
        tch::manual_seed(2);
        let loaded = load_reference(&path, &config, Device::Cpu).unwrap();
        for ((name, expected), (_, got)) in copies(&source).iter().zip(copies(&loaded)) {
            assert!(expected.equal(&got), "{name} differs after the import");
        }
    }
}

#[test]
fn an_unpruned_safetensors_export_is_a_start_too() {
    // `sgsc export --format safetensors` writes the dequantized weights under the same names.
    let config = common::mnist_config();
    tch::manual_seed(1);
    let source = Network::new(&config.model, 8.0, Device::Cpu).unwrap();
    let metadata = sgsc_runtime::model::Metadata {
        input: vec![1, 28, 28],
        normalization: None,
        vocabulary: None,
        classes: None,
        data: None,
        certificate: None,
        summary: None,
    };
    let packed = sgsc::pack::export::to_packed(&source, metadata).unwrap();
    let bytes = sgsc::pack::export::to_safetensors(&packed).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let loaded = load_reference(&path, &config, Device::Cpu).unwrap();
    let expected: Vec<f32> = packed.layers[0].dense_parts()[0].1.weight.dequantize();
    let got = Vec::<f32>::try_from(loaded.quantized_weight(0).weight.flatten(0, -1)).unwrap();
    assert_eq!(got, expected, "the dequantized weights, exactly");
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_all_named() {
    let config = common::mnist_config();
    tch::manual_seed(1);
    let source = Network::new(&config.model, 8.0, Device::Cpu).unwrap();
    let mut tensors: Vec<(String, Tensor)> = copies(&source)
        .into_iter()
        .filter(|(name, _)| name != "layers.2.weight")
        .collect();
    for (name, tensor) in tensors.iter_mut() {
        if name == "layers.13.weight" {
            *tensor = Tensor::zeros([10, 575], (tch::Kind::Float, Device::Cpu));
        }
    }
    tensors.push((
        "classifier.weight".into(),
        Tensor::zeros([2], tch::kind::FLOAT_CPU),
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    write_state_dict(&path, &tensors);
    match load_reference(&path, &config, Device::Cpu) {
        Err(Error::StateDict {
            missing,
            unexpected,
            misshaped,
            ..
        }) => {
            assert_eq!(missing, vec!["layers.2.weight".to_string()]);
            assert_eq!(unexpected, vec!["classifier.weight".to_string()]);
            assert_eq!(misshaped.len(), 1);
            assert!(
                misshaped[0].starts_with("layers.13.weight is [10, 575]"),
                "{misshaped:?}"
            );
        }
        other => panic!("expected a state-dict error, got {:?}", other.err()),
    }
    std::fs::write(&path, b"not safetensors").unwrap();
    assert!(matches!(
        load_reference(&path, &config, Device::Cpu),
        Err(Error::Checkpoint { .. })
    ));
}
