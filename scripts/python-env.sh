#!/usr/bin/env bash
# Project-local Python environment for the scripts that make ONNX files (demo model, test
# fixtures; only needed to regenerate them: the results are committed), and for the line
# output's test peers (a pymodbus server acting as the PLC, an HTTP receiver), and for the web
# UI's browser tests (selenium, driving Debian's chromium through its chromedriver).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -c "import onnx, numpy" 2>/dev/null ||
  .venv/bin/pip install --quiet "onnx==1.19.1" "numpy>=1.26,<3" "pillow>=10"
.venv/bin/python -c "import pymodbus" 2>/dev/null ||
  .venv/bin/pip install --quiet "pymodbus==3.16.1"
.venv/bin/python -c "import selenium" 2>/dev/null ||
  .venv/bin/pip install --quiet "selenium==4.38.0"
