//! The packed format: exact round trips, and a corruption corpus in which every damaged file is
//! rejected with a typed error (never a panic, never a huge allocation).

mod common;

use common::models::{cnn, pooled, transformer, Numbers};
use sgsc_runtime::format::{decode, encode, MAX_ELEMENTS};
use sgsc_runtime::model::{Layer, LayerSpec, PackedModel, TensorData};
use sgsc_runtime::{Model, RuntimeError};

/// Replaces the CRC of the section whose payload starts at `start` and is `length` long.
fn fix_checksum(bytes: &mut [u8], start: usize, length: usize) {
    let crc = crc32fast::hash(&bytes[start..start + length]);
    bytes[start + length..start + length + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Where each section's payload starts and how long it is (description, data, run record).
fn layout(bytes: &[u8]) -> [(usize, usize); 3] {
    let mut at = 8;
    [0; 3].map(|_| {
        let length = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let start = at + 8;
        at = start + length + 4;
        (start, length)
    })
}

/// The description JSON of a file.
fn description(bytes: &[u8]) -> String {
    let [(start, length), ..] = layout(bytes);
    let json = miniz_oxide::inflate::decompress_to_vec(&bytes[start..start + length]).unwrap();
    String::from_utf8(json).unwrap()
}

/// A whole version-2 file from stored section payloads.
fn framed(description: &[u8], data: &[u8], record: &[u8]) -> Vec<u8> {
    let mut bytes = b"SGSC\x02\x00\x03\x00".to_vec();
    for (tag, payload) in [(b"META", description), (b"DATA", data), (b"RECD", record)] {
        bytes.extend_from_slice(tag);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    }
    bytes
}

/// A whole file from a description JSON (compressed here) and data bytes, with an empty record.
fn file(json: &str, data: &[u8]) -> Vec<u8> {
    framed(
        &miniz_oxide::deflate::compress_to_vec(json.as_bytes(), 6),
        data,
        b"{}",
    )
}

/// A file whose description JSON is replaced by `json` (data and record kept).
fn with_metadata(bytes: &[u8], json: &str) -> Vec<u8> {
    let [_, (data, data_length), (record, record_length)] = layout(bytes);
    framed(
        &miniz_oxide::deflate::compress_to_vec(json.as_bytes(), 6),
        &bytes[data..data + data_length],
        &bytes[record..record + record_length],
    )
}

#[test]
fn models_round_trip_exactly() {
    for model in [cnn(), pooled(), transformer()] {
        let bytes = encode(&model).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back, model);
        assert_eq!(encode(&back).unwrap(), bytes, "encoding is deterministic");
        Model::from_bytes(&bytes).expect("its layers fit together");
    }
}

#[test]
fn the_file_is_as_long_as_its_parts() {
    let model = cnn();
    let bytes = encode(&model).unwrap();
    let [(_, meta), (data_start, _), (_, record)] = layout(&bytes);
    // Conv: 5 widths (0..4), exponents for 4 rows, codes (1+2+3+4) * 9 bits = 90 bits -> 12 B,
    // bias 20 B. Batch norm: 4 x 5 floats = 80 B. Linear: 3 widths, 2 exponents, (1+2)*80 bits
    // = 30 B. Data = 5 + 8 + 12 + 20 + 80 + 3 + 4 + 30 = 162.
    assert_eq!(bytes.len() - data_start - 4 - 12 - record, 162);
    assert_eq!(bytes.len(), 8 + 12 + meta + 12 + 162 + 12 + record);
    // The run record is the plain JSON of the certificate and the summary.
    assert_eq!(
        &bytes[bytes.len() - 4 - record..bytes.len() - 4],
        br#"{"certificate":{"met":true}}"#
    );
}

#[test]
fn every_truncation_is_rejected_as_truncated() {
    let bytes = encode(&transformer()).unwrap();
    for length in 0..bytes.len() {
        match decode(&bytes[..length]) {
            Err(RuntimeError::Truncated { .. }) => {}
            other => panic!("truncated at {length}: {other:?}"),
        }
    }
}

#[test]
fn every_flipped_byte_is_rejected() {
    let bytes = encode(&cnn()).unwrap();
    let sections = layout(&bytes);
    for position in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x5a;
        let result = decode(&damaged);
        let in_payload = sections
            .iter()
            .any(|&(start, length)| (start..start + length).contains(&position));
        match result {
            Err(RuntimeError::BadMagic) if position < 4 => {}
            Err(RuntimeError::UnsupportedVersion { .. }) if (4..6).contains(&position) => {}
            Err(RuntimeError::Checksum { .. }) if position >= 6 => {}
            Err(RuntimeError::Sections(_) | RuntimeError::Truncated { .. })
                if position >= 6 && !in_payload => {}
            other => panic!("byte {position} flipped: {other:?}"),
        }
    }
}

