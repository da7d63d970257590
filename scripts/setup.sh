#!/usr/bin/env bash
# One-time set-up for building and running linesight on Debian/Ubuntu. Idempotent: every step
# checks first and only installs what is missing. Nothing is fetched from outside the package
# registries: Debian packages through apt-get, the ONNX Runtime shared library from its official
# wheel through pip (version and sha256 pinned below).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
# sha256 of onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_DIR=.ort/lib

# Debian packages: OpenCV (capture) + clang (the opencv crate's binding generator), GStreamer
# plugins for pipeline-string cameras and their tests, Python for the model-making scripts,
# Prometheus (`prometheus` and `promtool`) for the metrics tests, Mosquitto (broker and clients)
# for the line output's MQTT tests, Chromium and its WebDriver for the web UI's browser tests,
# NATS (JetStream) and PostgreSQL for the plant-scale tests (tests/fleet.rs starts its own).
DEB_PACKAGES=(libopencv-dev clang libclang-dev pkg-config
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-tools python3-venv unzip
  prometheus mosquitto mosquitto-clients chromium chromium-driver nats-server postgresql)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ]; then
  echo "setup: extracting ONNX Runtime $ORT_VERSION from its PyPI wheel"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 \
    "onnxruntime==$ORT_VERSION" -d "$tmp"
  wheel=$(ls "$tmp"/onnxruntime-"$ORT_VERSION"-*.whl)
  echo "$ORT_WHEEL_SHA256  $wheel" | sha256sum --check --quiet || {
    echo "setup: sha256 of $wheel does not match the pinned value; refusing to use it" >&2
    exit 1
  }
  mkdir -p "$ORT_DIR"
  unzip -q -j -o "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$ORT_DIR"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
fi
