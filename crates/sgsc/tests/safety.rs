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

/// What the guard's tests share: a small float reference trained in `dir`, its preservation set
/// (a loss part of 100 of the first 2,000 training images, an audit part of 100 validation
/// images), the data, and a config whose `safe` runs start from
/// the reference under an extreme size pressure (gamma 20, 150 steps, budget 2 points).
struct Setup {
    config: sgsc::config::ExperimentConfig,
    data: sgsc::data::TrainValidation,
    set: PreservationSet,
    reference: sgsc::models::Network,
}

fn setup(dir: &std::path::Path) -> Setup {
    let mut config = common::mnist_config();
    config.data.validation_size = 1000;
    config.train.batch_size = 64;
    config.train.steps = 200;
    config.train.eval_every = 200;
    config.train.checkpoint_every = 200;
    config.safety = None;

    // A small float reference and its preservation set.
    let reference_dir = dir.join("reference");
    train(
        &config,
        &common::run_options(Mode::Baseline, &reference_dir),
    )
    .unwrap();
    let reference_path = checkpoint_path(&reference_dir);
    let reference = load_reference(&reference_path, &config, Device::Cpu).unwrap();
    let data =
        load_train_validation(&config.data, &config.model.input, &common::data_dirs()).unwrap();
    // The loss part from the first 2,000 training images, the audit part from validation.
    let subset = data
        .train
        .images()
        .unwrap()
        .subset(&(0..2000).collect::<Vec<_>>());
    let validation = data.validation.images().unwrap();
    let preservation_options = PreservationOptions {
        size: 200,
        audit_share: 0.5,
        ..PreservationOptions::default()
    };
    let (loss_size, audit_size) = preservation_options.part_sizes();
    let part = |split: &sgsc::data::ImageSplit, size: usize| {
        let scores = score(&reference, split, &config.data.input, 500, Device::Cpu).unwrap();
        let candidates = Candidates {
            source_indices: &split.source_indices,
            labels: &split.labels,
        };
        let options = PreservationOptions {
            size,
            ..preservation_options.clone()
        };
        select(&scores, candidates, &options).unwrap()
    };
    let set = PreservationSet {
        format: FORMAT.into(),
        split: SplitInfo::train(config.data.validation_size, config.data.split_seed),
        reference: reference_path.display().to_string(),
        members: part(&subset, loss_size),
        audit: part(validation, audit_size),
        options: preservation_options,
    };
    let set_path = dir.join("preservation.json");
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
        gamma_growth: 1.1,
        min_gamma_factor: 0.0625,
        audit_share: 0.5,
        check_slack: 1.0,
        restore_fraction: 0.5,
        breaches_before_restore: 1,
        breaches_before_rollback: 2,
        recovery_checks: 1,
        max_deferred_breach: 2.5,
        prune_grace_steps: 50,
    });
    Setup {
        config,
        data,
        set,
        reference,
    }
}

/// A `safe` learner at the reference's weights (quantizers reset to 8 bits) and its guard.
fn at_reference(setup: &Setup) -> (sgsc::train::learner::Learner, sgsc::train::safety::Guard) {
    let learner =
        sgsc::train::learner::Learner::new(&setup.config, Mode::Safe, Device::Cpu).unwrap();
    learner
        .network
        .load_state(&setup.reference.state().into_iter().collect())
        .unwrap();
    learner.network.reset_quantizers(8.0).unwrap();
    let guard =
        sgsc::train::safety::Guard::new(&setup.config, &setup.data, &learner, Device::Cpu).unwrap();
    (learner, guard)
}

#[test]
fn extreme_gamma_collapses_unsafe_but_safe_keeps_its_budget() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        config,
        data,
        set,
        reference,
    } = setup(dir.path());
    // The guard measures the audit part of the set: validation images.
    let position_of = data.validation.positions_by_index();
    let positions: Vec<usize> = set.audit.iter().map(|m| position_of[&m.index]).collect();
    let preservation = data.validation.subset(&positions);
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
    // The certificate names its sources by the digests of their bytes, not by their paths.
    let safety = config.safety.as_ref().unwrap();
    let digest = |path: &std::path::Path| {
        sgsc_data::locate::sha256_hex(&std::fs::read(path).unwrap())[..16].to_string()
    };
    assert_eq!(certificate.reference_sha256, digest(&safety.reference));
    assert_eq!(
        certificate.preservation_set_sha256,
        digest(&safety.preservation_set)
    );
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

