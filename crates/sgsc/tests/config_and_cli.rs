//! The shipped config builds the paper's network; bad configs, shapes and files give typed errors
//! (in the library) and clear messages without panics (on the command line).

mod common;

use sgsc::config::ExperimentConfig;
use sgsc::data::DataError;
use sgsc::models::{LayerConfig, Network};
use sgsc::size::float_bytes;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use tch::{Device, Kind, Tensor};

#[test]
fn shipped_config_builds_the_papers_cnn() {
    let config = common::mnist_config();
    let network = Network::new(&config.model, 8.0, Device::Cpu).unwrap();
    // 32*1*25 + 32*32*25 + 64*32*9 + 64*64*9 + 10*576 weights.
    assert_eq!(
        network.weight_count(),
        800 + 25_600 + 18_432 + 36_864 + 5_760
    );
    assert_eq!(network.quantized.len(), 5);
    assert_eq!(network.output_features, 10);
    // Float32: the weights plus two batch norms' running mean and variance (32 and 64 channels).
    assert_eq!(float_bytes(&network), 87_456 * 4 + (32 + 64) * 2 * 4);
    // The classifier sees 64 channels of 3x3 positions.
    let classifier = network.quantized.last().unwrap();
    assert_eq!(
        (classifier.input_channels, classifier.positions_per_input),
        (64, 9)
    );
    let logits = network
        .forward(
            &Tensor::zeros([3, 1, 28, 28], (Kind::Float, Device::Cpu)),
            false,
            true,
        )
        .unwrap();
    assert_eq!(logits.size(), vec![3, 10]);
}

