//! Writes the fuzzer's seed files: the synthetic models of the format tests as
//! `.sgsc` files, so that no model file needs to be kept in git.
//!   cargo run --release -p sgsc-runtime --example fuzz_seeds -- <folder>

#[path = "../tests/common/models.rs"]
mod models;

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folder = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: fuzz_seeds <folder>")?,
    );
    std::fs::create_dir_all(&folder)?;
    for (name, model) in [
        ("cnn", models::cnn()),
        ("pooled", models::pooled()),
        ("transformer", models::transformer()),
    ] {
        std::fs::write(
            folder.join(format!("{name}.sgsc")),
            sgsc_runtime::format::encode(&model)?,
        )?;
    }
    Ok(())
}