#[test]
fn the_audit_part_reaches_no_loss() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let Setup { config, data, .. } = setup(dir.path());
    let learner = sgsc::train::learner::Learner::new(&config, Mode::Safe, Device::Cpu).unwrap();
    let mut guard = sgsc::train::safety::Guard::new(&config, &data, &learner, Device::Cpu).unwrap();
    let audit: std::collections::HashSet<u32> = guard.audit_indices().iter().copied().collect();
    // A set built with another audit share than the config's is refused, with the remedy.
    let mut other_share = config.clone();
    other_share.safety.as_mut().unwrap().audit_share = 0.25;
    match sgsc::train::safety::Guard::new(&other_share, &data, &learner, Device::Cpu).err() {
        Some(sgsc::error::Error::Config { message, .. }) => {
            assert!(message.contains("sgsc preserve"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Half of the 200 members, all of them validation images.
    assert_eq!(audit.len(), 100);
    let validation: std::collections::HashSet<u32> =
        data.validation.source_indices().iter().copied().collect();
    assert!(audit.is_subset(&validation));
    let mut seen = std::collections::HashSet::new();
    for step in 0..40 {
        seen.extend(guard.guidance(step).unwrap().indices);
    }
    assert!(seen.len() > 90, "the loss part is served: {}", seen.len());
    assert!(
        seen.is_disjoint(&audit),
        "an audit image reached the preservation loss"
    );

    // A safe run trains on the whole training split (the audit part is validation images).
    let mut short = config.clone();
    short.train.steps = 5;
    short.train.eval_every = 5;
    short.train.checkpoint_every = 5;
    let outcome = train(
        &short,
        &common::run_options(Mode::Safe, &dir.path().join("safe")),
    )
    .unwrap();
    let trained: std::collections::HashSet<u32> = outcome
        .data
        .train
        .source_indices()
        .iter()
        .copied()
        .collect();
    assert_eq!(trained.len(), data.train.len());
    let certificate = outcome.certificate.unwrap();
    assert_eq!(certificate.parts, (audit.len(), 200 - audit.len()));
    assert!(certificate.final_loss_part.is_some());
}

#[test]
fn a_breach_with_no_fallen_width_restores_drifted_channels_and_holds_their_codes() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let (mut learner, mut guard, config, data) = guarded_at_reference(dir.path(), |_| ());

    // Negate the classifier: every width stays (or grows), the codes drift, accuracy collapses.
    let last = learner.network.quantized.len() - 1;
    let classifier = learner.network.quantized_weight(last);
    let widths_before = classifier.channel_widths().unwrap();
    let codes_before = classifier.codes().unwrap();
    negate_classifier_rows(&learner, 0, classifier.weight.size()[0]);
    let widths_after = learner
        .network
        .quantized_weight(last)
        .channel_widths()
        .unwrap();
    assert!(widths_after
        .iter()
        .zip(&widths_before)
        .all(|(now, then)| now >= then));
    // On a target's way down, the same breach is a dip: nothing is restored or counted.
    let negated_codes = learner.network.quantized_weight(last).codes().unwrap();
    let dip = guard
        .check(
            &mut learner,
            &data,
            40,
            0.0,
            sgsc::train::safety::CheckStage::Descent,
        )
        .unwrap();
    assert_eq!((dip.action, dip.restored_channels), ("dip", 0), "{dip:?}");
    assert!(!dip.within);
    assert!(learner
        .network
        .quantized_weight(last)
        .codes()
        .unwrap()
        .equal(&negated_codes));
    let breach = guard
        .check(
            &mut learner,
            &data,
            50,
            0.0,
            sgsc::train::safety::CheckStage::Compressing,
        )
        .unwrap();
    assert_eq!(breach.action, "restore", "{breach:?}");
    // restore_fraction 0.5 of the 10 drifted classifier rows; nothing else changed.
    assert_eq!(breach.restored_channels, 5);
    let restored = learner.network.quantized_weight(last).codes().unwrap();
    let rows_back: Vec<bool> = (0..10)
        .map(|row| restored.get(row).equal(&codes_before.get(row)))
        .collect();
    assert_eq!(rows_back.iter().filter(|&&back| back).count(), 5);

    // During the cool-down, a step under crushing pressure shrinks codes everywhere except in
    // the held rows.
    let (inputs, labels) = sgsc::data::Tensors::tensors(
        &data.train,
        &(0..32).collect::<Vec<_>>(),
        &config.data.input,
        None,
    )
    .unwrap();
    let terms = sgsc::train::learner::StepTerms {
        gamma: 1e4,
        ..Default::default()
    };
    let first_layer_codes = learner.network.quantized_weight(0).codes().unwrap();
    for step in 50..55 {
        learner.step(&inputs, &labels, step, &terms).unwrap();
        guard.after_step(&learner, step).unwrap();
    }
    let held = learner.network.quantized_weight(last).codes().unwrap();
    for row in 0..10 {
        if rows_back[row as usize] {
            assert!(
                held.get(row).equal(&codes_before.get(row)),
                "row {row} moved"
            );
        }
    }
    assert!(
        !learner
            .network
            .quantized_weight(0)
            .codes()
            .unwrap()
            .equal(&first_layer_codes),
        "the steps moved the codes of unheld channels"
    );
    let metadata = sgsc::pack::export::metadata(&config, &data.description(), None, None).unwrap();
    let certificate = guard.final_gate(&mut learner, &data, &metadata).unwrap();
    assert_eq!(certificate.events.restored_channels, 5);
    assert_eq!(certificate.events.breaches, 1);
}

#[test]
fn target_runs_end_within_their_target_or_say_by_how_much() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let Setup { mut config, .. } = setup(dir.path());
    config.quant.gamma = 0.5;
    config.quant.control_every = 10;
    config.train.steps = 200;
    config.train.eval_every = 50;
    config.train.checkpoint_every = 200;

    // Reachable: the file is at most the target.
    let mut reachable = config.clone();
    reachable.quant.target_bytes = Some(30_000);
    let run_dir = dir.path().join("unsafe-target");
    let (summary, _) =
        sgsc::pipeline::run(&reachable, &common::run_options(Mode::Unsafe, &run_dir))
            .unwrap()
            .unwrap();
    let file_length = std::fs::metadata(run_dir.join("model.sgsc")).unwrap().len() as i64;
    assert_eq!(summary.size_bytes, file_length);
    assert!(file_length <= 30_000, "{file_length}");
    assert_eq!(
        (summary.target_bytes, summary.shortfall_bytes),
        (Some(30_000), None)
    );
    let sizes: Vec<i64> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["event"] == "size")
        .map(|line| line["bytes"].as_i64().unwrap())
        .collect();
    assert!(
        sizes[0] > 30_000 && *sizes.last().unwrap() <= 30_000,
        "{sizes:?}"
    );

    // Out of the budget's reach: the smallest safe state, and the shortfall said everywhere. The
    // final gate also measures the integer path, which may cost the 100-image audit part an
    // image or two that the f32 path gets right: a budget of 5 images there.
    let mut unreachable = config.clone();
    unreachable.quant.target_bytes = Some(1_000);
    if let Some(safety) = unreachable.safety.as_mut() {
        safety.max_preservation_drop = 5.0;
    }
    let safe_dir = dir.path().join("safe-target");
    let (summary, _) =
        sgsc::pipeline::run(&unreachable, &common::run_options(Mode::Safe, &safe_dir))
            .unwrap()
            .unwrap();
    let certificate = summary.safety.clone().unwrap();
    assert!(certificate.met, "the budget stays binding: {certificate:?}");
    let outcome = certificate.target.unwrap();
    assert_eq!((outcome.target_bytes, outcome.met), (1_000, false));
    assert_eq!(summary.shortfall_bytes, Some(summary.size_bytes - 1_000));
    let model = sgsc_runtime::Model::load(safe_dir.join("model.sgsc")).unwrap();
    let packed = model.metadata().certificate.clone().unwrap();
    assert_eq!(packed["target"]["met"], serde_json::json!(false));
    assert_eq!(packed["target"]["target_bytes"], serde_json::json!(1_000));
}

