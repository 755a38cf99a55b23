#!/usr/bin/env bash
# The main job: installs libtorch if missing, builds sgsc, then on the MNIST CNN
# (configs/mnist-cnn.toml) trains the float baseline, builds its preservation set, compresses it
# without (`unsafe`) and with (`safe`) the safety guard, and prints the result table
# (`sgsc compare --seeds 1`, about 30 minutes on 2 cores; runs/main/comparison.png plots it).
# Extra arguments go to `sgsc compare` and override these (for example --seeds 3, --out DIR).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-libtorch.sh
cargo build --release --quiet
exec ./target/release/sgsc compare --config configs/mnist-cnn.toml --seeds 1 \
    --gamma 0.015 --safe-gamma 0.25 --out runs/main "$@"
