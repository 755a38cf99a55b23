//! Fuzzes the `.sgsc` reader: any bytes must give a model or a typed error, never a panic, a hang
//! or a huge allocation. A model that loads must encode and decode back to itself, and (if small)
//! run, on f32 and, for an image classifier, through the integer plan that the C export is
//! generated from (built from calibration on one grey and one mid-grey image, or refused with a
//! typed error). Checksums are not enforced under the fuzzer (see `format::section`), so mutations reach
//! the parsers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sgsc_runtime::format::{decode, encode};
use sgsc_runtime::{IntegerModel, Model};

fuzz_target!(|data: &[u8]| {
    let Ok(packed) = decode(data) else {
        return;
    };
    let bytes = encode(&packed).expect("a decoded model encodes");
    let again = decode(&bytes).expect("an encoded model decodes");
    assert!(again == packed, "encoding and decoding changed the model");
    // Run small models only, so that each execution stays fast.
    let weights: usize = packed
        .layers
        .iter()
        .flat_map(|layer| layer.dense_parts())
        .map(|(_, dense)| dense.weight.codes.len())
        .sum();
    let model = Model::new(packed).expect("a decoded model loads");
    let input: usize = model.metadata().input.iter().product();
    if input <= 1024 && weights <= 20_000 {
        if model.is_language_model() {
            let _ = model.next_token_logits(&vec![0; input], 1);
        } else {
            let _ = model.classify(&vec![0.5; input], 1);
            let pixels: Vec<u8> = [0u8, 128].iter().flat_map(|&p| vec![p; input]).collect();
            if let Ok(ranges) = model.layer_ranges(&pixels, 2) {
                if let Ok(integer) = IntegerModel::new(model.packed(), &ranges, 8) {
                    let _ = integer.classify_pixels(&pixels[..input], 1);
                }
            }
        }
    }
});