#[test]
fn the_size_the_law_steers_on_is_the_length_of_the_file() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let Setup { config, data, .. } = setup(dir.path());
    let mut learner =
        sgsc::train::learner::Learner::new(&config, Mode::Unsafe, Device::Cpu).unwrap();
    // Some channels dead, some widths fallen, so that the export cuts channels.
    tch::no_grad(|| {
        let mut bits = learner
            .network
            .quantized_weight(0)
            .bit_depth
            .shallow_clone();
        let values: Vec<f32> = (0..32).map(|c| [0.0, -1.0, 3.0, 5.5][c % 4]).collect();
        bits.copy_(&tch::Tensor::from_slice(&values));
    });
    let before: Vec<tch::Tensor> = learner
        .network
        .state()
        .into_iter()
        .map(|(_, t)| t.copy())
        .collect();
    let metadata = sgsc::pack::export::metadata(
        &config,
        &data.description(),
        None,
        Some(serde_json::json!({"mode": "unsafe", "test_accuracy": 0.5})),
    )
    .unwrap();
    let steered =
        sgsc::pack::export::stored_length(&learner.network, &config.model, metadata.clone())
            .unwrap();
    for (tensor, (name, now)) in before.iter().zip(learner.network.state()) {
        assert!(tensor.equal(&now), "{name} changed by measuring");
    }
    let (bytes, removed) = sgsc::pack::export::export(
        &mut learner.network,
        metadata,
        sgsc::pack::export::ExportFormat::Sgsc,
    )
    .unwrap();
    assert!(removed >= 8, "dead channels were cut: {removed}");
    assert_eq!(steered, bytes.len());
}

