#!/usr/bin/env bash
# Installs onnxruntime (and numpy) from PyPI into .onnxruntime/ of this checkout, unless it is
# already there: the tests run sgsc's ONNX exports with it. Idempotent; about 60 MB.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
site="$root/.onnxruntime"
marker="$site/installed-onnxruntime-1.23.2"
if [[ -f "$marker" ]]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "setup-onnxruntime: python3 (with pip) is needed" >&2; exit 1; }
echo "setup-onnxruntime: installing onnxruntime into $site (one time)" >&2
rm -rf "$site"
mkdir -p "$site"
python3 -m pip install --quiet --disable-pip-version-check --target "$site" onnxruntime==1.23.2 numpy
touch "$marker"
