//! Training end to end on MNIST: learning happens, interrupted runs resume exactly, and a
//! diverging run rolls back instead of carrying NaNs forward.

mod common;

use sgsc::config::ExperimentConfig;
use sgsc::data::{load_test, load_train_validation};
use sgsc::train::checkpoint;
use sgsc::train::learner::{Learner, StepTerms};
use sgsc::train::trainer::{checkpoint_path, train};
use sgsc::train::Mode;
use std::path::Path;
use tch::{Device, Tensor};

fn small_config(steps: i64, batch_size: usize, eval_every: i64) -> ExperimentConfig {
    let mut config = common::mnist_config();
    config.train.steps = steps;
    config.train.batch_size = batch_size;
    config.train.eval_every = eval_every;
    config.train.checkpoint_every = eval_every;
    config.data.validation_size = 2000;
    config
}

fn metric_lines(out_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn mnist_label_histograms_match_the_published_ones() {
    let config = common::mnist_config();
    let (data_config, input) = (&config.data, &config.model.input);
    let data = load_train_validation(data_config, input, &common::data_dirs()).unwrap();
    assert_eq!(data.classes.as_ref().unwrap()[7], "7");
    let (train, validation) = (
        data.train.images().unwrap(),
        data.validation.images().unwrap(),
    );
    let mut train_counts = [0usize; 10];
    for &label in train.labels.iter().chain(&validation.labels) {
        train_counts[label as usize] += 1;
    }
    assert_eq!(
        train_counts,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(data.train.len(), 55_000);
    assert_eq!(data.validation.len(), 5_000);
    // MNIST keeps its published normalisation.
    assert_eq!(train.normalization.mean, vec![0.1307]);
    let test = load_test(data_config, input, &common::data_dirs(), None).unwrap();
    let mut test_counts = [0usize; 10];
    for &label in &test.images().unwrap().labels {
        test_counts[label as usize] += 1;
    }
    assert_eq!(
        test_counts,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

#[test]
fn both_modes_learn_a_small_run() {
    let _one_at_a_time = common::training_lock();
    for mode in [Mode::Baseline, Mode::Unsafe] {
        let dir = tempfile::tempdir().unwrap();
        let outcome = train(
            &small_config(150, 64, 50),
            &common::run_options(mode, dir.path()),
        )
        .unwrap();
        let lines = metric_lines(dir.path());
        assert_eq!(lines.len(), 3, "{mode}: one line per evaluation");
        let first = lines[0]["train_loss"].as_f64().unwrap();
        let last = lines[2]["train_loss"].as_f64().unwrap();
        assert!(
            last < 0.6 * first,
            "{mode}: training loss fell from {first} to {last}"
        );
        assert!(
            outcome.validation.accuracy > 0.93,
            "{mode}: validation accuracy {} after 150 steps",
            outcome.validation.accuracy
        );
        if mode == Mode::Unsafe {
            let q_first = lines[0]["size_term"].as_f64().unwrap();
            let q_last = lines[2]["size_term"].as_f64().unwrap();
            assert!(
                q_last < q_first,
                "size pressure lowers the bits: {q_first} -> {q_last}"
            );
        }
    }
}

#[test]
fn interrupted_run_resumes_to_identical_state() {
    let _one_at_a_time = common::training_lock();
    let config = small_config(30, 32, 10);
    let straight = tempfile::tempdir().unwrap();
    train(&config, &common::run_options(Mode::Unsafe, straight.path())).unwrap();

    let interrupted = tempfile::tempdir().unwrap();
    let mut first_part = common::run_options(Mode::Unsafe, interrupted.path());
    first_part.stop_at = Some(15);
    let stopped = train(&config, &first_part).unwrap();
    assert_eq!(stopped.steps_done, 15);
    let (info, _) = checkpoint::load(&checkpoint_path(interrupted.path())).unwrap();
    assert_eq!(info.step, 15);
    let mut second_part = common::run_options(Mode::Unsafe, interrupted.path());
    second_part.resume = true;
    train(&config, &second_part).unwrap();

    let (_, expected) = checkpoint::load(&checkpoint_path(straight.path())).unwrap();
    let (info, resumed) = checkpoint::load(&checkpoint_path(interrupted.path())).unwrap();
    assert_eq!(info.step, 30);
    assert_eq!(expected.len(), resumed.len());
    for (name, tensor) in &expected {
        assert!(tensor.equal(&resumed[name]), "{name} differs after resume");
    }
    let steps = |dir: &Path| -> Vec<i64> {
        metric_lines(dir)
            .iter()
            .map(|l| l["step"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(steps(straight.path()), steps(interrupted.path()));
}

#[test]
fn resuming_with_another_config_is_refused() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(4, 8, 2);
    train(&config, &common::run_options(Mode::Unsafe, dir.path())).unwrap();
    let mut other = config.clone();
    other.quant.gamma *= 2.0;
    let mut resume = common::run_options(Mode::Unsafe, dir.path());
    resume.resume = true;
    assert!(matches!(
        train(&other, &resume),
        Err(sgsc::Error::Checkpoint { .. })
    ));
}

#[test]
fn non_finite_loss_changes_nothing_and_diverging_runs_roll_back() {
    let _one_at_a_time = common::training_lock();
    // A batch of NaN inputs: the step reports a non-finite loss and leaves every tensor alone.
    let config = common::mnist_config();
    let mut learner = Learner::new(&config, Mode::Unsafe, Device::Cpu).unwrap();
    let before = learner.snapshot().unwrap();
    let inputs = Tensor::full([4, 1, 28, 28], f64::NAN, (tch::Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let report = learner
        .step(&inputs, &labels, 0, &StepTerms::default())
        .unwrap();
    assert!(!report.finite);
    let mut reference = Learner::new(&config, Mode::Unsafe, Device::Cpu).unwrap();
    reference.restore(&before).unwrap();
    for ((name, a), (_, b)) in learner.state().iter().zip(reference.state().iter()) {
        assert!(a.equal(b), "{name} changed by a non-finite step");
    }

    // An absurd learning rate blows the float weights up; the loop rolls back and logs it.
    let dir = tempfile::tempdir().unwrap();
    let mut diverging = small_config(6, 16, 3);
    diverging.train.learning_rate = 1e30;
    let outcome = train(&diverging, &common::run_options(Mode::Baseline, dir.path())).unwrap();
    assert!(outcome.rollbacks >= 1, "expected roll-backs");
    let events = metric_lines(dir.path())
        .iter()
        .filter(|line| line["event"] == "rollback")
        .count();
    assert_eq!(events as u32, outcome.rollbacks);
}

#[test]
fn pruning_cuts_optimizer_state_and_pruned_checkpoints_load() {
    let _one_at_a_time = common::training_lock();
    let config = common::mnist_config();
    let mut learner = Learner::new(&config, Mode::Unsafe, Device::Cpu).unwrap();
    tch::manual_seed(2);
    let inputs = Tensor::randn([8, 1, 28, 28], (tch::Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
    assert!(
        learner
            .step(&inputs, &labels, 0, &StepTerms::default())
            .unwrap()
            .finite
    );
    let before: std::collections::HashMap<String, Tensor> = learner
        .state()
        .into_iter()
        .map(|(name, tensor)| (name, tensor.copy()))
        .collect();

    // Keep the even channels of the first conv.
    let keep: Vec<i64> = (0..32).step_by(2).collect();
    learner.prune(0, &keep).unwrap();
    let keep_index = Tensor::from_slice(&keep);
    let after: std::collections::HashMap<String, Tensor> = learner.state().into_iter().collect();
    assert_eq!(after["layers.0.weight"].size(), vec![16, 1, 5, 5]);
    assert_eq!(after["layers.2.weight"].size(), vec![32, 16, 5, 5]);
    for (name, dim) in [
        ("adam.m.layers.0.weight", 0),
        ("adam.v.layers.0.bit_depth", 0),
        ("adam.m.layers.2.weight", 1),
        ("adam.v.layers.2.weight", 1),
    ] {
        assert!(
            after[name].equal(&before[name].index_select(dim, &keep_index)),
            "{name}"
        );
    }

    // Sizes stay measured against the starting network.
    let size = sgsc::size::payload_estimate(&learner.network, &learner.original).unwrap();
    assert_eq!(size.float_bytes, 350_592);
    assert_eq!(
        (size.layers[0].channels, size.layers[0].original_channels),
        (16, 32)
    );

    // Training goes on with the smaller tensors, and the optimizer moves them.
    let first_weights = after["layers.0.weight"].copy();
    assert!(
        learner
            .step(&inputs, &labels, 1, &StepTerms::default())
            .unwrap()
            .finite
    );
    assert!(!learner
        .network
        .quantized_weight(0)
        .weight
        .equal(&first_weights));

    // A pruned checkpoint loads into a learner built from the unpruned config.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pruned.safetensors");
    let info = checkpoint::CheckpointInfo {
        format: checkpoint::FORMAT.into(),
        mode: "unsafe".into(),
        step: 2,
        config: config.to_toml(),
        original_weights: learner.original.weights,
        guard: None,
        pressure: None,
        data: Default::default(),
    };
    checkpoint::save(&path, &info, &learner.state()).unwrap();
    let (_, tensors) = checkpoint::load(&path).unwrap();
    let mut fresh = Learner::new(&config, Mode::Unsafe, Device::Cpu).unwrap();
    fresh.load_state(&tensors, 2).unwrap();
    for ((name, a), (_, b)) in learner.state().iter().zip(fresh.state().iter()) {
        assert!(
            a.equal(b),
            "{name} differs after loading the pruned checkpoint"
        );
    }
    assert_eq!(fresh.original.weights, 87_456);
}
