#!/usr/bin/env bash
# The test command: installs libtorch if missing, checks formatting, runs every test (release
# build, so the training tests are quick) and the runtime's unit tests without `std`, runs a small
# model's C on emulated Cortex-M0 and M3, then fuzzes the model-file reader briefly.
# Data: $SGSC_DATA_DIR, else ./data (downloaded if missing).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-libtorch.sh
export SGSC_DATA_DIR="${SGSC_DATA_DIR:-$root/data}"
cargo fmt --all --check
cargo test --release --workspace
# The runtime without `std` (`#![no_std]` + `alloc`, for microcontrollers): it builds, and its
# unit tests pass, with the `std` feature off.
cargo test --release -p sgsc-runtime --no-default-features --lib
# On emulated microcontrollers: a small CNN (configs/mnist-mcu.toml, 300 steps to a 4,000-byte
# file) exported as C, built for Cortex-M0 and M3 and run under QEMU on 20 test images, every
# logit checked against the Rust integer path.
mcu_model="$(mktemp -d)"
cargo build --release --quiet
./target/release/sgsc train --config configs/mnist-mcu.toml --mode unsafe --set train.steps=300 \
    --set train.eval_every=300 --set train.checkpoint_every=300 --set quant.target_bytes=4000 \
    --out "$mcu_model" > /dev/null
bash scripts/mcu.sh "$mcu_model/model.sgsc" --count 20
rm -rf "$mcu_model"
# The reader under libFuzzer for a short run (seeds, earlier failures, then 20,000 mutations).
bash scripts/fuzz.sh 20000
