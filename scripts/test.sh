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
# On emulated microcontrollers: a small CNN (configs/mnist-mcu.toml, 300 steps) steered to 7,000 B
# of flash by the estimate, exported as C, built for Cortex-M0 and M3 and run under QEMU on 20 test
# images, every logit checked against the Rust integer path; the real M0 build's flash must be
# within 2% of the target.
mcu_model="$(mktemp -d)"
cargo build --release --quiet
./target/release/sgsc train --config configs/mnist-mcu.toml --mode unsafe --set train.steps=300 \
    --set train.eval_every=300 --set train.checkpoint_every=300 --target-flash 7000 \
    --out "$mcu_model" > /dev/null
bash scripts/mcu.sh "$mcu_model/model.sgsc" --count 20 | tee "$mcu_model/mcu.txt"
flash=$(sed -n 's/^mcu: core=cortex-m0 flash_bytes=\([0-9]*\).*/\1/p' "$mcu_model/mcu.txt")
if [ -z "$flash" ] || [ "$flash" -gt 7140 ]; then
    echo "test.sh: the Cortex-M0 build holds ${flash:-no} flash bytes; the target was 7,000" >&2
    exit 1
fi
rm -rf "$mcu_model"
# The reader under libFuzzer for a short run (seeds, earlier failures, then 20,000 mutations).
bash scripts/fuzz.sh 20000