#[test]
fn distill_adds_the_distillation_term_and_no_preservation_term() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        config,
        data,
        reference,
        ..
    } = setup(dir.path());
    let mut learner =
        sgsc::train::learner::Learner::new(&config, Mode::Distill, Device::Cpu).unwrap();
    let (inputs, labels) = sgsc::data::Tensors::tensors(
        &data.train,
        &(0..16).collect::<Vec<_>>(),
        &config.data.input,
        None,
    )
    .unwrap();
    let teacher_logits = reference.forward(&inputs, false, false).unwrap();
    let temperature = 4.0;
    // The expected loss, term by term (batch norm in training mode uses the batch's statistics,
    // so the same forward pass gives the step's logits).
    let logits = learner.network.forward(&inputs, true, true).unwrap();
    let cross_entropy = logits.cross_entropy_for_logits(&labels).double_value(&[]);
    let size = sgsc::train::objective::size_term(&learner.network, learner.original.weights as f64)
        .unwrap()
        .double_value(&[]);
    let distillation =
        sgsc::train::objective::distillation_loss(&logits, &teacher_logits, temperature)
            .unwrap()
            .double_value(&[]);
    assert!(distillation > 1e-4, "the student differs from its teacher");
    let terms = sgsc::train::learner::StepTerms {
        gamma: 0.3,
        teacher: Some(sgsc::train::learner::Teacher {
            logits: teacher_logits,
            weight: 0.7,
            temperature,
        }),
        guidance: None,
    };
    let report = learner.step(&inputs, &labels, 0, &terms).unwrap();
    let expected = cross_entropy + 0.3 * size + 0.7 * distillation;
    assert!(
        (report.loss - expected).abs() < 1e-4,
        "{} vs {expected}",
        report.loss
    );
    assert!((report.distillation_loss - distillation).abs() < 1e-5);
    assert_eq!(report.preservation_loss, 0.0);

    // The trainer composes exactly these terms for the distill mode (and none for unsafe).
    let mut short = config.clone();
    short.train.steps = 4;
    short.train.eval_every = 4;
    short.train.checkpoint_every = 4;
    short.safety.as_mut().unwrap().train_distillation_weight = 1.0;
    for (mode, distils) in [(Mode::Distill, true), (Mode::Unsafe, false)] {
        let run_dir = dir.path().join(mode.name());
        train(&short, &common::run_options(mode, &run_dir)).unwrap();
        let log = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
        let line: serde_json::Value = log
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|line| line.get("train_loss").is_some())
            .unwrap();
        assert_eq!(line["preservation_loss"].as_f64(), Some(0.0), "{mode}");
        assert_eq!(
            line["distillation_loss"].as_f64().unwrap() > 0.0,
            distils,
            "{mode}"
        );
    }
}

