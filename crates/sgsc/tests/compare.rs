//! `compare` trains baseline, unsafe and safe per seed on one harness, and does not repeat
//! finished runs.

mod common;

use sgsc::pipeline::compare::{run_comparison, ComparisonOptions};
use sgsc::preserve::{PreservationOptions, PreservationSet};
use sgsc::report::compare::{comparison_csv, comparison_table};
use tch::Device;

#[test]
fn comparison_runs_every_mode_and_reuses_finished_runs() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::mnist_config();
    config.data.validation_size = 1000;
    config.train.steps = 20;
    config.train.batch_size = 32;
    config.train.eval_every = 20;
    config.train.checkpoint_every = 20;
    let safety = config
        .safety
        .as_mut()
        .expect("the shipped config has a [safety] section");
    safety.check_every = 10;
    let options = ComparisonOptions {
        seeds: vec![3],
        out_dir: dir.path().to_path_buf(),
        data_dirs: common::data_dirs(),
        device: Device::Cpu,
        preservation: PreservationOptions {
            size: 50,
            ..PreservationOptions::default()
        },
        progress: false,
        safe_gamma: Some(0.5),
        compress_overrides: vec!["train.learning_rate=2e-4".into()],
    };
    let summaries = run_comparison(&config, &options).unwrap();
    let modes: Vec<&str> = summaries.iter().map(|s| s.mode.as_str()).collect();
    assert_eq!(modes, vec!["baseline", "unsafe", "safe"]);
    assert!(summaries.iter().all(|s| s.seed == 3 && s.steps == 20));
    assert_eq!(summaries[0].size_kind, "float32");
    assert!(
        summaries[2].safety.is_some(),
        "the safe run carries its certificate"
    );
    assert!(summaries[..2].iter().all(|s| s.safety.is_none()));
    // A compressed run's size is the length of the model file it wrote, which the runtime reads
    // back with the run's certificate inside.
    for (summary, run) in summaries[1..].iter().zip(["unsafe-seed3", "safe-seed3"]) {
        let file = dir.path().join(run).join("model.sgsc");
        assert_eq!(summary.size_kind, "sgsc-file");
        assert_eq!(
            summary.size_bytes as u64,
            std::fs::metadata(&file).unwrap().len()
        );
        let model = sgsc_runtime::Model::load(&file).unwrap();
        assert_eq!(
            model.metadata().certificate.is_some(),
            run.starts_with("safe")
        );
    }
    assert!(!dir.path().join("baseline-seed3/model.sgsc").exists());
    let gammas: Vec<Option<f64>> = summaries.iter().map(|s| s.gamma).collect();
    assert_eq!(
        gammas,
        vec![None, Some(config.quant.gamma), Some(0.5)],
        "unsafe keeps the config's gamma, safe takes its own"
    );

    // The safe run was guarded by the baseline's own preservation set, and both compressing runs
    // started from the baseline's weights.
    let set = PreservationSet::load(&dir.path().join("baseline-seed3/preservation.json")).unwrap();
    assert_eq!(set.members.len(), 50);
    assert!(dir.path().join("baseline-seed3/preservation.png").exists());
    for run in ["unsafe-seed3", "safe-seed3"] {
        let saved = std::fs::read_to_string(dir.path().join(run).join("config.toml")).unwrap();
        assert!(
            saved.contains("baseline-seed3/checkpoint.safetensors"),
            "{run}: {saved}"
        );
    }

    let learning_rates: Vec<f64> = ["baseline-seed3", "unsafe-seed3", "safe-seed3"]
        .iter()
        .map(|run| {
            let path = dir.path().join(run).join("config.toml");
            sgsc::config::ExperimentConfig::load(&path)
                .unwrap()
                .train
                .learning_rate
        })
        .collect();
    assert_eq!(
        learning_rates,
        vec![config.train.learning_rate, 2e-4, 2e-4],
        "compress overrides reach the compressing runs only"
    );

    // Finished runs are reused, not retrained.
    let again = run_comparison(&config, &options).unwrap();
    assert_eq!(again, summaries);

    let table = comparison_table(&summaries);
    assert_eq!(table.lines().count(), 4, "{table}");
    let csv = comparison_csv(&summaries);
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.lines().nth(3).unwrap().starts_with("safe,3,20,"));
}
