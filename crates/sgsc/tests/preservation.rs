//! The preservation set draws its loss part from the training split and its audit part from the
//! validation split, in the sizes its options give, and is reproducible.

mod common;

use sgsc::data::{load_train_validation, Split, TrainValidation};
use sgsc::error::Error;
use sgsc::models::Network;
use sgsc::preserve::{build_and_save, PreservationOptions, PreservationSet, SplitInfo};
use std::collections::HashSet;
use tch::Device;

#[test]
fn the_loss_part_draws_on_training_images_and_the_audit_part_on_validation_images() {
    let config = common::mnist_config();
    let full =
        load_train_validation(&config.data, &config.model.input, &common::data_dirs()).unwrap();
    // An untrained reference on 3,000 training and 1,000 validation images keeps the test quick;
    // what is checked is where the members come from, not how good the reference is.
    let data = TrainValidation {
        train: full.train.subset(&(0..3000).collect::<Vec<_>>()),
        validation: full.validation.subset(&(0..1000).collect::<Vec<_>>()),
        vocabulary: None,
        classes: full.classes.clone(),
    };
    tch::manual_seed(0);
    let reference = Network::new(&config.model, 8.0, Device::Cpu).unwrap();
    let options = PreservationOptions {
        size: 200,
        audit_share: 0.25,
        ..PreservationOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let build = |options: &PreservationOptions, data: &TrainValidation, name: &str| {
        let out = dir.path().join(name).join("preservation.json");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        build_and_save(
            &reference,
            &dir.path().join("reference.safetensors"),
            data,
            SplitInfo::train(config.data.validation_size, config.data.split_seed),
            &config.data.input,
            options.clone(),
            500,
            Device::Cpu,
            &out,
            &out.with_extension("png"),
        )
        .map(|(set, _)| (set, out))
    };
    let (set, path) = build(&options, &data, "a").unwrap();
    assert_eq!((set.members.len(), set.audit.len()), (150, 50));
    assert!(path.with_extension("png").exists());

    let indices =
        |split: &Split| -> HashSet<u32> { split.source_indices().iter().copied().collect() };
    let (training, validation) = (indices(&data.train), indices(&data.validation));
    for (part, split, other) in [
        (&set.members, &data.train, &validation),
        (&set.audit, &data.validation, &training),
    ] {
        let position_of = split.positions_by_index();
        for member in part {
            let position = position_of[&member.index];
            assert_eq!(split.label(position), Some(member.label));
            assert!(
                !other.contains(&member.index),
                "{} is in both splits",
                member.index
            );
        }
    }
    // Every class is represented in the loss part; the file reads back as written, and the same
    // inputs give the same set.
    let classes: HashSet<u8> = set.members.iter().map(|m| m.label).collect();
    assert_eq!(classes.len(), 10);
    assert_eq!(PreservationSet::load(&path).unwrap(), set);
    assert_eq!(build(&options, &data, "b").unwrap().0, set);

    // An audit part larger than the validation split is refused before any scoring, by name.
    let small_validation = TrainValidation {
        validation: data.validation.subset(&(0..40).collect::<Vec<_>>()),
        ..data.clone()
    };
    match build(&options, &small_validation, "c") {
        Err(Error::Model(message)) => assert!(message.contains("audit part"), "{message}"),
        other => panic!("{:?}", other.map(|(set, _)| set.audit.len())),
    }
    assert!(!dir.path().join("c/preservation.json").exists());
}