#[test]
fn the_preservation_batch_moves_the_weights_but_not_the_running_statistics() {
    use sgsc::data::Tensors;
    use sgsc::train::learner::{Learner, StepTerms};
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let Setup { config, data, .. } = setup(dir.path());
    let guided = Learner::new(&config, Mode::Safe, Device::Cpu).unwrap();
    let mut guard = sgsc::train::safety::Guard::new(&config, &data, &guided, Device::Cpu).unwrap();
    let mut learners = [
        guided,
        Learner::new(&config, Mode::Safe, Device::Cpu).unwrap(),
    ];
    let state: std::collections::HashMap<_, _> = learners[0].network.state().into_iter().collect();
    learners[1].network.load_state(&state).unwrap();
    let positions: Vec<usize> = (0..64).collect();
    let (inputs, labels) = data
        .train
        .tensors(&positions, &config.data.input, None)
        .unwrap();
    let guidance = guard.guidance(0).unwrap();
    for (learner, guidance) in learners.iter_mut().zip([Some(guidance), None]) {
        let terms = StepTerms {
            gamma: 0.1,
            teacher: None,
            guidance,
        };
        assert!(learner.step(&inputs, &labels, 0, &terms).unwrap().finite);
    }
    let [with, without] = &learners;
    let buffers = |learner: &Learner| -> Vec<Vec<f32>> {
        learner
            .network
            .buffers()
            .iter()
            .map(|tensor| Vec::<f32>::try_from(&tensor.flatten(0, -1)).unwrap())
            .collect()
    };
    assert!(
        !buffers(with).is_empty(),
        "the test network has batch norms"
    );
    assert_eq!(
        buffers(with),
        buffers(without),
        "running statistics of the training batch alone"
    );
    let first = |learner: &Learner| {
        Vec::<f32>::try_from(&learner.network.quantized_weight(0).weight.flatten(0, -1)).unwrap()
    };
    assert_ne!(first(with), first(without), "the preservation loss trained");
}

/// A `safe` learner at the reference (its guard's settings changed by `adjust`) whose first
/// check, at step 25, found it safe: the snapshot is the reference's state.
fn guarded_at_reference(
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut SafetyConfig),
) -> (
    sgsc::train::learner::Learner,
    sgsc::train::safety::Guard,
    sgsc::config::ExperimentConfig,
    sgsc::data::TrainValidation,
) {
    let mut setup = setup(dir);
    adjust(setup.config.safety.as_mut().unwrap());
    let (mut learner, mut guard) = at_reference(&setup);
    let Setup { config, data, .. } = setup;
    let safe = guard
        .check(
            &mut learner,
            &data,
            25,
            0.0,
            sgsc::train::safety::CheckStage::Compressing,
        )
        .unwrap();
    assert_eq!(safe.action, "safe", "{safe:?}");
    assert!(guard.snapshot_within_budget());
    (learner, guard, config, data)
}

