#!/usr/bin/env bash
# Project-local Python environment for the scripts that make ONNX files (demo model, test
# fixtures). Only needed to regenerate those files: the results are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -c "import onnx, numpy" 2>/dev/null ||
  .venv/bin/pip install --quiet "onnx==1.19.1" "numpy>=1.26,<3" "pillow>=10"