#[test]
fn wrong_versions_and_extra_bytes_are_rejected() {
    let bytes = encode(&cnn()).unwrap();
    for (found, version) in [(1, b"\x01"), (3, b"\x03")] {
        let mut other = bytes.clone();
        other[4] = version[0];
        assert!(matches!(
            decode(&other),
            Err(RuntimeError::UnsupportedVersion { found: f, supported: 2 }) if f == found
        ));
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(decode(&longer), Err(RuntimeError::Sections(_))));
    assert!(matches!(
        decode(b"GGUF\x02\x00\x03\x00"),
        Err(RuntimeError::BadMagic)
    ));
}

#[test]
fn absurd_sizes_are_rejected_before_allocating() {
    let bytes = encode(&cnn()).unwrap();
    // A section that claims 4 GiB.
    let mut huge = bytes.clone();
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode(&huge), Err(RuntimeError::Truncated { .. })));
    // A linear layer of 2^20 x 2^20 weights, which costs no code bytes if every width is 0.
    let json = r#"{"input":[4],"layers":[{"type":"embedding","vocab_size":2,"context":4,"d_model":1048576}]}"#;
    assert!(matches!(
        decode(&with_metadata(&bytes, json)),
        Err(RuntimeError::Truncated { .. })
    ));
    let json = r#"{"input":[1,1024,1024],"layers":[{"type":"flatten"},{"type":"linear","in_features":1048576,"out_features":1048576,"bias":false}]}"#;
    match decode(&with_metadata(&bytes, json)) {
        Err(RuntimeError::Invalid(message)) => {
            assert!(message.contains(&MAX_ELEMENTS.to_string()), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let json = r#"{"input":[1,1,1],"layers":[{"type":"flatten"},{"type":"linear","in_features":1,"out_features":4294967296,"bias":false}]}"#;
    assert!(matches!(
        decode(&with_metadata(&bytes, json)),
        Err(RuntimeError::Invalid(_))
    ));
}

#[test]
fn the_weight_budget_spans_the_whole_model() {
    // Two 4096 x 4096 layers of width-0 rows: 4,096 bytes each in the file, 2^24 weights each.
    let layer = r#"{"type":"linear","in_features":4096,"out_features":4096,"bias":false}"#;
    let one = format!(r#"{{"input":[4096,1,1],"layers":[{{"type":"flatten"}},{layer}]}}"#);
    let model = decode(&file(&one, &[0u8; 4096])).unwrap();
    assert_eq!(
        model.layers.len(),
        2,
        "one layer of 2^24 weights is within the budget"
    );
    let two = format!(r#"{{"input":[4096,1,1],"layers":[{{"type":"flatten"}},{layer},{layer}]}}"#);
    match decode(&file(&two, &[0u8; 8192])) {
        Err(RuntimeError::Invalid(message)) => assert!(message.contains("past"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_metadata_and_widths_are_typed_errors() {
    let bytes = encode(&cnn()).unwrap();
    assert!(matches!(
        decode(&with_metadata(&bytes, "{not json")),
        Err(RuntimeError::Metadata(_))
    ));
    let unknown = r#"{"input":[1,8,8],"layers":[],"colour":"blue"}"#;
    assert!(matches!(
        decode(&with_metadata(&bytes, unknown)),
        Err(RuntimeError::Metadata(_))
    ));
    // Layers that do not fit each other: a linear layer straight on an image.
    let misfit = r#"{"input":[1,8,8],"layers":[{"type":"linear","in_features":64,"out_features":2,"bias":false}]}"#;
    assert!(matches!(
        decode(&with_metadata(&bytes, misfit)),
        Err(RuntimeError::Invalid(_))
    ));
    // A width of 33 bits in the first matrix (checksum fixed so the reader gets that far).
    let [_, (data_start, data_length), _] = layout(&bytes);
    let mut wide = bytes.clone();
    wide[data_start] = 33;
    fix_checksum(&mut wide, data_start, data_length);
    assert!(matches!(decode(&wide), Err(RuntimeError::Invalid(_))));
}

#[test]
fn the_description_and_the_record_are_checked_by_kind() {
    let bytes = encode(&cnn()).unwrap();
    let [(meta, meta_length), (data, data_length), (record, record_length)] = layout(&bytes);
    let data = &bytes[data..data + data_length];
    let record = &bytes[record..record + record_length];
    let metadata_error = |file: Vec<u8>| match decode(&file) {
        Err(RuntimeError::Metadata(message)) => message,
        other => panic!("{other:?}"),
    };
    // Stored bytes that are not DEFLATE (the plain JSON of a version-1 description).
    let plain = description(&bytes);
    assert!(metadata_error(framed(plain.as_bytes(), data, record)).contains("inflate"));
    // A description that inflates past its limit (16 MiB and one byte of spaces).
    let spaces = vec![b' '; sgsc_runtime::format::MAX_DESCRIPTION_BYTES + 1];
    let bomb = miniz_oxide::deflate::compress_to_vec(&spaces, 6);
    assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
    assert!(metadata_error(framed(&bomb, data, record)).contains("inflate"));
    // The certificate belongs to the record, not the description.
    let misplaced = plain.replacen('{', r#"{"certificate":{"met":true},"#, 1);
    assert!(metadata_error(with_metadata(&bytes, &misplaced)).contains("run record"));
    // A record with an unknown key, or that is not JSON.
    let compressed = &bytes[meta..meta + meta_length];
    metadata_error(framed(compressed, data, br#"{"colour":"blue"}"#));
    metadata_error(framed(compressed, data, b"{"));
    // The same model without a record decodes without certificate or summary.
    let mut bare = cnn();
    bare.metadata.certificate = None;
    assert_eq!(decode(&framed(compressed, data, b"{}")).unwrap(), bare);
}

#[test]
fn writing_refuses_codes_wider_than_their_row() {
    let mut model = cnn();
    if let TensorData::Codes(weight) = &mut model.layers[5].tensors[0] {
        weight.codes[weight.columns] = 5; // row 1 has width 1: codes -1 and 0 only
    }
    assert!(matches!(encode(&model), Err(RuntimeError::Invalid(_))));
}

#[test]
fn a_loaded_model_runs_and_checks_its_inputs() {
    let model = Model::from_bytes(&encode(&transformer()).unwrap()).unwrap();
    let logits = model.next_token_logits(&[0, 1, 2, 3], 2).unwrap();
    assert_eq!(logits.len(), 4 * 5);
    assert!(logits.iter().all(|v| v.is_finite()));
    // Position 0 of a window sees only itself: the same first token gives the same first row.
    let other = model.next_token_logits(&[0, 4, 2, 1], 2).unwrap();
    assert_eq!(logits[..5], other[..5]);
    assert!(matches!(
        model.next_token_logits(&[9], 1),
        Err(RuntimeError::Input(_))
    ));
    assert!(matches!(
        model.next_token_logits(&[0; 7], 1),
        Err(RuntimeError::Input(_))
    ));
    assert!(matches!(
        model.classify(&[0.0; 64], 1),
        Err(RuntimeError::Input(_))
    ));
    let cnn = Model::from_bytes(&encode(&cnn()).unwrap()).unwrap();
    assert_eq!(cnn.classify(&[0.5; 128], 2).unwrap().len(), 6);
    assert!(matches!(
        cnn.classify(&[0.5; 100], 2),
        Err(RuntimeError::Input(_))
    ));
}

/// Re-computes every section checksum that the framing still reaches, so mutations reach the
/// parsers behind them.
fn refresh_checksums(bytes: &mut [u8]) {
    let mut at = 8;
    for _ in 0..3 {
        if at + 8 > bytes.len() {
            return;
        }
        let length = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let start = at + 8;
        if start + length + 4 > bytes.len() {
            return;
        }
        fix_checksum(bytes, start, length);
        at = start + length + 4;
    }
}

#[test]
fn random_mutations_never_panic_and_what_loads_round_trips() {
    let mut numbers = Numbers(7);
    let originals = [
        encode(&cnn()).unwrap(),
        encode(&pooled()).unwrap(),
        encode(&transformer()).unwrap(),
    ];
    let mut loaded = 0;
    for round in 0..20_000 {
        let mut bytes = originals[round % 2].clone();
        for _ in 0..1 + numbers.next() % 4 {
            let position = numbers.next() as usize % bytes.len();
            match numbers.next() % 4 {
                0 => bytes[position] ^= 1 << (numbers.next() % 8),
                1 => bytes[position] = numbers.next() as u8,
                2 => bytes.truncate(position.max(1)),
                _ => bytes.insert(position, numbers.next() as u8),
            }
        }
        if round % 3 != 0 {
            refresh_checksums(&mut bytes);
        }
        if let Ok(model) = decode(&bytes) {
            loaded += 1;
            assert_eq!(decode(&encode(&model).unwrap()).unwrap(), model);
        }
    }
    assert!(
        loaded > 0,
        "some mutations (in float values, say) still give valid models"
    );
}

#[test]
fn small_files_that_describe_huge_computations_are_rejected() {
    let invalid = |model: &PackedModel| {
        let error = Model::new(model.clone()).unwrap_err();
        assert!(matches!(error, RuntimeError::Invalid(_)), "{error}");
        error.to_string()
    };
    // A 1x1 image padded by 2^19 on each side: a few weights, a 10^12-value convolution.
    let mut padded = cnn();
    padded.metadata.input = vec![1, 1, 1];
    if let LayerSpec::Conv2d { padding, .. } = &mut padded.layers[0].spec {
        *padding = 1 << 19;
    }
    assert!(invalid(&padded).contains("too large"));
    // An input of 2^21 rows.
    let mut tall = cnn();
    tall.metadata.input = vec![1, 1 << 21, 8];
    assert!(invalid(&tall).contains("too large"));
    // A padding whose double overflows.
    let mut overflowing = cnn();
    if let LayerSpec::Conv2d { padding, .. } = &mut overflowing.layers[0].spec {
        *padding = usize::MAX / 2 + 1;
    }
    assert!(invalid(&overflowing).contains("too large"));
}

#[test]
fn normalisation_is_one_number_or_one_per_channel() {
    // A one-channel model writes plain numbers, as files before per-channel values did.
    let bytes = encode(&cnn()).unwrap();
    let json = description(&bytes);
    assert!(
        json.contains(r#""normalization":{"mean":0.1307,"std":0.3081}"#),
        "{json}"
    );
    // Lists are read; a list whose length is not the input's channel count is refused.
    let listed = json.replace(
        r#""normalization":{"mean":0.1307,"std":0.3081}"#,
        r#""normalization":{"mean":[0.1307],"std":[0.3081]}"#,
    );
    assert_eq!(decode(&with_metadata(&bytes, &listed)).unwrap(), cnn());
    for bad in [
        r#""normalization":{"mean":[0.1,0.2,0.3],"std":[1.0,1.0,1.0]}"#,
        r#""normalization":{"mean":[0.1],"std":[1.0,2.0]}"#,
        r#""normalization":{"mean":0.1,"std":-1.0}"#,
    ] {
        let damaged = json.replace(r#""normalization":{"mean":0.1307,"std":0.3081}"#, bad);
        assert!(
            matches!(
                decode(&with_metadata(&bytes, &damaged)),
                Err(RuntimeError::Invalid(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn residual_blocks_must_pair_up_and_fit() {
    let invalid = |model: PackedModel| match Model::new(model) {
        Err(RuntimeError::Invalid(message)) => message,
        other => panic!("{other:?}"),
    };
    let without = |kind: fn(&Layer) -> bool| {
        let mut model = pooled();
        model.layers.retain(|layer| !kind(layer));
        model
    };
    let message = invalid(without(|layer| matches!(layer.spec, LayerSpec::Residual)));
    assert!(message.contains("without a residual block"), "{message}");
    let message = invalid(without(|layer| matches!(layer.spec, LayerSpec::Add { .. })));
    assert!(message.contains("never ended"), "{message}");
    let mut unprojected = pooled();
    for layer in &mut unprojected.layers {
        if let LayerSpec::Add {
            projection: Some(projection),
        } = &mut layer.spec
        {
            projection.stride = 1;
        }
    }
    let message = invalid(unprojected);
    assert!(message.contains("differ"), "{message}");
}

#[test]
fn a_negative_batch_norm_variance_is_refused() {
    // Layer 2 of the CNN is its batch norm; its second tensor the running variance.
    let mut model = cnn();
    if let TensorData::Floats(variance) = &mut model.layers[2].tensors[1] {
        variance[3] = -0.5;
    }
    match Model::new(model.clone()) {
        Err(RuntimeError::Invalid(message)) => {
            assert!(
                message.contains("running_var") && message.contains("negative"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(encode(&model), Err(RuntimeError::Invalid(_))));
}

#[test]
fn a_layer_holds_exactly_the_tensors_its_description_lists() {
    let mut missing = cnn();
    missing.layers[0].tensors.pop();
    assert!(matches!(Model::new(missing), Err(RuntimeError::Invalid(_))));
    let mut swapped = cnn();
    swapped.layers[0].tensors.swap(0, 1);
    assert!(matches!(Model::new(swapped), Err(RuntimeError::Invalid(_))));
    let mut short = cnn();
    if let TensorData::Floats(bias) = &mut short.layers[0].tensors[1] {
        bias.pop();
    }
    assert!(matches!(Model::new(short), Err(RuntimeError::Invalid(_))));
}
