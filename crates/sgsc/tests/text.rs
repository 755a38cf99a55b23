//! The character-level transformer on names.txt: it learns, `compare` runs its three modes with a
//! loss budget, and its checkpoints carry the vocabulary that `sample` needs.

mod common;

use sgsc::config::ExperimentConfig;
use sgsc::data::text::Vocabulary;
use sgsc::models::generate::{generate, SamplingOptions};
use sgsc::pipeline::compare::{run_comparison, ComparisonOptions};
use sgsc::preserve::{Criterion, PreservationOptions, PreservationSet};
use sgsc::report::compare::comparison_table;
use sgsc::train::checkpoint;
use sgsc::train::controller::BudgetMetric;
use sgsc::train::learner::Learner;
use sgsc::train::Mode;
use std::path::Path;
use tch::Device;

#[test]
fn names_transformer_learns_and_compare_guards_its_loss() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::small_names_config();
    config.train.steps = 300;
    config.train.eval_every = 300;
    config.train.checkpoint_every = 300;
    let safety = config.safety.as_mut().unwrap();
    safety.check_every = 50;
    safety.prune_grace_steps = 50;
    let options = ComparisonOptions {
        seeds: vec![0],
        out_dir: dir.path().to_path_buf(),
        data_dirs: common::data_dirs(),
        device: Device::Cpu,
        preservation: PreservationOptions {
            size: 60,
            ..PreservationOptions::for_dataset(sgsc::data::DatasetKind::Names)
        },
        progress: false,
        safe_gamma: Some(0.5),
        compress_overrides: vec!["train.steps=100".into()],
        jobs: 1,
    };
    let summaries = run_comparison(&config, &options).unwrap();
    eprintln!("{}", comparison_table(&summaries));
    let baseline = &summaries[0];
    assert!(summaries.iter().all(|s| s.language_model));
    // ln 27 = 3.30 nats is guessing; the characters' own frequencies give about 2.9. After 300
    // steps the model must have learned which characters follow which.
    assert!(
        baseline.test_loss < 2.45,
        "test loss {} nats per character",
        baseline.test_loss
    );
    assert!(comparison_table(&summaries).contains("test loss (nats)"));

    // The preservation set's loss part holds training windows, its audit part validation
    // windows, a quarter of each (7.5, rounded up) picked for rare bigrams, and it is listed as
    // text.
    let set = PreservationSet::load(&dir.path().join("baseline-seed0/preservation.json")).unwrap();
    assert_eq!((set.members.len(), set.audit.len()), (30, 30));
    for part in [&set.members, &set.audit] {
        assert_eq!(
            part.iter()
                .filter(|m| m.criterion == Criterion::RareBigrams)
                .count(),
            8
        );
        assert!(part.iter().all(|m| m.mean_nll.is_some()));
    }
    assert!(dir.path().join("baseline-seed0/preservation.txt").exists());

    // The safe run's budget is in nats, and its certificate says whether it held.
    let certificate = summaries[3].safety.as_ref().expect("a certificate");
    assert_eq!(certificate.budget.metric, BudgetMetric::Loss);
    assert!(certificate.budget.reference_validation > 1.0);
    if certificate.met {
        assert!(
            certificate.final_validation
                <= certificate.budget.reference_validation
                    + certificate.budget.max_validation_drop
                    + 1e-9
        );
    }

    // Checkpoints carry the vocabulary; sampling reads it.
    let (info, tensors) =
        checkpoint::load(&dir.path().join("safe-seed0/checkpoint.safetensors")).unwrap();
    let vocabulary = info
        .data
        .vocabulary
        .clone()
        .expect("a text checkpoint has its vocabulary");
    assert_eq!(
        vocabulary,
        Vocabulary::from_text("\nabcdefghijklmnopqrstuvwxyz")
    );
    let saved = ExperimentConfig::parse(&info.config, Path::new("<checkpoint>")).unwrap();
    let mut learner = Learner::new(&saved, Mode::Safe, Device::Cpu).unwrap();
    learner.load_state(&tensors, info.step).unwrap();
    let options = SamplingOptions {
        length: 40,
        temperature: 1.0,
        top_k: 0,
        seed: 1,
    };
    let sample = generate(
        &learner.network,
        &vocabulary,
        "\n",
        options,
        true,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(sample.chars().count(), 41);
    assert_eq!(
        sample,
        generate(
            &learner.network,
            &vocabulary,
            "\n",
            options,
            true,
            Device::Cpu
        )
        .unwrap()
    );
}