#[test]
fn unknown_keys_are_config_errors() {
    let text = std::fs::read_to_string(common::workspace().join("configs/mnist-cnn.toml"))
        .unwrap()
        .replace("gamma = 0.07", "gama = 0.07");
    match ExperimentConfig::parse(&text, Path::new("typo.toml")) {
        Err(sgsc::Error::Config { message, .. }) => assert!(message.contains("gama"), "{message}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn overrides_replace_values_and_are_checked_like_the_file() {
    let path = common::workspace().join("configs/mnist-cnn.toml");
    let set = |overrides: &[&str]| {
        let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
        ExperimentConfig::load_with_overrides(&path, &overrides)
    };
    let config = set(&[
        "quant.learning_rate=0.02",
        "train.steps = 10",
        "safety.distillation_weight=0",
        "train.init_from=runs/x/checkpoint.safetensors",
    ])
    .unwrap();
    assert_eq!(config.quant.learning_rate, 0.02);
    assert_eq!(config.train.steps, 10);
    assert_eq!(config.safety.unwrap().distillation_weight, 0.0);
    assert_eq!(
        config.train.init_from.unwrap(),
        Path::new("runs/x/checkpoint.safetensors"),
        "a bare word is a string"
    );
    let untouched = ExperimentConfig::load(&path).unwrap();
    assert_eq!(set(&[]).unwrap(), untouched);
    for (bad, expected) in [
        ("quant.gama=0.1", "gama"),
        ("train.steps=0", "train.steps"),
        ("quant.gamma", "KEY=VALUE"),
        ("model.input.size=3", "not a section"),
        ("quant.activation_bits=9", "quant.activation_bits"),
        ("quant.activation_bits=1", "quant.activation_bits"),
        (
            "safety.max_deferred_breach=0.5",
            "safety.max_deferred_breach",
        ),
    ] {
        match set(&[bad]) {
            Err(sgsc::Error::Config { message, .. }) => {
                assert!(message.contains(expected), "{bad}: {message}")
            }
            other => panic!("{bad}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn impossible_networks_are_model_errors() {
    let mut config = common::mnist_config().model;
    config.layers.retain(|layer| *layer != LayerConfig::Flatten);
    assert!(matches!(
        Network::new(&config, 8.0, Device::Cpu),
        Err(sgsc::Error::Model(_))
    ));
    let mut tiny_input = common::mnist_config().model;
    tiny_input.input = vec![1, 4, 4];
    assert!(matches!(
        Network::new(&tiny_input, 8.0, Device::Cpu),
        Err(sgsc::Error::Model(_))
    ));
}

#[test]
fn loading_state_of_the_wrong_shape_changes_nothing() {
    let config = common::mnist_config();
    let network = Network::new(&config.model, 8.0, Device::Cpu).unwrap();
    let mut state: HashMap<String, Tensor> = network
        .state()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let before = network.state()[0].1.copy();
    state.insert(
        "layers.0.weight".into(),
        Tensor::ones([32, 1, 5, 5], (Kind::Float, Device::Cpu)),
    );
    state.insert(
        "layers.13.weight".into(),
        Tensor::zeros([10, 575], (Kind::Float, Device::Cpu)),
    );
    assert!(matches!(
        network.load_state(&state),
        Err(sgsc::Error::Model(_))
    ));
    assert!(
        network.state()[0].1.equal(&before),
        "nothing is loaded unless everything fits"
    );
}

fn sgsc(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sgsc"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn command_line_reports_bad_input_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    let text = std::fs::read_to_string(common::workspace().join("configs/mnist-cnn.toml"))
        .unwrap()
        .replacen("\nsteps = ", "\nstep = ", 1);
    std::fs::write(&typo, text).unwrap();
    let (ok, stderr) = sgsc(&["train", "--config", typo.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown field") && !stderr.contains("panicked"),
        "{stderr}"
    );

    let garbage = dir.path().join("checkpoint.safetensors");
    std::fs::write(&garbage, b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage").unwrap();
    let (ok, stderr) = sgsc(&["eval", "--checkpoint", garbage.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("checkpoint") && !stderr.contains("panicked"),
        "{stderr}"
    );

    let not_a_model = dir.path().join("model.sgsc");
    std::fs::write(&not_a_model, b"GGUF and then some").unwrap();
    for command in ["inspect", "eval"] {
        let (ok, stderr) = sgsc(&[command, not_a_model.to_str().unwrap()]);
        assert!(
            !ok && stderr.contains("not an sgsc model file") && !stderr.contains("panicked"),
            "{command}: {stderr}"
        );
    }
    std::fs::write(&not_a_model, b"SGSC\x02\x00\x03\x00META\xff\xff").unwrap();
    let (ok, stderr) = sgsc(&["predict", not_a_model.to_str().unwrap(), "--prompt", "a"]);
    assert!(
        !ok && stderr.contains("truncated") && !stderr.contains("panicked"),
        "{stderr}"
    );

    let (ok, stderr) = sgsc(&["train", "--mode", "reckless"]);
    assert!(!ok && stderr.contains("unknown mode"), "{stderr}");

    let config = common::workspace().join("configs/mnist-cnn.toml");
    let (ok, stderr) = sgsc(&[
        "bench",
        "--config",
        config.to_str().unwrap(),
        "--device",
        "tpu",
    ]);
    assert!(!ok && stderr.contains("expected cpu or cuda"), "{stderr}");
}

#[test]
fn a_model_the_data_cannot_feed_is_refused_before_training() {
    let text = std::fs::read_to_string(common::workspace().join("configs/mnist-cnn.toml")).unwrap();
    let path = Path::new("edited.toml");
    let colour = text.replace("input = [1, 28, 28]", "input = [3, 28, 28]");
    assert!(matches!(
        ExperimentConfig::parse(&colour, path),
        Err(sgsc::Error::Data(DataError::Channels {
            found: 1,
            expected: 3,
            ..
        }))
    ));
    let seven = text.replace("out_features = 10", "out_features = 7");
    assert!(matches!(
        ExperimentConfig::parse(&seven, path),
        Err(sgsc::Error::Data(DataError::ClassCount {
            classes: 10,
            outputs: 7,
            ..
        }))
    ));
    let cifar = text.replace("dataset = \"mnist\"", "dataset = \"cifar10\"");
    assert!(matches!(
        ExperimentConfig::parse(&cifar, path),
        Err(sgsc::Error::Data(DataError::Channels { found: 3, .. }))
    ));
    // Through the command line: refused with the reason, and no run folder is made.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("colour.toml");
    std::fs::write(&config, &colour).unwrap();
    let out = dir.path().join("run");
    let (ok, stderr) = sgsc(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("model.input has 3"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "nothing was written");
}
