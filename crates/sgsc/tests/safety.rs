//! The safety guard holds its budget under a size pressure that makes unguarded compression
//! collapse.

mod common;

use sgsc::config::SafetyConfig;
use sgsc::data::load_train_validation;
use sgsc::preserve::{
    score, select, Candidates, PreservationOptions, PreservationSet, SplitInfo, FORMAT,
};
use sgsc::train::checkpoint;
use sgsc::train::evaluate::evaluate;
use sgsc::train::safety::load_reference;
use sgsc::train::trainer::{checkpoint_path, train};
use sgsc::train::Mode;
use tch::Device;

#[test]
fn extreme_gamma_collapses_unsafe_but_safe_keeps_its_budget() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::mnist_config();
    config.data.validation_size = 1000;
    config.train.batch_size = 64;
    config.train.steps = 200;
    config.train.eval_every = 200;
    config.train.checkpoint_every = 200;
    config.safety = None;

    // A small float reference and its preservation set (100 of the first 2,000 training images).
    let reference_dir = dir.path().join("reference");
    train(
        &config,
        &common::run_options(Mode::Baseline, &reference_dir),
    )
    .unwrap();
    let reference_path = checkpoint_path(&reference_dir);
    let reference = load_reference(&reference_path, &config, Device::Cpu).unwrap();
    let data =
        load_train_validation(&config.data, &config.model.input, &common::data_dirs()).unwrap();
    let subset = data
        .train
        .images()
        .unwrap()
        .subset(&(0..2000).collect::<Vec<_>>());
    let scores = score(&reference, &subset, &config.data.input, 500, Device::Cpu).unwrap();
    let preservation_options = PreservationOptions {
        size: 200,
        ..PreservationOptions::default()
    };
    let set = PreservationSet {
        format: FORMAT.into(),
        split: SplitInfo::train(config.data.validation_size, config.data.split_seed),
        reference: reference_path.display().to_string(),
        members: select(
            &scores,
            Candidates {
                source_indices: &subset.source_indices,
                labels: &subset.labels,
            },
            &preservation_options,
        )
        .unwrap(),
        options: preservation_options,
    };
    let set_path = dir.path().join("preservation.json");
    set.save(&set_path).unwrap();

    // Extreme size pressure, from the reference's weights in both modes.
    config.quant.gamma = 20.0;
    config.train.steps = 150;
    config.train.eval_every = 150;
    config.train.checkpoint_every = 150;
    config.train.init_from = Some(reference_path.clone());
    config.safety = Some(SafetyConfig {
        preservation_set: set_path,
        reference: reference_path,
        preservation_weight: 1.0,
        preservation_batch_size: 32,
        distillation_weight: 1.0,
        temperature: 4.0,
        train_distillation_weight: 0.0,
        check_every: 25,
        max_preservation_drop: 2.0,
        max_validation_drop: 2.0,
        cooldown_steps: 50,
        breach_gamma_factor: 0.1,
        breach_preservation_factor: 2.0,
        max_preservation_factor: 8.0,
        pressure_recovery: 1.1,
        restore_fraction: 0.5,
        breaches_before_rollback: 2,
        prune_grace_steps: 50,
    });
    let positions: Vec<usize> = set
        .members
        .iter()
        .map(|m| {
            data.train
                .source_indices()
                .iter()
                .position(|&i| i == m.index)
                .unwrap()
        })
        .collect();
    let preservation = data.train.subset(&positions);
    let preservation_accuracy = |network: &sgsc::models::Network, quantize: bool| {
        evaluate(
            network,
            &preservation,
            &config.data.input,
            quantize,
            500,
            Device::Cpu,
        )
        .unwrap()
        .accuracy
    };
    let reference_accuracy = preservation_accuracy(&reference, false);

    let unguarded = train(
        &config,
        &common::run_options(Mode::Unsafe, &dir.path().join("unsafe")),
    )
    .unwrap();
    let unguarded_accuracy = preservation_accuracy(&unguarded.learner.network, true);
    assert!(
        unguarded_accuracy < reference_accuracy - 0.2,
        "unsafe should collapse: {unguarded_accuracy} against the reference's {reference_accuracy}"
    );

    let guarded = train(
        &config,
        &common::run_options(Mode::Safe, &dir.path().join("safe")),
    )
    .unwrap();
    let certificate = guarded
        .certificate
        .expect("a finished safe run has a certificate");
    assert!(certificate.met, "{certificate:?}");
    assert!(
        certificate.events.breaches > 0,
        "the pressure must have caused breaches: {certificate:?}"
    );
    assert!((certificate.budget.reference_preservation - reference_accuracy).abs() < 1e-9);
    let guarded_accuracy = preservation_accuracy(&guarded.learner.network, true);
    assert!(
        100.0 * (reference_accuracy - guarded_accuracy) <= 2.0 + 1e-9,
        "safe lost more than its budget: {guarded_accuracy} against {reference_accuracy}"
    );
    // The events are in the run's log.
    let log = std::fs::read_to_string(dir.path().join("safe/metrics.jsonl")).unwrap();
    assert!(log.contains("\"event\":\"check\"") && log.contains("\"event\":\"final_gate\""));

    // Interrupted between checks and resumed, the guarded run ends exactly where it ended in one
    // go: the guard's snapshot, floors, pressure and event counts travel in the checkpoint.
    let resumed_dir = dir.path().join("safe-resumed");
    let mut first_part = common::run_options(Mode::Safe, &resumed_dir);
    first_part.stop_at = Some(60);
    train(&config, &first_part).unwrap();
    let first_log = std::fs::read_to_string(resumed_dir.join("metrics.jsonl")).unwrap();
    assert!(
        first_log.contains("\"action\":\"restore\""),
        "the guard acted before the interruption, so a fresh guard would end differently"
    );
    let mut second_part = common::run_options(Mode::Safe, &resumed_dir);
    second_part.resume = true;
    let resumed = train(&config, &second_part).unwrap();
    assert_eq!(resumed.certificate.as_ref(), Some(&certificate));
    let (_, at_once) = checkpoint::load(&checkpoint_path(&dir.path().join("safe"))).unwrap();
    let (_, in_two_parts) = checkpoint::load(&checkpoint_path(&resumed_dir)).unwrap();
    assert_eq!(at_once.len(), in_two_parts.len());
    for (name, tensor) in &at_once {
        assert!(
            tensor.equal(&in_two_parts[name]),
            "{name} differs after resume"
        );
    }
}