#[test]
fn a_breach_at_the_target_is_left_to_the_final_gate_which_returns_to_the_safe_snapshot() {
    use sgsc::train::learner::Learner;
    use sgsc::train::safety::CheckStage;
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    // Every breach below counts as one the fine-tune could still recover from (the hopeless
    // ones are the next test's).
    let (mut learner, mut guard, config, data) =
        guarded_at_reference(dir.path(), |safety| safety.max_deferred_breach = 1000.0);
    let last = learner.network.quantized.len() - 1;
    let codes = |learner: &Learner| learner.network.quantized_weight(last).codes().unwrap();
    let negate_rows = negate_classifier_rows;
    let snapshot_codes = codes(&learner);
    negate_rows(&learner, 0, 10);
    // Just arrived at the target, the model is settling: the breach is a dip.
    let negated_codes = codes(&learner);
    let settling = guard
        .check(&mut learner, &data, 40, 0.0, CheckStage::Settling)
        .unwrap();
    assert_eq!(
        (settling.action, settling.within),
        ("dip", false),
        "{settling:?}"
    );
    assert!(codes(&learner).equal(&negated_codes));
    let events = guard.certificate_draft(None).events;
    assert_eq!((events.breaches, events.rollbacks), (0, 0));
    // Settled, early in the schedule: a rising breach, then a falling one, then three in a row.
    // The snapshot is within the budget itself, so none returns to it: each is deferred to the
    // final gate, counted as a breach and not as a roll-back, and nothing is undone.
    negate_rows(&learner, 0, 5);
    for (step, lr_factor) in [(50, 0.9), (60, 0.8), (70, 0.5), (80, 0.2)] {
        if step == 60 {
            negate_rows(&learner, 0, 3);
        }
        let before = codes(&learner);
        let breach = guard
            .check(&mut learner, &data, step, lr_factor, CheckStage::Holding)
            .unwrap();
        assert_eq!(
            (breach.action, breach.within, breach.restored_channels),
            ("deferred", false, 0),
            "{breach:?}"
        );
        assert!(codes(&learner).equal(&before));
    }
    let events = guard.certificate_draft(None).events;
    assert_eq!((events.breaches, events.rollbacks), (4, 0));
    // The final gate finds the state outside the budget and returns to the snapshot.
    let metadata = sgsc::pack::export::metadata(&config, &data.description(), None, None).unwrap();
    let certificate = guard.final_gate(&mut learner, &data, &metadata).unwrap();
    assert!(
        certificate.met && certificate.restored_last_safe_snapshot,
        "{certificate:?}"
    );
    // The stored form rounds the snapshot's widths, so compare signs: the negated rows are back.
    let signs = |codes: tch::Tensor| codes.sign();
    assert!(signs(codes(&learner)).equal(&signs(snapshot_codes)));
    // The integer path was measured on the state kept, and meets the budget too.
    let integer = certificate
        .integer
        .as_ref()
        .expect("an image classifier's integer figures");
    assert!(integer.met, "{integer:?}");
    assert_eq!(integer.ranges.len(), learner.network.layers.len());
}

/// Negates `rows` rows of the classifier from `first`: accuracy falls, no width falls.
fn negate_classifier_rows(learner: &sgsc::train::learner::Learner, first: i64, rows: i64) {
    let last = learner.network.quantized.len() - 1;
    tch::no_grad(|| {
        let mut part = learner
            .network
            .quantized_weight(last)
            .weight
            .narrow(0, first, rows);
        let negated = part.neg();
        part.copy_(&negated);
    })
}

#[test]
fn a_breach_far_outside_the_budget_at_the_target_is_never_deferred() {
    use sgsc::train::safety::CheckStage;
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let (mut learner, mut guard, config, data) =
        guarded_at_reference(dir.path(), |safety| safety.recovery_checks = 2);
    assert_eq!(config.safety.as_ref().unwrap().max_deferred_breach, 2.5);
    let last = learner.network.quantized.len() - 1;
    let codes = |learner: &sgsc::train::learner::Learner| {
        learner.network.quantized_weight(last).codes().unwrap()
    };
    let snapshot_codes = codes(&learner);
    let reference_validation = guard.certificate_draft(None).budget.reference_validation;
    // Half the classes negated: tens of points lost, against a budget of 2 (5 at 2.5 times).
    // Its figures fell since the last check (the reference's), and although the snapshot is
    // within the budget itself, the breach is not deferred this far out: the guard rolls back.
    negate_classifier_rows(&learner, 0, 5);
    let breach = guard
        .check(&mut learner, &data, 50, 0.9, CheckStage::Holding)
        .unwrap();
    assert_eq!(
        (breach.action, breach.within, breach.restored_channels),
        ("rollback", false, 0),
        "{breach:?}"
    );
    assert!(codes(&learner).equal(&snapshot_codes));
    let events = guard.certificate_draft(None).events;
    assert_eq!((events.breaches, events.rollbacks), (1, 1));

    // Far out again, on the way back from a glide: each check finds one class fewer negated.
    // A rising breach waits, twice in a row at most (`recovery_checks`), still far out, then
    // rolls back; none is deferred.
    negate_classifier_rows(&learner, 0, 5);
    let settling = guard
        .check(&mut learner, &data, 60, 0.9, CheckStage::Settling)
        .unwrap();
    assert_eq!(settling.action, "dip", "{settling:?}");
    let mut actions = Vec::new();
    for (step, row) in [(70, 4), (80, 3), (90, 2)] {
        negate_classifier_rows(&learner, row, 1);
        let before = codes(&learner);
        let breach = guard
            .check(&mut learner, &data, step, 0.8, CheckStage::Holding)
            .unwrap();
        assert!(
            breach.validation_accuracy < reference_validation - 0.05,
            "still more than 2.5 budgets out: {breach:?}"
        );
        if breach.action == "recovering" {
            assert!(codes(&learner).equal(&before), "a wait undoes nothing");
        }
        actions.push(breach.action);
    }
    assert_eq!(actions, ["recovering", "recovering", "rollback"]);
    assert!(codes(&learner).equal(&snapshot_codes));
    let events = guard.certificate_draft(None).events;
    assert_eq!((events.breaches, events.rollbacks), (4, 2));
}

