#!/usr/bin/env bash
# Installs libtorch (from the PyPI wheel torch==2.11.0, the version tch 0.24 binds) into
# .libtorch/ of this checkout, unless it is already there. Idempotent; about 1.2 GB, ~20 s.
# Only the wheels the link needs are installed (--no-deps): torch itself plus the CUDA runtime
# and CUPTI libraries that libtorch_cuda.so is linked against. .cargo/config.toml points
# LIBTORCH here, and crates/sgsc/build.rs bakes the library folders into the binaries' rpath.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
site="$root/.libtorch/site"
marker="$root/.libtorch/installed-torch-2.11.0"

if [[ -f "$marker" && -f "$site/torch/lib/libtorch_cpu.so" ]]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "setup-libtorch: python3 (with pip) is needed to fetch libtorch" >&2; exit 1; }
echo "setup-libtorch: installing torch==2.11.0 into $site (one time, ~1.2 GB)" >&2
rm -rf "$site" "$marker"
mkdir -p "$site"
python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$site" \
  torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
touch "$marker"
