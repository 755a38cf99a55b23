#!/usr/bin/env bash
# Fuzzes the .sgsc reader: builds the libFuzzer target in fuzz/ with the coverage flags that
# `cargo fuzz build -s none` uses (so neither cargo-fuzz nor a nightly toolchain is needed), plus
# debug assertions and overflow checks, and runs it from seed files (the format tests' synthetic
# CNN and transformer, written by the runtime's fuzz_seeds example, so that no model file is kept
# in git) and the inputs of earlier failures, fuzz/regressions.
#   bash scripts/fuzz.sh [RUNS]     (default 100000; the tests run it briefly)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-100000}"
host="$(rustc -vV | sed -n 's/^host: //p')"
seeds="$(mktemp -d)"
cargo run --quiet --release --manifest-path "$root/Cargo.toml" -p sgsc-runtime --example fuzz_seeds -- "$seeds"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --quiet --release --manifest-path "$root/fuzz/Cargo.toml" --target "$host" --bin decode
corpus="$(mktemp -d)"
log="$(mktemp)"
status=0
"$root/fuzz/target/$host/release/decode" -runs="$runs" -max_len=16384 -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix="$root/fuzz/" "$corpus" "$seeds" "$root/fuzz/regressions" >"$log" 2>&1 || status=$?
grep -E "DONE|^Done" "$log" || true
if [[ $status -ne 0 ]]; then
  tail -n 40 "$log"
  echo "fuzz: the reader failed on an input; it is saved under fuzz/ (crash-*)" >&2
fi
rm -rf "$corpus" "$log" "$seeds"
exit "$status"
