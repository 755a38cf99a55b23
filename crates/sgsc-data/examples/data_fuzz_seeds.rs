//! Writes the data fuzzer's seed files (see `fuzz/fuzz_targets/data.rs`): a small IDX image
//! file, an IDX label file and a CIFAR-10 and a CIFAR-100 record, each after its selector byte.
//!   cargo run --release -p sgsc-data --example data_fuzz_seeds -- <folder>

use std::path::PathBuf;

fn idx(dims: &[u32]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    let count: u32 = dims.iter().product();
    bytes.extend((0..count).map(|i| (i * 7) as u8));
    bytes
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folder = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: data_fuzz_seeds <folder>")?,
    );
    std::fs::create_dir_all(&folder)?;
    let cifar = |labels: &[u8]| -> Vec<u8> {
        let mut bytes = labels.to_vec();
        bytes.extend((0..3072).map(|i| (i % 256) as u8));
        bytes
    };
    for (name, selector, body) in [
        ("idx-images", 0u8, idx(&[2, 3, 4])),
        ("idx-labels", 1, idx(&[5])),
        ("cifar10", 2, cifar(&[3])),
        ("cifar100", 3, cifar(&[1, 42])),
    ] {
        let mut bytes = vec![selector];
        bytes.extend(body);
        std::fs::write(folder.join(format!("{name}.bin")), bytes)?;
    }
    Ok(())
}
