#!/usr/bin/env bash
# The main job: installs libtorch if missing, builds sgsc, trains and compresses the MNIST CNN
# (self-compression, configs/mnist-cnn.toml) and prints the result table. Extra arguments go to
# `sgsc train` (for example --mode baseline, --gamma 0.1, --seed 1, --steps 1000).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-libtorch.sh
cargo build --release --quiet
exec ./target/release/sgsc train --config configs/mnist-cnn.toml "$@"
