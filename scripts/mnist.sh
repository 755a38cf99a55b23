#!/usr/bin/env bash
# The main job: installs libtorch if missing, builds sgsc, then on the MNIST CNN
# (configs/mnist-cnn.toml) trains the float baseline (2,000 steps) and compresses it three ways to
# one target, a 16,000-byte file: `unsafe` (self-compression), `distill` (plus distillation from the
# baseline) and `safe` (plus the safety guard, after the baseline's preservation set is built),
# each a 1,600-step fine-tune of the baseline, in two lanes of one libtorch thread each: the
# preservation set and `safe` in one, `unsafe` then `distill` in the other. It prints the table at
# equal bytes (`sgsc compare --seeds 1`; about 8 minutes on 2 cores after the install and build);
# runs/main/comparison.png plots it.
# Extra arguments go to `sgsc compare` and override these (for example --seeds 3, --out DIR,
# --target-bytes N, or another data set: --set data.dataset=idx --set data.dir=fashion-mnist).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-libtorch.sh
cargo build --release --quiet
exec ./target/release/sgsc compare --config configs/mnist-cnn.toml --seeds 1 \
    --target-bytes 16000 --jobs 2 \
    --compress-set train.steps=1600 \
    --compress-set train.eval_every=200 --compress-set train.checkpoint_every=400 \
    --out runs/main "$@"
