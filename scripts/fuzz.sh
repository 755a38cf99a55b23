#!/usr/bin/env bash
# Fuzzes the readers of untrusted bytes: the .sgsc model-file reader (target `decode`) and the
# data parsers, IDX files and CIFAR batches (target `data`). Builds the libFuzzer targets in fuzz/
# with the coverage flags that `cargo fuzz build -s none` uses (so neither cargo-fuzz nor a
# nightly toolchain is needed), plus debug assertions and overflow checks, and runs each from seed
# files (written by the examples fuzz_seeds of sgsc-runtime and data_fuzz_seeds of sgsc-data, so
# that no model or data file is kept in git) and the inputs of earlier failures, fuzz/regressions.
#   bash scripts/fuzz.sh [RUNS]     (default 100000 per target; the tests run it briefly)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-100000}"
host="$(rustc -vV | sed -n 's/^host: //p')"
seeds="$(mktemp -d)"
cargo run --quiet --release --manifest-path "$root/Cargo.toml" -p sgsc-runtime --example fuzz_seeds -- "$seeds/decode"
cargo run --quiet --release --manifest-path "$root/Cargo.toml" -p sgsc-data --example data_fuzz_seeds -- "$seeds/data"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --quiet --release --manifest-path "$root/fuzz/Cargo.toml" --target "$host" --bins
status=0
for target in decode data; do
  corpus="$(mktemp -d)"
  log="$(mktemp)"
  target_status=0
  "$root/fuzz/target/$host/release/$target" -runs="$runs" -max_len=16384 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$root/fuzz/$target-" "$corpus" "$seeds/$target" "$root/fuzz/regressions" >"$log" 2>&1 || target_status=$?
  echo "fuzz $target: $(grep -E "DONE|^Done" "$log" | tail -n 1)"
  if [[ $target_status -ne 0 ]]; then
    tail -n 40 "$log"
    echo "fuzz: the $target target failed on an input; it is saved under fuzz/ ($target-crash-*)" >&2
    status=$target_status
  fi
  rm -rf "$corpus" "$log"
done
rm -rf "$seeds"
exit "$status"
