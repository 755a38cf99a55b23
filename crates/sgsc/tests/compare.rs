//! `compare` trains baseline, unsafe, distill and safe per seed on one harness, at equal bytes,
//! and does not repeat finished runs (nor reuse a safe run that another preservation set guarded).

mod common;

use sgsc::pipeline::compare::{run_comparison, ComparisonOptions};
use sgsc::preserve::{PreservationOptions, PreservationSet};
use sgsc::report::compare::{comparison_csv, comparison_table};
use tch::Device;

#[test]
fn comparison_runs_every_mode_and_reuses_finished_runs() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = common::mnist_config();
    config.data.dataset = sgsc::data::DatasetKind::Idx;
    config.data.dir = Some(common::small_mnist(data.path(), 3000, 1000));
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
        jobs: 2,
    };
    let summaries = run_comparison(&config, &options).unwrap();
    let modes: Vec<&str> = summaries.iter().map(|s| s.mode.as_str()).collect();
    assert_eq!(modes, vec!["baseline", "unsafe", "distill", "safe"]);
    assert!(summaries.iter().all(|s| s.seed == 3 && s.steps == 20));
    assert_eq!(summaries[0].size_kind, "float32");
    assert!(
        summaries[3].safety.is_some(),
        "the safe run carries its certificate"
    );
    assert!(summaries[..3].iter().all(|s| s.safety.is_none()));
    // Without a target, safe found its own size and the other two ran to it.
    let safe_bytes = summaries[3].size_bytes;
    assert_eq!(summaries[3].target_bytes, None);
    for summary in &summaries[1..3] {
        assert_eq!(summary.target_bytes, Some(safe_bytes), "{}", summary.mode);
        assert_eq!(
            summary.shortfall_bytes,
            Some(summary.size_bytes - safe_bytes).filter(|&over| over > 0)
        );
    }
    // A compressed run's size is the length of the model file it wrote, which the runtime reads
    // back with the run's certificate inside.
    for (summary, run) in summaries[1..]
        .iter()
        .zip(["unsafe-seed3", "distill-seed3", "safe-seed3"])
    {
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
        vec![
            None,
            Some(config.quant.gamma),
            Some(config.quant.gamma),
            Some(0.5)
        ],
        "unsafe and distill start from the config's gamma, safe from its own"
    );

    // The safe run was guarded by the baseline's own preservation set, and both compressing runs
    // started from the baseline's weights.
    let set = PreservationSet::load(&dir.path().join("baseline-seed3/preservation.json")).unwrap();
    assert_eq!((set.members.len(), set.audit.len()), (25, 25));
    assert!(dir.path().join("baseline-seed3/preservation.png").exists());
    for run in ["unsafe-seed3", "distill-seed3", "safe-seed3"] {
        let saved = std::fs::read_to_string(dir.path().join(run).join("config.toml")).unwrap();
        assert!(
            saved.contains("baseline-seed3/checkpoint.safetensors"),
            "{run}: {saved}"
        );
    }

    let learning_rates: Vec<f64> = [
        "baseline-seed3",
        "unsafe-seed3",
        "distill-seed3",
        "safe-seed3",
    ]
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
        vec![config.train.learning_rate, 2e-4, 2e-4, 2e-4],
        "compress overrides reach the compressing runs only"
    );

    // Finished runs are reused, not retrained.
    let again = run_comparison(&config, &options).unwrap();
    assert_eq!(again, summaries);

    // With a target, the three compressing runs go in lanes and all steer to it (the baseline
    // and its preservation set reused from a copy).
    let targeted = tempfile::tempdir().unwrap();
    let baseline = targeted.path().join("baseline-seed3");
    std::fs::create_dir(&baseline).unwrap();
    for file in [
        "checkpoint.safetensors",
        "config.toml",
        "summary.json",
        "preservation.json",
    ] {
        std::fs::copy(
            dir.path().join("baseline-seed3").join(file),
            baseline.join(file),
        )
        .unwrap();
    }
    let target = safe_bytes + 2_000;
    let mut with_target = config.clone();
    with_target.quant.target_bytes = Some(target);
    let in_lanes = ComparisonOptions {
        out_dir: targeted.path().to_path_buf(),
        ..options.clone()
    };
    let lanes = run_comparison(&with_target, &in_lanes).unwrap();
    let modes: Vec<&str> = lanes.iter().map(|s| s.mode.as_str()).collect();
    assert_eq!(modes, vec!["baseline", "unsafe", "distill", "safe"]);
    assert_eq!(lanes[0], summaries[0], "the baseline was reused");
    for summary in &lanes[1..] {
        assert_eq!(summary.target_bytes, Some(target), "{}", summary.mode);
        let file = targeted
            .path()
            .join(format!("{}-seed3", summary.mode))
            .join("model.sgsc");
        assert_eq!(
            summary.size_bytes as u64,
            std::fs::metadata(&file).unwrap().len()
        );
    }

    let table = comparison_table(&summaries);
    assert_eq!(table.lines().count(), 5, "{table}");
    let safe_row = table.lines().nth(4).unwrap();
    let met = summaries[3].safety.as_ref().unwrap().met;
    assert!(
        safe_row.ends_with(if met { " 1/1" } else { " 0/1" }),
        "{table}"
    );
    assert!(table.lines().nth(2).unwrap().ends_with(" -"), "{table}");
    let csv = comparison_csv(&summaries);
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.lines().nth(4).unwrap().starts_with("safe,3,20,"));

    // A set built with other options than the comparison's is built again, and the finished
    // safe run that the old set guarded is then refused, not reused against a budget it never
    // had.
    let rebuilt = ComparisonOptions {
        preservation: PreservationOptions {
            size: 60,
            ..PreservationOptions::default()
        },
        ..options.clone()
    };
    let error = run_comparison(&config, &rebuilt).unwrap_err();
    assert!(
        matches!(&error, sgsc::Error::Checkpoint { path, message }
            if path.ends_with("safe-seed3/summary.json")
                && message.contains("another preservation set")),
        "{error}"
    );
    let set = PreservationSet::load(&dir.path().join("baseline-seed3/preservation.json")).unwrap();
    assert_eq!((set.members.len(), set.audit.len()), (30, 30));
}
