//! The preservation set comes from the training split only, and is reproducible.

mod common;

use sgsc::data::load_train_validation;
use sgsc::models::Network;
use sgsc::preserve::{score, select, Candidates, PreservationOptions};
use std::collections::HashSet;
use tch::Device;

#[test]
fn preservation_set_draws_on_training_images_only() {
    let config = common::mnist_config();
    let data =
        load_train_validation(&config.data, &config.model.input, &common::data_dirs()).unwrap();
    // An untrained reference on the first 3,000 training images keeps the test quick; what is
    // checked is where the members come from, not how good the reference is.
    let subset = data
        .train
        .images()
        .unwrap()
        .subset(&(0..3000).collect::<Vec<_>>());
    tch::manual_seed(0);
    let reference = Network::new(&config.model, 8.0, Device::Cpu).unwrap();
    let scores = score(&reference, &subset, &config.data.input, 500, Device::Cpu).unwrap();
    let options = PreservationOptions {
        size: 200,
        ..PreservationOptions::default()
    };
    let members = select(
        &scores,
        Candidates {
            source_indices: &subset.source_indices,
            labels: &subset.labels,
        },
        &options,
    )
    .unwrap();
    assert_eq!(members.len(), 200);

    let training: HashSet<u32> = subset.source_indices.iter().copied().collect();
    let validation: HashSet<u32> = data.validation.source_indices().iter().copied().collect();
    for member in &members {
        assert!(
            training.contains(&member.index),
            "{} is not a training image",
            member.index
        );
        assert!(
            !validation.contains(&member.index),
            "{} is a validation image",
            member.index
        );
        let position = subset
            .source_indices
            .iter()
            .position(|&i| i == member.index)
            .unwrap();
        assert_eq!(subset.labels[position], member.label);
    }
    // Every class is represented, and the same inputs give the same set.
    let classes: HashSet<u8> = members.iter().map(|m| m.label).collect();
    assert_eq!(classes.len(), 10);
    assert_eq!(
        select(
            &scores,
            Candidates {
                source_indices: &subset.source_indices,
                labels: &subset.labels
            },
            &options
        )
        .unwrap(),
        members
    );
}
