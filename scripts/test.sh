#!/usr/bin/env bash
# The test command: installs libtorch if missing, checks formatting, runs every test (release
# build, so the training tests are quick) and the runtime's unit tests without `std`, then fuzzes
# the model-file reader briefly.
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
# The reader under libFuzzer for a short run (seeds, earlier failures, then 20,000 mutations).
bash scripts/fuzz.sh 20000