#[test]
fn the_final_gate_falls_back_through_earlier_snapshots_to_one_that_meets_the_budget() {
    use sgsc::train::safety::CheckStage;
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    // Mid-run checks at the peak learning rate allow 11 times the budget (22 points).
    let (mut learner, mut guard, config, data) =
        guarded_at_reference(dir.path(), |safety| safety.check_slack = 10.0);
    let last = learner.network.quantized.len() - 1;
    let signs = |learner: &sgsc::train::learner::Learner| {
        learner
            .network
            .quantized_weight(last)
            .codes()
            .unwrap()
            .sign()
    };
    let reference_signs = signs(&learner);
    // One class negated (about 10 points lost): within the widened budget of a check at the
    // peak learning rate, so it becomes the snapshot, outside the budget itself.
    negate_classifier_rows(&learner, 0, 1);
    let second = guard
        .check(&mut learner, &data, 50, 1.0, CheckStage::Compressing)
        .unwrap();
    assert_eq!(second.action, "safe", "{second:?}");
    assert!(!guard.snapshot_within_budget());
    // The final state is worse still. Neither it nor the last snapshot meets the budget; the
    // snapshot before it (the reference's state) does, and the gate keeps that one, also after
    // the guard went through a checkpoint.
    negate_classifier_rows(&learner, 1, 4);
    let (tensors, json) = guard.state().unwrap();
    assert!(tensors
        .iter()
        .any(|(name, _)| name.starts_with("guard.earlier.0.")));
    let mut resumed =
        sgsc::train::safety::Guard::new(&config, &data, &learner, Device::Cpu).unwrap();
    resumed
        .load_state(
            &learner,
            &tensors.into_iter().collect(),
            &json,
            std::path::Path::new("checkpoint.safetensors"),
        )
        .unwrap();
    let metadata = sgsc::pack::export::metadata(&config, &data.description(), None, None).unwrap();
    let certificate = resumed.final_gate(&mut learner, &data, &metadata).unwrap();
    assert!(
        certificate.met && certificate.restored_last_safe_snapshot,
        "{certificate:?}"
    );
    assert!(signs(&learner).equal(&reference_signs));
    assert!(certificate
        .integer
        .as_ref()
        .is_some_and(|figures| figures.met));
}

#[test]
fn a_run_guarded_by_another_preservation_set_does_not_resume() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let (learner, guard, config, data) = guarded_at_reference(dir.path(), |_| ());
    let (tensors, json) = guard.state().unwrap();
    let tensors: std::collections::HashMap<_, _> = tensors.into_iter().collect();
    // The same set resumes.
    let checkpoint = dir.path().join("checkpoint.safetensors");
    sgsc::train::safety::Guard::new(&config, &data, &learner, Device::Cpu)
        .unwrap()
        .load_state(&learner, &tensors, &json, &checkpoint)
        .unwrap();
    // The set rebuilt in place (one loss member fewer): the saved state is refused, by kind.
    let set_path = &config.safety.as_ref().unwrap().preservation_set;
    let mut set = PreservationSet::load(set_path).unwrap();
    set.members.pop();
    set.save(set_path).unwrap();
    let error = sgsc::train::safety::Guard::new(&config, &data, &learner, Device::Cpu)
        .unwrap()
        .load_state(&learner, &tensors, &json, &checkpoint)
        .unwrap_err();
    assert!(
        matches!(&error, sgsc::Error::Checkpoint { path, message }
            if *path == checkpoint && message.contains("another preservation set")),
        "{error}"
    );
}
