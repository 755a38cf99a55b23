//! Fuzzes the data parsers (IDX files, CIFAR batches): any bytes must give arrays or a typed
//! error, never a panic or an allocation sized by a header's claim. The first byte picks the
//! parser: 0 an IDX image file, 1 an IDX label file, 2 a CIFAR-10 batch, 3 a CIFAR-100 batch.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sgsc_data::cifar::{parse_batch, Cifar};
use sgsc_data::idx::parse_idx;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 | 1 => {
            let rank = if selector % 4 == 0 { 3 } else { 1 };
            if let Ok(array) = parse_idx(bytes, rank, "fuzz") {
                assert_eq!(array.dims.len(), rank);
                assert_eq!(array.data.len(), array.dims.iter().product::<usize>());
            }
        }
        kind => {
            let cifar = if kind == 2 { Cifar::Ten } else { Cifar::Hundred };
            if let Ok(batch) = parse_batch(bytes, cifar, "fuzz") {
                assert_eq!(batch.images.len(), batch.labels.len() * 3072);
                assert!(batch.labels.iter().all(|&l| (l as usize) < cifar.classes().len()));
            }
        }
    }
});
